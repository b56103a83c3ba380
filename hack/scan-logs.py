#!/usr/bin/env python3
"""Fails if any secret value a test used or Slack issued appears in any log of the test run.

Tests record every client secret they configure and every code, access token and refresh token
the Slack emulator issued, one per line, in <target>/tmp/secrets/*.txt. This scans the operators'
logs (<target>/tmp/operator-logs), the captured test output (<target>/test-output.log) and the
control plane's logs and audit log (CLUSTER_DIR) for each of them.
"""
import os
import pathlib
import sys

target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", "target"))
cluster = pathlib.Path(os.environ.get("CLUSTER_DIR", ".cluster/test"))

secrets = set()
for path in (target / "tmp" / "secrets").glob("*.txt"):
    secrets.update(line.strip() for line in path.read_text().splitlines() if len(line.strip()) >= 8)

logs = list((target / "tmp" / "operator-logs").glob("*.log"))
logs += [target / "test-output.log", cluster / "audit.log"]
logs += list((cluster / "logs").glob("*.log"))
logs = [p for p in logs if p.is_file()]

if not secrets:
    sys.exit("scan-logs: no secret values were recorded: the flow tests did not run, so there is nothing to check")
if not any(p.name != "test-output.log" for p in logs):
    sys.exit("scan-logs: no operator logs found")

leaks = []
for log in logs:
    text = log.read_text(errors="replace")
    leaks += [(log, secret) for secret in secrets if secret in text]

if leaks:
    for log, secret in leaks:
        # Name the kind of value, never the value itself.
        print(f"scan-logs: a secret value ({secret[:5]}...) appears in {log}", file=sys.stderr)
    sys.exit(1)
print(f"scan-logs: {len(secrets)} secret values, {len(logs)} logs: no secret value found")

#!/usr/bin/env bash
# Installs headless Chromium and ChromeDriver from Debian's packages if they are missing, and
# prints ChromeDriver's path. Browser tests drive them through WebDriver.
set -euo pipefail

if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
  echo /usr/bin/chromedriver
  exit 0
fi
command -v apt-get >/dev/null || { echo "browser: apt-get not found; install chromium and chromedriver by hand" >&2; exit 1; }
sudo=""
[[ "$(id -u)" == 0 ]] || sudo="sudo"
echo "browser: installing chromium and chromium-driver (Debian packages)" >&2
$sudo apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver >&2
echo /usr/bin/chromedriver

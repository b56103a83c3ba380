# The one task runner. The README names these targets; `make help` lists them.
SHELL := bash
.DEFAULT_GOAL := help

CRD_FILE := crds/slackoauthgrants.slack-oauth-operator.io.yaml
CHART_CRD_FILE := charts/slack-oauth-operator/templates/crd.yaml

include hack/Makefile.cluster.mk

.PHONY: help run test test-unit bench lint fmt generate build image plugin-archive

help: ## List the targets.
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

run: ## Run the operator against the current kube context, or a local control plane if none answers.
	@hack/run.sh

test: ## Build what is missing, start a throwaway control plane, run every test, stop it.
	@hack/test.sh

test-unit: ## Only the tests that need no control plane (helm renders the chart).
	HELM="$$(hack/tools.sh)/helm" cargo test --locked --workspace

# SCALE_GRANTS, SCALE_BURST, SCALE_CALLBACKS, SCALE_UNRELATED, SCALE_IDLE_SECONDS and
# SCALE_DEADLINE_MINUTES size the run (docs/benchmarks.md). Not part of `make test`.
bench: ## The scale benchmark against the control plane in KUBECONFIG; results under target/bench/. (Check load: `cargo bench --bench check_load`.)
	@hack/bench.sh

lint: ## rustfmt and clippy, warnings are errors.
	cargo fmt --all --check
	cargo clippy --locked --workspace --all-targets -- -D warnings

fmt: ## Format the code.
	cargo fmt --all

generate: ## Regenerate the CRD under crds/ and in the Helm chart from src/api.rs.
	cargo run --locked --quiet --bin crdgen > $(CRD_FILE).tmp
	mv $(CRD_FILE).tmp $(CRD_FILE)
	cargo run --locked --quiet --bin crdgen -- --helm > $(CHART_CRD_FILE).tmp
	mv $(CHART_CRD_FILE).tmp $(CHART_CRD_FILE)

build: ## The release binary, built as the Dockerfile builds it.
	cargo build --locked --release --bin slack-oauth-operator

# IMAGE_BASES=stand-in where no image registry is reachable; IMAGE, IMAGE_TAG, IMAGE_ARCHIVE
# name the result (hack/image.sh).
image: ## The operator image (podman), written as an OCI archive under target/image/.
	@hack/image.sh

# PLUGIN_BASE_URL is the download URL the manifest names; PLUGIN_BINARY packs a binary already
# built; PLUGIN_OUT_DIR moves the result (hack/plugin-archive.sh).
plugin-archive: ## The kubectl plugin as a krew archive, with its krew manifest, under target/plugin/.
	@hack/plugin-archive.sh

cluster-up: ## Start the local control plane (idempotent); CLUSTER_NODE=1 adds a real node.
cluster-down: ## Stop the local control plane; no process is left behind.
cluster-env: ## Print `export KUBECONFIG=...` for the local control plane.

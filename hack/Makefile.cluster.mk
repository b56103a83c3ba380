# Local control plane and client tools; included from the top-level Makefile.
# CLUSTER_DIR (state directory, default .cluster/local) passes through from the environment or
# the make command line (`make cluster-up CLUSTER_DIR=/tmp/c1`), and so does CLUSTER_NODE
# (`make cluster-up CLUSTER_NODE=1` starts a real node with the control plane, hack/node.sh).

# The directory of this fragment, so the targets work whatever the including Makefile's cwd is.
CLUSTER_MK_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))

# Exported only when set, so cluster.sh's own default applies otherwise.
ifdef CLUSTER_DIR
export CLUSTER_DIR
endif
ifdef CLUSTER_NODE
export CLUSTER_NODE
endif

.PHONY: cluster-up cluster-down cluster-env cluster-status tools

cluster-up:
	@$(CLUSTER_MK_DIR)/cluster.sh up

cluster-down:
	@$(CLUSTER_MK_DIR)/cluster.sh down

# Prints only `export KUBECONFIG=...`, for `eval "$(make -s cluster-env)"`.
cluster-env:
	@$(CLUSTER_MK_DIR)/cluster.sh env

cluster-status:
	@$(CLUSTER_MK_DIR)/cluster.sh status

# Installs kubectl and helm into the cache and prints their bin directory.
tools:
	@$(CLUSTER_MK_DIR)/tools.sh

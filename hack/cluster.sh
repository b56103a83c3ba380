#!/usr/bin/env bash
# A local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager) for the
# operator's integration tests, run as plain background processes: our machines have no container
# engine, so kind/k3d are out. By default there are no nodes and no kubelet, so pods never run;
# what most tests need is a real API server (RBAC, TokenRequest, audit log) and the controllers
# that make garbage collection and namespace deletion work.
#
# With CLUSTER_NODE=1, `up` also starts a real node (hack/node.sh: containerd, kubelet, kube-proxy,
# kube-scheduler in a network namespace of their own), and the API server then listens on the host
# end of the node's veth instead of 127.0.0.1, so that the kubelet and pods (through the
# `kubernetes` Service) reach it. `down` stops the node too, whatever CLUSTER_NODE says.
#
# Usage: hack/cluster.sh up|down|env|status|stop-apiserver|start-apiserver
# State lives in CLUSTER_DIR (default <repo>/.cluster/local):
#   kubeconfig, env           admin kubeconfig and `export KUBECONFIG=...` to source
#   pki/                      CA, apiserver serving cert, service-account key pair
#   ports.env                 the ports chosen at `up`, the API server's address, and whether
#                             there is a node (start-apiserver reuses them)
#   node/                     the node's state, with CLUSTER_NODE=1 (see hack/node.sh)
#   audit.log                 JSON audit log, Metadata level: every write, and the reads of
#                             secrets and slackoauthgrants
#   logs/                     one log per component; *.pid: their process ids
#   etcd-data/                wiped by `down` and by a fresh `up`
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

cluster_dir="${CLUSTER_DIR:-$repo/.cluster/local}"
# Absolute, because the path is written into kubeconfigs and flags that outlive this shell's cwd.
[[ "$cluster_dir" == /* ]] || cluster_dir="$PWD/$cluster_dir"
cluster_dir="${cluster_dir%/}"

pki="$cluster_dir/pki"
logs="$cluster_dir/logs"
kubeconfig="$cluster_dir/kubeconfig"
ports_file="$cluster_dir/ports.env"
etcd_data="$cluster_dir/etcd-data"

ready_timeout="${CLUSTER_READY_TIMEOUT:-120}"
context_name="slack-oauth-operator-local"
service_cidr="10.0.0.0/24"
first_service_ip="10.0.0.1"
sa_issuer="https://kubernetes.default.svc.cluster.local"

# 1: start a node with the control plane (hack/node.sh).
with_node="${CLUSTER_NODE:-}"
[[ "$with_node" == "" || "$with_node" == 0 || "$with_node" == 1 ]] || { echo "cluster: error: CLUSTER_NODE must be 1 or 0, not '$with_node'" >&2; exit 2; }
[[ "$with_node" == 1 ]] || with_node=""
# Where the API server listens: loopback, or with a node the host end of the node's veth.
APISERVER_ADDRESS=127.0.0.1

# Order matters: started in this order, stopped in the reverse.
components=(etcd kube-apiserver kube-controller-manager)

log() { echo "cluster: $*" >&2; }
die() { echo "cluster: error: $*" >&2; exit 1; }

now_ms() { date +%s%3N; }

pid_file() { echo "$cluster_dir/$1.pid"; }

# Prints the pid of component $1 if its pid file names a live (non-zombie) process running that
# binary; the binary check guards against a recycled pid after a reboot or a long-dead cluster.
live_pid() {
  local name="$1" file pid stat state exe
  file="$(pid_file "$name")"
  [[ -f "$file" ]] || return 1
  pid="$(<"$file")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
  # The state follows the parenthesised command name, which may itself contain spaces.
  state="${stat##*) }"
  state="${state%% *}"
  [[ "$state" != Z && "$state" != X ]] || return 1
  exe="$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | head -n1)" || return 1
  [[ "$(basename -- "$exe")" == "$name" ]] || return 1
  echo "$pid"
}

# Processes of this cluster whose pid files are gone (e.g. deleted by hand): any process of
# binary $1 whose command line mentions this CLUSTER_DIR. Matching on the directory keeps other
# clusters (another CLUSTER_DIR, another checkout) untouched.
stray_pids() {
  local name="$1" dir args=()
  for dir in /proc/[0-9]*; do
    # mapfile reads the NUL-separated argv without forking, which matters when scanning /proc.
    mapfile -d '' -t args <"$dir/cmdline" 2>/dev/null || continue
    ((${#args[@]} > 0)) || continue
    [[ "${args[0]##*/}" == "$name" ]] || continue
    if [[ "${args[*]}" == *"$cluster_dir/"* ]]; then echo "${dir#/proc/}"; fi
  done
}

pid_gone() {
  local pid="$1" stat state
  stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 0
  state="${stat##*) }"
  state="${state%% *}"
  [[ "$state" == Z || "$state" == X ]]
}

# TERM, then up to ~10 s for a clean exit (etcd and the apiserver flush on TERM), then KILL.
terminate_pid() {
  local pid="$1" label="$2" i
  if ! pid_gone "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      pid_gone "$pid" && break
      sleep 0.1
    done
  fi
  if ! pid_gone "$pid"; then
    log "$label (pid $pid) ignored TERM for 10 s, sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      pid_gone "$pid" && break
      sleep 0.1
    done
    pid_gone "$pid" || die "$label (pid $pid) survived KILL"
  fi
  # A dead component is a zombie until its parent (init, as it was detached) reaps it, and
  # pgrep still lists zombies; some inits reap lazily, so give it a moment so that "down" really
  # leaves nothing behind for a test that checks with pgrep.
  for ((i = 0; i < 50; i++)); do
    [[ -e "/proc/$pid" ]] || break
    sleep 0.1
  done
}

stop_component() {
  local name="$1" pid
  if pid="$(live_pid "$name")"; then
    log "stopping $name (pid $pid)"
    terminate_pid "$pid" "$name"
  fi
  rm -f "$(pid_file "$name")"
}

# Starts "$@" detached from the calling shell: its own session (setsid) so a terminal hang-up or
# a Ctrl-C in the caller's process group does not reach it, stdin from /dev/null and output to a
# log so no pipe of the caller is held open. In a non-interactive shell the background child is
# not a process group leader, so setsid calls setsid(2) in place and $! is the component's pid.
spawn() {
  local name="$1" logfile="$2"
  shift 2
  mkdir -p "$logs"
  echo "==== $(date -u +%Y-%m-%dT%H:%M:%SZ) starting $name" >>"$logfile"
  # 9>&-: the component must not inherit the lock (see take_lock), or the lock would be held
  # for as long as the cluster runs.
  setsid "$@" </dev/null >>"$logfile" 2>&1 9>&- &
  echo "$!" >"$(pid_file "$name")"
}

# Loopback ports for etcd client/peer, apiserver and controller-manager. Chosen below the kernel's
# ephemeral range so that outgoing connections (which take ephemeral ports) cannot grab one between
# now and the bind, nor while the apiserver is down during an outage test. Each candidate is
# proven free by binding it; all four are held until the end so they differ.
pick_ports() {
  python3 - <<'PY'
import random, socket
lo, _hi = map(int, open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
floor = 10000
held = []
def try_bind(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        s.close()
        return None
    return s
while len(held) < 4:
    s = None
    if lo - floor > 1000:
        for _ in range(100):
            s = try_bind(random.randrange(floor, lo))
            if s:
                break
    if s is None:
        s = try_bind(0)  # fallback: let the kernel choose
    held.append(s)
print(" ".join(str(s.getsockname()[1]) for s in held))
PY
}

gen_pki() {
  rm -rf "$pki"
  mkdir -p "$pki"
  (
    umask 077
    cd "$pki"
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
      -keyout ca.key -out ca.crt -subj "/CN=slack-oauth-operator-local-ca" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null

    # The in-cluster names and the first service IP are there so a client that talks to the
    # apiserver through "kubernetes.default.svc" (as in-cluster configs do) verifies it too.
    local extra_san=""
    [[ "$APISERVER_ADDRESS" == 127.0.0.1 ]] || extra_san=",IP:$APISERVER_ADDRESS"
    cat >apiserver.ext <<EOF
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost,IP:$first_service_ip,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local$extra_san
EOF
    openssl req -new -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr \
      -subj "/CN=kube-apiserver" 2>/dev/null
    openssl x509 -req -sha256 -days 365 -in apiserver.csr -CA ca.crt -CAkey ca.key \
      -set_serial "0x$(openssl rand -hex 16)" -extfile apiserver.ext -out apiserver.crt 2>/dev/null
    rm -f apiserver.csr apiserver.ext

    # Service-account tokens: the apiserver signs with the private key and verifies with the
    # public one; the controller-manager signs legacy token secrets with the private key.
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    chmod 644 ca.crt apiserver.crt sa.pub
  )
}

write_kubeconfig() {
  local path="$1" user="$2" token="$3" ca_data
  ca_data="$(base64 -w0 <"$pki/ca.crt")"
  (
    umask 077
    cat >"$path" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: $context_name
  cluster:
    server: https://$APISERVER_ADDRESS:$APISERVER_PORT
    certificate-authority-data: $ca_data
users:
- name: $user
  user:
    token: $token
contexts:
- name: $context_name
  context:
    cluster: $context_name
    user: $user
    namespace: default
current-context: $context_name
EOF
  )
}

write_audit_policy() {
  # Metadata for every request that changes state, and for reads (get, list, watch) of Secrets and
  # grants and their subresources only: tests check what the operator reads and how many watches
  # it holds, and logging the reads of every resource would make the log large. Nothing else is
  # logged. RequestReceived is omitted, so a request is logged at ResponseComplete (or Panic); a
  # watch, being long-running, also at ResponseStarted. Tests that count requests count auditIDs.
  cat >"$cluster_dir/audit-policy.yaml" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages:
- RequestReceived
rules:
- level: Metadata
  verbs: ["create", "update", "patch", "delete", "deletecollection"]
- level: Metadata
  verbs: ["get", "list", "watch"]
  resources:
  - group: ""
    resources: ["secrets", "secrets/*"]
  - group: "slack-oauth-operator.io"
    resources: ["slackoauthgrants", "slackoauthgrants/*"]
- level: None
EOF
}

load_ports() {
  [[ -f "$ports_file" ]] || die "$ports_file missing: run 'hack/cluster.sh up' first"
  APISERVER_ADDRESS=127.0.0.1
  NODE=""
  # shellcheck source=/dev/null
  source "$ports_file"
}

bin_dir() {
  [[ -n "${BIN:-}" ]] && return 0
  BIN="$("$here/build-control-plane.sh" | tail -n1)"
  [[ -x "$BIN/kube-apiserver" ]] || die "build-control-plane.sh did not produce binaries (got '$BIN')"
}

start_etcd() {
  spawn etcd "$logs/etcd.log" "$BIN/etcd" \
    --name=local \
    --data-dir="$etcd_data" \
    --listen-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --advertise-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="local=http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster-state=new \
    --unsafe-no-fsync \
    --quota-backend-bytes=$((1024 * 1024 * 1024))
}

# The only place the apiserver's command line is built: used by `up` and by `start-apiserver`, so
# a restarted apiserver is the same server (port, certs, keys, token file, audit log).
# Two flags differ from the defaults, both because of running on loopback without nodes:
#   --endpoint-reconciler-type=none: the reconciler would publish the advertise address as the
#     endpoint of the "kubernetes" service, and Endpoints validation rejects 127.0.0.1, so it
#     retried (and failed, and was audited as a create) every 10 s. Nothing in-cluster needs it.
#   --shutdown-send-retry-after=true: on TERM the apiserver otherwise waits up to its 60 s
#     request timeout for open watches (the controller-manager's, the operator's) before it
#     exits; with this it answers 429 until the short requests drain, then exits after ~2 s.
# With a node, the API server binds the host end of the node's veth instead, and keeps the default
# endpoint reconciler: pods reach it through the "kubernetes" Service, whose endpoint is then that
# address. It reaches the kubelet (logs, exec) by the node's InternalIP, as no DNS knows the node.
start_apiserver() {
  local node_flags=(--endpoint-reconciler-type=none)
  [[ -z "${NODE:-}" ]] || node_flags=(--kubelet-preferred-address-types=InternalIP)
  spawn kube-apiserver "$logs/kube-apiserver.log" "$BIN/kube-apiserver" \
    --bind-address="$APISERVER_ADDRESS" \
    --advertise-address="$APISERVER_ADDRESS" \
    --secure-port="$APISERVER_PORT" \
    --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --tls-cert-file="$pki/apiserver.crt" \
    --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --token-auth-file="$cluster_dir/tokens.csv" \
    --authorization-mode=RBAC \
    --service-account-issuer="$sa_issuer" \
    --service-account-key-file="$pki/sa.pub" \
    --service-account-signing-key-file="$pki/sa.key" \
    --api-audiences="$sa_issuer" \
    --service-cluster-ip-range="$service_cidr" \
    --allow-privileged=true \
    --audit-policy-file="$cluster_dir/audit-policy.yaml" \
    --audit-log-path="$cluster_dir/audit.log" \
    --audit-log-format=json \
    "${node_flags[@]}" \
    --shutdown-send-retry-after=true \
    --cert-dir="$cluster_dir/apiserver-certs"
}

start_controller_manager() {
  local kcm_kubeconfig="$cluster_dir/kube-controller-manager.kubeconfig"
  spawn kube-controller-manager "$logs/kube-controller-manager.log" "$BIN/kube-controller-manager" \
    --kubeconfig="$kcm_kubeconfig" \
    --authentication-kubeconfig="$kcm_kubeconfig" \
    --authorization-kubeconfig="$kcm_kubeconfig" \
    --bind-address=127.0.0.1 \
    --secure-port="$KCM_PORT" \
    --cert-dir="$cluster_dir/kcm-certs" \
    --leader-elect=false \
    --use-service-account-credentials=false \
    --service-account-private-key-file="$pki/sa.key" \
    --root-ca-file="$pki/ca.crt" \
    --cluster-signing-cert-file="$pki/ca.crt" \
    --cluster-signing-key-file="$pki/ca.key" \
    --controllers='*'
}

admin_token() { cat "$cluster_dir/admin.token"; }

# GET an apiserver path as admin; succeeds on 2xx.
api_get() {
  curl -fsS --max-time 3 --cacert "$pki/ca.crt" \
    -H "Authorization: Bearer $(admin_token)" \
    "https://$APISERVER_ADDRESS:$APISERVER_PORT$1" -o /dev/null 2>/dev/null
}

apiserver_ready() { api_get /readyz; }

fail_with_logs() {
  local msg="$1" name
  shift
  echo "cluster: error: $msg" >&2
  for name in "$@"; do
    echo "---- last 40 lines of $logs/$name.log ----" >&2
    tail -n 40 "$logs/$name.log" >&2 2>/dev/null || true
  done
  return 1
}

# Waits until "$2..." (a command) succeeds, failing early if component $1 has died.
wait_for() {
  local what="$1" component="$2" deadline
  shift 2
  deadline=$((SECONDS + ready_timeout))
  until "$@"; do
    if ! live_pid "$component" >/dev/null; then
      fail_with_logs "$component exited while waiting for $what" "$component"
      return 1
    fi
    if ((SECONDS >= deadline)); then
      fail_with_logs "timed out after ${ready_timeout}s waiting for $what" "$component"
      return 1
    fi
    sleep 0.2
  done
}

etcd_healthy() { curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_CLIENT_PORT/health" 2>/dev/null | grep -q '"health":"true"'; }
default_sa_exists() { api_get /api/v1/namespaces/default/serviceaccounts/default; }

all_running() {
  local name
  for name in "${components[@]}"; do live_pid "$name" >/dev/null || return 1; done
}

# A node of this cluster, whether or not CLUSTER_NODE is set now.
has_node() { [[ -f "$cluster_dir/node/network.env" || -n "$(ls "$cluster_dir"/node/*.pid 2>/dev/null)" ]]; }

do_down() {
  local i name pid
  # The node first, while the API server still answers its drain.
  if has_node; then "$here/node.sh" stop; fi
  # Reverse start order: clients before the apiserver before etcd, so nothing hangs on a peer
  # that is already gone.
  for ((i = ${#components[@]} - 1; i >= 0; i--)); do
    name="${components[i]}"
    stop_component "$name"
    for pid in $(stray_pids "$name"); do
      log "stopping $name (pid $pid) of this cluster that had no pid file"
      terminate_pid "$pid" "$name"
    done
  done
  rm -rf "$etcd_data"
  if has_node; then "$here/node.sh" network-down; fi
}

cmd_up() {
  local start ports
  start="$(now_ms)"
  if [[ -f "$ports_file" ]] && all_running; then
    load_ports
    if apiserver_ready && [[ "${NODE:-}" == "$with_node" ]] && { [[ -z "$with_node" ]] || "$here/node.sh" status >/dev/null 2>&1; }; then
      log "already running at https://$APISERVER_ADDRESS:$APISERVER_PORT ($cluster_dir)"
      return 0
    fi
  fi

  bin_dir
  mkdir -p "$cluster_dir" "$logs"
  # Whatever is left from an earlier cluster (dead, half-started or without a ready apiserver) is
  # torn down: a fresh up always means a fresh etcd.
  do_down
  # The previous cluster's logs are kept one generation back; the audit log starts empty so that
  # counts taken from it belong to this cluster only.
  rm -rf "$cluster_dir/logs.prev"
  mv "$logs" "$cluster_dir/logs.prev"
  mkdir -p "$logs"
  [[ ! -f "$cluster_dir/audit.log" ]] || mv "$cluster_dir/audit.log" "$cluster_dir/audit.log.prev"

  ports="$(pick_ports)"
  read -r ETCD_CLIENT_PORT ETCD_PEER_PORT APISERVER_PORT KCM_PORT <<<"$ports"
  [[ -n "${KCM_PORT:-}" ]] || die "could not pick free loopback ports (got '$ports')"
  NODE="$with_node"
  if [[ -n "$NODE" ]]; then
    "$here/node.sh" network-up
    APISERVER_ADDRESS="$(awk -F= '$1=="NODE_HOST_IP"{print $2}' "$cluster_dir/node/network.env")"
    [[ -n "$APISERVER_ADDRESS" ]] || die "node.sh network-up wrote no NODE_HOST_IP"
  fi
  ports="ETCD_CLIENT_PORT=$ETCD_CLIENT_PORT ETCD_PEER_PORT=$ETCD_PEER_PORT APISERVER_PORT=$APISERVER_PORT KCM_PORT=$KCM_PORT APISERVER_ADDRESS=$APISERVER_ADDRESS NODE=$NODE"
  tr ' ' '\n' <<<"$ports" >"$ports_file"

  gen_pki
  write_audit_policy
  # Static tokens: "admin" for people and tests, a separate user for the controller-manager so its
  # writes are told apart from the tests' in the audit log. Both are in system:masters: with
  # --use-service-account-credentials=false every controller acts as this one identity.
  local admin kcm
  admin="$(openssl rand -hex 32)"
  kcm="$(openssl rand -hex 32)"
  (
    umask 077
    echo "$admin" >"$cluster_dir/admin.token"
    printf '%s,admin,admin,"system:masters"\n' "$admin" >"$cluster_dir/tokens.csv"
    printf '%s,system:kube-controller-manager,system:kube-controller-manager,"system:masters"\n' "$kcm" >>"$cluster_dir/tokens.csv"
  )
  write_kubeconfig "$kubeconfig" admin "$admin"
  write_kubeconfig "$cluster_dir/kube-controller-manager.kubeconfig" system:kube-controller-manager "$kcm"

  # From here on a failure (or Ctrl-C) tears the half-started cluster down again, so no process
  # is left behind; the logs stay for diagnosis. EXIT rather than ERR: set -e exits from inside
  # functions, where an ERR trap would not fire.
  trap 'if [[ "${up_done:-}" != 1 ]]; then log "up failed; stopping what was started (logs in $logs)"; do_down; fi' EXIT

  log "starting etcd on 127.0.0.1:$ETCD_CLIENT_PORT"
  start_etcd
  wait_for "etcd /health" etcd etcd_healthy

  log "starting kube-apiserver on https://$APISERVER_ADDRESS:$APISERVER_PORT"
  start_apiserver
  wait_for "kube-apiserver /readyz" kube-apiserver apiserver_ready

  log "starting kube-controller-manager on 127.0.0.1:$KCM_PORT"
  start_controller_manager
  # The "default" namespace comes from the apiserver, its "default" service account from the
  # controller-manager: seeing the latter proves the controllers are running.
  wait_for "service account default/default (kube-controller-manager)" kube-controller-manager default_sa_exists

  if [[ -n "$NODE" ]]; then "$here/node.sh" start; fi

  up_done=1
  echo "export KUBECONFIG=$kubeconfig" >"$cluster_dir/env"
  log "up in $(awk -v ms="$(($(now_ms) - start))" 'BEGIN { printf "%.1f", ms / 1000 }')s: https://$APISERVER_ADDRESS:$APISERVER_PORT${NODE:+, with node $(awk -F= '$1=="NODE_NAME"{print $2}' "$cluster_dir/node/network.env")}"
  log "use: export KUBECONFIG=$kubeconfig"
}

cmd_down() {
  do_down
  log "down ($cluster_dir; logs kept in $logs)"
}

cmd_env() {
  echo "export KUBECONFIG=$kubeconfig"
}

cmd_status() {
  local name pid rc=0
  for name in "${components[@]}"; do
    if pid="$(live_pid "$name")"; then
      printf '%-24s running (pid %s)\n' "$name" "$pid"
    else
      printf '%-24s stopped\n' "$name"
      rc=1
    fi
  done
  if [[ -f "$ports_file" ]]; then
    load_ports
    if apiserver_ready; then
      printf '%-24s ok (https://%s:%s)\n' "readyz" "$APISERVER_ADDRESS" "$APISERVER_PORT"
    else
      printf '%-24s not ready (https://%s:%s)\n' "readyz" "$APISERVER_ADDRESS" "$APISERVER_PORT"
      rc=1
    fi
    if [[ -n "${NODE:-}" ]]; then "$here/node.sh" status || rc=1; fi
  fi
  printf '%-24s %s\n' "kubeconfig" "$kubeconfig"
  return "$rc"
}

cmd_stop_apiserver() {
  stop_component kube-apiserver
  log "kube-apiserver stopped"
}

cmd_start_apiserver() {
  local start pid
  start="$(now_ms)"
  load_ports
  live_pid etcd >/dev/null || die "etcd is not running: use 'hack/cluster.sh up'"
  if pid="$(live_pid kube-apiserver)"; then
    log "kube-apiserver already running (pid $pid)"
  else
    bin_dir
    log "starting kube-apiserver on https://$APISERVER_ADDRESS:$APISERVER_PORT"
    start_apiserver
  fi
  wait_for "kube-apiserver /readyz" kube-apiserver apiserver_ready
  log "kube-apiserver ready in $(awk -v ms="$(($(now_ms) - start))" 'BEGIN { printf "%.1f", ms / 1000 }')s"
}

# Serialises the commands that change the cluster, so that parallel callers (several test
# binaries each running `up`, say) do not race: the second waits, then finds the cluster running.
take_lock() {
  mkdir -p "$cluster_dir"
  exec 9>"$cluster_dir/.lock"
  if ! flock -n 9; then
    log "waiting for another cluster.sh in $cluster_dir"
    flock -w 300 9 || die "timed out waiting for the lock on $cluster_dir/.lock"
  fi
}

usage() {
  echo "usage: $0 up|down|env|status|stop-apiserver|start-apiserver" >&2
  exit 2
}

[[ $# -eq 1 ]] || usage
case "$1" in
  up) take_lock; cmd_up ;;
  down) take_lock; cmd_down ;;
  env) cmd_env ;;
  status) cmd_status ;;
  stop-apiserver) take_lock; cmd_stop_apiserver ;;
  start-apiserver) take_lock; cmd_start_apiserver ;;
  *) usage ;;
esac

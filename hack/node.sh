#!/usr/bin/env bash
# A real node for the local control plane (hack/cluster.sh): containerd v2 with runc, CNI bridge
# networking, the kubelet, kube-proxy and kube-scheduler, so that pods run, from images built here
# (no registry is reachable). `CLUSTER_NODE=1 hack/cluster.sh up` calls this; run by hand it takes
# the same CLUSTER_DIR.
#
# Usage: hack/node.sh network-up|network-down|start|stop|status|env|leftovers
#        hack/node.sh load-image <oci-archive> [<extra name>...]
#
#   network-up    a network namespace for the node, joined to the host by a veth pair: the host
#                 end gets <subnet>.1 (the API server binds it), the node end <subnet>.2. Every
#                 iptables rule (kube-proxy's, the CNI plugins') and every pod network lives in
#                 that namespace and dies with it; nothing leaves the machine.
#   start         containerd, the kubelet, kube-proxy and kube-scheduler, in the node's network
#                 namespace but the host's mount namespace (volume mounts need it); waits until
#                 the node is Ready
#   stop          drains the node (pods get their grace period), stops every process, then
#                 removes what is left: containers, mounts, cgroups, host paths, sysctls
#   network-down  removes the namespace and the veth pair
#   leftovers     lists anything of this node left on the host, and fails if there is any
#   load-image    imports an OCI archive (hack/image.sh writes one) into the node's containerd,
#                 under its own name and any extra names (pods then use imagePullPolicy: Never)
#
# State lives in CLUSTER_DIR/node (CLUSTER_DIR as for hack/cluster.sh); containerd's runtime state
# (shim sockets, pod network namespaces, runc's state) in /run/soo-node-<id>, because a unix
# socket path must stay under 108 bytes. <id> is derived from CLUSTER_DIR, so several clusters
# with nodes can run side by side.
#
# Test-only settings, on purpose (this node exists for tests on one machine):
#   - the kubelet allows anonymous requests, all of them (AlwaysAllow): the API server has no
#     kubelet client certificate, and logs and exec go through it; the kubelet listens only on
#     the node's veth address.
#   - CLUSTER_NODE_HOST_PORTS (default 20000:20999): in every pod, TCP to 127.0.0.1 on these ports
#     goes to the host (hack/cni/loopback-to-host), so that pods reach the Slack emulator the
#     tests run there, over the loopback URL the operator accepts for plain http. Empty: off.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cluster_dir="${CLUSTER_DIR:-$repo/.cluster/local}"
[[ "$cluster_dir" == /* ]] || cluster_dir="$PWD/$cluster_dir"
cluster_dir="${cluster_dir%/}"
node_dir="$cluster_dir/node"
pki="$cluster_dir/pki"
logs="$cluster_dir/logs"

id="$(printf '%s' "$cluster_dir" | sha256sum | cut -c1-8)"
node_name="node-$id"
netns="$node_dir/netns"
host_if="soo$id"
run_dir="/run/soo-node-$id"
cgroup_root="soo-node-$id"
cni_network="soo-node-$id"
pause_image="localhost/slack-oauth-operator-node/pause:1"
host_ports="${CLUSTER_NODE_HOST_PORTS-20000:20999}"
ready_timeout="${CLUSTER_READY_TIMEOUT:-120}"
# The sysctls the kubelet sets on the host at start (pkg/kubelet/cm: setupKernelTunables); saved
# by the first node on the machine and restored when the last one stops.
kubelet_sysctls=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
sysctl_saved="/run/slack-oauth-operator-node-sysctls.saved"

# Started in this order, stopped in the reverse.
components=(containerd kubelet kube-proxy kube-scheduler)

log() { echo "node: $*" >&2; }
die() { echo "node: error: $*" >&2; exit 1; }
now_ms() { date +%s%3N; }
elapsed() { awk -v ms="$(($(now_ms) - $1))" 'BEGIN { printf "%.1f", ms / 1000 }'; }

in_node() { nsenter --net="$netns" "$@"; }

# ---- processes -------------------------------------------------------------------------------

pid_file() { echo "$node_dir/$1.pid"; }

pid_gone() {
  local stat state
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0
  state="${stat##*) }"
  state="${state%% *}"
  [[ "$state" == Z || "$state" == X ]]
}

live_pid() {
  local name="$1" file pid exe
  file="$(pid_file "$name")"
  [[ -f "$file" ]] || return 1
  pid="$(<"$file")"
  [[ "$pid" =~ ^[0-9]+$ ]] && ! pid_gone "$pid" || return 1
  exe="$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | head -n1)" || return 1
  [[ "$(basename -- "$exe")" == "$name" ]] || return 1
  echo "$pid"
}

# Processes whose command line mentions $1 (a path of this node), by binary name $2 if given.
pids_mentioning() {
  local needle="$1" name="${2:-}" dir args=()
  for dir in /proc/[0-9]*; do
    mapfile -d '' -t args <"$dir/cmdline" 2>/dev/null || continue
    ((${#args[@]} > 0)) || continue
    [[ -z "$name" || "${args[0]##*/}" == "$name" ]] || continue
    [[ "${args[*]}" == *"$needle"* ]] && echo "${dir#/proc/}"
  done
  return 0
}

# Every process in the node's network namespace (containers, shims, forgotten helpers).
pids_in_netns() {
  local inode dir
  [[ -f "$node_dir/network.env" ]] || return 0
  inode="$(awk -F= '$1=="NODE_NETNS_INODE"{print $2}' "$node_dir/network.env")"
  [[ -n "$inode" ]] || return 0
  for dir in /proc/[0-9]*; do
    [[ "$(readlink "$dir/ns/net" 2>/dev/null)" == "net:[$inode]" ]] && echo "${dir#/proc/}"
  done
  return 0
}

# Every process in this node's cgroups (the pods' containers).
pids_in_cgroups() {
  local file
  for file in /sys/fs/cgroup/*/"$cgroup_root"; do
    [[ -d "$file" ]] || continue
    find "$file" -name cgroup.procs -exec cat {} + 2>/dev/null
  done | sort -u
}

terminate_pid() {
  local pid="$1" label="$2" wait_s="${3:-10}" i
  pid_gone "$pid" && return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < wait_s * 10; i++)); do
    pid_gone "$pid" && break
    sleep 0.1
  done
  if ! pid_gone "$pid"; then
    log "$label (pid $pid) ignored TERM for ${wait_s} s, sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      pid_gone "$pid" && break
      sleep 0.1
    done
  fi
  for ((i = 0; i < 50; i++)); do
    [[ -e "/proc/$pid" ]] || break
    sleep 0.1
  done
}

kill_pids() {
  local pid
  for pid in "$@"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "$@"; do
    for ((i = 0; i < 50; i++)); do
      [[ -e "/proc/$pid" ]] || break
      sleep 0.1
    done
  done
}

stop_component() {
  local name="$1" pid
  if pid="$(live_pid "$name")"; then
    log "stopping $name (pid $pid)"
    terminate_pid "$pid" "$name" 15
  fi
  for pid in $(pids_mentioning "$node_dir/" "$name"); do
    log "stopping $name (pid $pid) that had no pid file"
    terminate_pid "$pid" "$name"
  done
  rm -f "$(pid_file "$name")"
}

# Like hack/cluster.sh's spawn, inside the node's network namespace.
spawn() {
  local name="$1" logfile="$logs/node-$1.log"
  shift
  mkdir -p "$logs"
  echo "==== $(date -u +%Y-%m-%dT%H:%M:%SZ) starting $name" >>"$logfile"
  # 8>&- 9>&-: the components must not inherit this script's locks (node.sh's, cluster.sh's).
  setsid nsenter --net="$netns" "$@" </dev/null >>"$logfile" 2>&1 8>&- 9>&- &
  echo "$!" >"$(pid_file "$name")"
}

wait_for() {
  local what="$1" component="$2" deadline
  shift 2
  deadline=$((SECONDS + ready_timeout))
  until "$@"; do
    if ! live_pid "$component" >/dev/null; then
      tail -n 40 "$logs/node-$component.log" >&2 || true
      die "$component exited while waiting for $what (log: $logs/node-$component.log)"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 40 "$logs/node-$component.log" >&2 || true
      die "timed out after ${ready_timeout}s waiting for $what (log: $logs/node-$component.log)"
    fi
    sleep 0.2
  done
}

# ---- the control plane's side ------------------------------------------------------------------

load_cluster() {
  [[ -f "$cluster_dir/ports.env" ]] || die "$cluster_dir/ports.env missing: start the cluster with 'CLUSTER_NODE=1 hack/cluster.sh up'"
  # shellcheck source=/dev/null
  source "$cluster_dir/ports.env"
  [[ "${APISERVER_ADDRESS:-127.0.0.1}" != 127.0.0.1 ]] || die "the API server of $cluster_dir listens on loopback only, which the node cannot reach: start it with 'CLUSTER_NODE=1 hack/cluster.sh up'"
  api_base="https://$APISERVER_ADDRESS:$APISERVER_PORT"
}

load_network() {
  [[ -f "$node_dir/network.env" ]] || die "no node network in $node_dir: run 'hack/node.sh network-up' (cluster.sh does with CLUSTER_NODE=1)"
  # shellcheck source=/dev/null
  source "$node_dir/network.env"
}

api() {
  local method="$1" path="$2"
  shift 2
  curl -fsS --max-time 10 --cacert "$pki/ca.crt" -H "Authorization: Bearer $(cat "$cluster_dir/admin.token")" \
    -X "$method" "$api_base$path" "$@"
}

api_answers() { curl -fsS --max-time 3 --cacert "$pki/ca.crt" -H "Authorization: Bearer $(cat "$cluster_dir/admin.token")" "$api_base/readyz" -o /dev/null 2>/dev/null; }

node_ready() {
  api GET "/api/v1/nodes/$node_name" 2>/dev/null | python3 -c '
import json, sys
node = json.load(sys.stdin)
ready = [c for c in node.get("status", {}).get("conditions", []) if c["type"] == "Ready"]
sys.exit(0 if ready and ready[0]["status"] == "True" else 1)' 2>/dev/null
}

# ---- network -----------------------------------------------------------------------------------

# <n> for the veth's /24, 192.168.<n>.0, and the pods' /24, 10.<n>.0.0: derived from the id,
# moved on while the host already has an address or route in either. Distinct per node, so that
# the host can route to every node's pods.
pick_subnet() {
  local n=$((100 + 16#${id:0:4} % 100)) tries
  for ((tries = 0; tries < 100; tries++)); do
    if ! ip -4 -o addr show | grep -qE " (192\.168|10)\.$n\." && ! ip -4 route show | grep -qE "^(192\.168|10)\.$n\."; then
      echo "$n"
      return 0
    fi
    n=$((100 + (n - 99) % 100))
  done
  die "no free 192.168.x.0/24 for the node's veth"
}

cmd_network_up() {
  if [[ -f "$node_dir/network.env" ]] && ip link show "$host_if" >/dev/null 2>&1 && mountpoint -q "$netns"; then
    load_network
    log "network already up: host $NODE_HOST_IP, node $NODE_IP"
    return 0
  fi
  cmd_network_down >/dev/null 2>&1 || true
  mkdir -p "$node_dir"
  local n subnet pod_cidr
  n="$(pick_subnet)"
  subnet="192.168.$n"
  pod_cidr="10.$n.0.0/24"
  touch "$netns"
  unshare --net="$netns" true
  ip link add "$host_if" type veth peer name "n$host_if"
  ip link set "n$host_if" netns "$netns"
  ip addr add "$subnet.1/24" dev "$host_if"
  ip link set "$host_if" up
  in_node ip link set lo up
  in_node ip link set "n$host_if" name eth0
  in_node ip addr add "$subnet.2/24" dev eth0
  in_node ip link set eth0 up
  in_node ip route add default via "$subnet.1" dev eth0
  in_node sysctl -q -w net.ipv4.ip_forward=1
  # The host reaches pods directly (the API server's proxy, the tests' reads of /metrics); the
  # route goes with the veth.
  ip route add "$pod_cidr" via "$subnet.2" dev "$host_if"
  cat >"$node_dir/network.env" <<EOF
NODE_ID=$id
NODE_NAME=$node_name
NODE_HOST_IP=$subnet.1
NODE_IP=$subnet.2
NODE_NETNS=$netns
NODE_NETNS_INODE=$(stat -L -c %i "$netns")
NODE_POD_CIDR=$pod_cidr
NODE_HOST_PORTS=$host_ports
EOF
  log "network up: host $subnet.1 ($host_if), node $subnet.2 (namespace $netns), pods $pod_cidr"
}

cmd_network_down() {
  local pids
  # Nothing may keep the namespace alive once its mount is gone.
  pids="$(pids_in_netns)"
  if [[ -n "$pids" ]]; then
    log "stopping processes still in the node's network namespace: $(echo "$pids" | tr '\n' ' ')"
    # shellcheck disable=SC2086
    kill_pids $pids
  fi
  ip link del "$host_if" 2>/dev/null || true
  if mountpoint -q "$netns" 2>/dev/null; then umount "$netns"; fi
  rm -f "$netns" "$node_dir/network.env"
}

# ---- certificates and configuration ----------------------------------------------------------

# A client certificate signed by the cluster CA: subject CN $2 (the user), O $3 (a group).
client_cert() {
  local name="$1" cn="$2" org="${3:-}" subject
  subject="/CN=$cn"
  [[ -z "$org" ]] || subject="/O=$org/CN=$cn"
  (
    umask 077
    openssl req -new -newkey rsa:2048 -nodes -keyout "$node_dir/$name.key" -out "$node_dir/$name.csr" -subj "$subject" 2>/dev/null
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' >"$node_dir/$name.ext"
    openssl x509 -req -sha256 -days 365 -in "$node_dir/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
      -set_serial "0x$(openssl rand -hex 16)" -extfile "$node_dir/$name.ext" -out "$node_dir/$name.crt" 2>/dev/null
    rm -f "$node_dir/$name.csr" "$node_dir/$name.ext"
  )
}

client_kubeconfig() {
  local name="$1"
  (
    umask 077
    cat >"$node_dir/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: $api_base
    certificate-authority-data: $(base64 -w0 <"$pki/ca.crt")
users:
- name: $name
  user:
    client-certificate-data: $(base64 -w0 <"$node_dir/$name.crt")
    client-key-data: $(base64 -w0 <"$node_dir/$name.key")
contexts:
- name: local
  context: {cluster: local, user: $name}
current-context: local
EOF
  )
}

write_configs() {
  mkdir -p "$node_dir/cni/net.d" "$node_dir/pod-logs" "$node_dir/kubelet" "$node_dir/containerd" "$run_dir"

  local host_port_plugin=""
  if [[ -n "$host_ports" ]]; then
    host_port_plugin=", {\"type\": \"loopback-to-host\", \"host\": \"$NODE_HOST_IP\", \"ports\": \"$host_ports\"}"
  fi
  # hairpinMode lets a pod reach itself through a Service; ipMasq gives traffic that leaves the
  # pod network (to the API server on the host) the node's address.
  cat >"$node_dir/cni/net.d/10-bridge.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$cni_network",
  "plugins": [
    {
      "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
      "ipam": {"type": "host-local", "ranges": [[{"subnet": "$NODE_POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$node_dir/cni/ipam"}
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}$host_port_plugin
  ]
}
EOF

  # Every path containerd would otherwise put under /var/lib, /run or /opt is moved into this
  # node's directories, so that teardown knows what is its own.
  cat >"$node_dir/containerd.toml" <<EOF
version = 3
root = '$node_dir/containerd/root'
state = '$run_dir/state'
disabled_plugins = ['io.containerd.nri.v1.nri', 'io.containerd.internal.v1.tracing', 'io.containerd.snapshotter.v1.erofs', 'io.containerd.differ.v1.erofs', 'io.containerd.snapshotter.v1.blockfile']

[grpc]
  address = '$run_dir/containerd.sock'

[ttrpc]
  address = '$run_dir/containerd.sock.ttrpc'

[plugins]
  [plugins.'io.containerd.internal.v1.opt']
    path = '$node_dir/containerd/opt'
  [plugins.'io.containerd.shim.v1.manager']
    socket_dir = '$run_dir/s'
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = '$pause_image'
  [plugins.'io.containerd.cri.v1.runtime']
    # Root lacks CAP_SYS_RESOURCE on this machine kind: runc cannot lower oom_score_adj.
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    cdi_spec_dirs = []
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = '/usr/sbin/runc'
          Root = '$run_dir/runc'
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['/usr/lib/cni', '$here/cni']
      conf_dir = '$node_dir/cni/net.d'
  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'
EOF

  cat >"$node_dir/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
containerRuntimeEndpoint: unix://$run_dir/containerd.sock
# Test-only: see the header of hack/node.sh.
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization:
  mode: AlwaysAllow
# cgroup v1 on this machine kind, and no systemd.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$cgroup_root
failSwapOn: false
podLogsDir: $node_dir/pod-logs
clusterDomain: cluster.local
registerNode: true
rotateCertificates: false
maxPods: 110
# Images cannot be pulled again here: never collect them, never evict for a nearly full disk.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "50Mi", nodefs.available: "1%", nodefs.inodesFree: "1%", imagefs.available: "1%"}
shutdownGracePeriod: 0s
EOF

  cat >"$node_dir/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $node_dir/kube-proxy.kubeconfig
hostnameOverride: $node_name
mode: iptables
clusterCIDR: $NODE_POD_CIDR
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$NODE_IP/32"]
# nf_conntrack_max is not per namespace: leave the host's alone.
conntrack:
  maxPerCore: 0
# Pod to Service to a pod on the same bridge: without this the reply would skip the DNAT.
iptables:
  masqueradeAll: true
EOF
}

# ---- cgroups, sysctls, host paths ----------------------------------------------------------------

make_cgroup_root() {
  local dir
  for dir in /sys/fs/cgroup/*/; do
    dir="${dir%/}"
    [[ "$dir" != /sys/fs/cgroup/unified ]] || continue
    mkdir -p "$dir/$cgroup_root"
    if [[ -f "$dir/cpuset.cpus" ]]; then
      cat "$dir/cpuset.cpus" >"$dir/$cgroup_root/cpuset.cpus"
      cat "$dir/cpuset.mems" >"$dir/$cgroup_root/cpuset.mems"
    fi
  done
}

remove_cgroup_root() {
  local dir
  for dir in /sys/fs/cgroup/*/"$cgroup_root"; do
    [[ -d "$dir" ]] || continue
    # Deepest first; rmdir on a cgroup removes its control files with it.
    find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true
    [[ ! -d "$dir" ]] || log "warning: cgroup $dir is still in use"
  done
}

save_sysctls() {
  [[ -f "$sysctl_saved" ]] && return 0
  local name
  for name in "${kubelet_sysctls[@]}"; do echo "$name=$(sysctl -n "$name")"; done >"$sysctl_saved.tmp"
  mv "$sysctl_saved.tmp" "$sysctl_saved"
}

# Any kubelet of any node of this project, other than this one's.
other_kubelets() {
  local pid
  for pid in $(pids_mentioning "/node/kubelet.yaml" kubelet); do
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$node_dir/" || echo "$pid"
  done
}

restore_sysctls() {
  [[ -f "$sysctl_saved" ]] || return 0
  if [[ -n "$(other_kubelets)" ]]; then
    log "another node runs on this machine: it restores the kubelet's sysctls when it stops"
    return 0
  fi
  local line
  while IFS= read -r line; do sysctl -q -w "$line" >/dev/null || log "warning: could not restore $line"; done <"$sysctl_saved"
  rm -f "$sysctl_saved"
}

# The kubelet writes these whatever its --root-dir: the device plugin socket, the legacy symlinks
# to container logs and, through containerd's CNI library, the CNI result cache.
remove_host_paths() {
  local link
  if [[ -z "$(other_kubelets)" ]]; then
    rm -f /var/lib/kubelet/device-plugins/kubelet.sock /var/lib/kubelet/device-plugins/DEPRECATION
    rmdir /var/lib/kubelet/device-plugins /var/lib/kubelet 2>/dev/null || true
  fi
  if [[ -d /var/log/containers ]]; then
    for link in /var/log/containers/*; do
      [[ -L "$link" && "$(readlink "$link")" == "$node_dir/"* ]] && rm -f "$link"
    done
    rmdir /var/log/containers 2>/dev/null || true
  fi
  rm -rf /var/lib/cni/results/"$cni_network"-* 2>/dev/null || true
  rmdir /var/lib/cni/results /var/lib/cni/networks /var/lib/cni 2>/dev/null || true
}

# Every mount under this node's directories, deepest first.
node_mounts() {
  awk -v a="$node_dir/" -v b="$run_dir/" -v n="$netns" \
    '{ p = $5; gsub(/\\040/, " ", p); if ((index(p, a) == 1 && p != n) || index(p, b) == 1) print p }' /proc/self/mountinfo | sort -r
}

unmount_all() {
  local path tries
  for ((tries = 0; tries < 5; tries++)); do
    local mounts
    mounts="$(node_mounts)"
    [[ -n "$mounts" ]] || return 0
    while IFS= read -r path; do umount "$path" 2>/dev/null || umount -l "$path" 2>/dev/null || true; done <<<"$mounts"
  done
  [[ -z "$(node_mounts)" ]] || log "warning: mounts left: $(node_mounts | tr '\n' ' ')"
}

# ---- start and stop --------------------------------------------------------------------------

ctr_() { "$BIN/ctr" --address "$run_dir/containerd.sock" --namespace k8s.io "$@"; }
containerd_answers() { ctr_ version >/dev/null 2>&1; }

# The pod sandbox image: the pause binary alone, built once into the cache as an OCI archive.
pause_archive() {
  local archive="$BIN/../pause.oci.tar" context
  if [[ ! -f "$archive" ]]; then
    context="$(mktemp -d)"
    cp "$BIN/pause" "$context/pause"
    printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$context/Containerfile"
    "$here/podman.sh" build --quiet --file "$context/Containerfile" --tag "$pause_image" "$context" >/dev/null
    "$here/podman.sh" save --quiet --format oci-archive --output "$archive.tmp" "$pause_image"
    mv "$archive.tmp" "$archive"
    rm -rf "$context"
  fi
  echo "$archive"
}

cmd_start() {
  local started
  started="$(now_ms)"
  load_cluster
  load_network
  if live_pid kubelet >/dev/null && live_pid containerd >/dev/null && node_ready; then
    log "already running: $node_name at $NODE_IP"
    return 0
  fi
  BIN="$("$here/build-node.sh" | tail -n1)"
  # shellcheck disable=SC2086
  "$here/debian-packages.sh" $NODE_DEBIAN_PACKAGES >/dev/null
  do_stop >/dev/null 2>&1 || true

  trap 'if [[ "${start_done:-}" != 1 ]]; then log "start failed; stopping what was started (logs in $logs)"; do_stop; fi' EXIT

  client_cert kubelet "system:node:$node_name" system:nodes
  client_cert kube-proxy system:kube-proxy
  client_cert kube-scheduler system:kube-scheduler
  local name
  for name in kubelet kube-proxy kube-scheduler; do client_kubeconfig "$name"; done
  # The Node authorizer is not enabled (RBAC only), so nodes get the system:node role by binding.
  api POST /apis/rbac.authorization.k8s.io/v1/clusterrolebindings -H 'Content-Type: application/json' -o /dev/null \
    -d '{"metadata":{"name":"slack-oauth-operator-local:nodes"},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"system:node"},"subjects":[{"apiGroup":"rbac.authorization.k8s.io","kind":"Group","name":"system:nodes"}]}' 2>/dev/null || true
  write_configs
  make_cgroup_root
  save_sysctls

  log "starting containerd $CONTAINERD_VERSION"
  spawn containerd "$BIN/containerd" --config "$node_dir/containerd.toml"
  wait_for "containerd" containerd containerd_answers
  ctr_ images import --quiet "$(pause_archive)" >/dev/null 2>&1 || ctr_ images import "$(pause_archive)" >&2

  log "starting the kubelet ($node_name at $NODE_IP)"
  # The containerd shim finds runc and the CNI plugins (and nsenter, iptables) on PATH.
  spawn kubelet env PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" "$BIN/kubelet" \
    --config="$node_dir/kubelet.yaml" \
    --kubeconfig="$node_dir/kubelet.kubeconfig" \
    --root-dir="$node_dir/kubelet" \
    --cert-dir="$node_dir/kubelet/pki" \
    --hostname-override="$node_name" \
    --node-ip="$NODE_IP" \
    --v=1
  log "starting kube-proxy and kube-scheduler"
  spawn kube-proxy "$BIN/kube-proxy" --config="$node_dir/kube-proxy.yaml" --v=1
  spawn kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig="$node_dir/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig="$node_dir/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig="$node_dir/kube-scheduler.kubeconfig" \
    --bind-address=127.0.0.1 \
    --leader-elect=false \
    --v=1
  wait_for "node $node_name Ready" kubelet node_ready

  cat >"$node_dir/node.env" <<EOF
NODE_NAME=$node_name
NODE_IP=$NODE_IP
NODE_HOST_IP=$NODE_HOST_IP
NODE_HOST_PORTS=$host_ports
NODE_POD_CIDR=$NODE_POD_CIDR
NODE_PAUSE_IMAGE=$pause_image
EOF
  start_done=1
  log "node $node_name Ready in $(elapsed "$started") s"
}

# Graceful first: no new pods, every pod deleted with its grace period, so that the kubelet and
# containerd take each sandbox down themselves (CNI DEL, network namespace, mounts).
drain() {
  [[ -f "$cluster_dir/ports.env" ]] || return 0
  load_cluster 2>/dev/null || return 0
  api_answers || return 0
  live_pid kubelet >/dev/null || return 0
  api PATCH "/api/v1/nodes/$node_name" -H 'Content-Type: application/merge-patch+json' -d '{"spec":{"unschedulable":true}}' -o /dev/null 2>/dev/null || return 0
  local pods
  pods="$(api GET "/api/v1/pods?fieldSelector=spec.nodeName%3D$node_name" 2>/dev/null | python3 -c '
import json, sys
for p in json.load(sys.stdin)["items"]:
    print(p["metadata"]["namespace"] + "/" + p["metadata"]["name"])')" || return 0
  [[ -n "$pods" ]] || return 0
  log "deleting $(wc -l <<<"$pods") pods"
  local pod deadline
  while IFS= read -r pod; do
    api DELETE "/api/v1/namespaces/${pod%%/*}/pods/${pod#*/}" -o /dev/null 2>/dev/null || true
  done <<<"$pods"
  deadline=$((SECONDS + ${CLUSTER_NODE_DRAIN_TIMEOUT:-90}))
  while ((SECONDS < deadline)); do
    [[ -z "$(ctr_ tasks ls -q 2>/dev/null)" ]] && return 0
    sleep 0.5
  done
  log "pods still running after the drain timeout; killing them"
}

do_stop() {
  # Never builds: with nothing built, nothing ran.
  BIN="${BIN:-$("$here/build-node.sh" --print-bin-dir)}"
  local started pid pids id_
  started="$(now_ms)"
  if live_pid containerd >/dev/null; then drain; fi
  stop_component kube-scheduler
  stop_component kube-proxy
  stop_component kubelet

  # Whatever the drain left: kill the tasks, delete the containers (which unmounts their root
  # filesystems) while containerd still answers.
  if live_pid containerd >/dev/null && containerd_answers; then
    for id_ in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s SIGKILL "$id_" >/dev/null 2>&1 || true; done
    sleep 0.5
    for id_ in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete -f "$id_" >/dev/null 2>&1 || true; done
    for id_ in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers delete "$id_" >/dev/null 2>&1 || true; done
  fi
  stop_component containerd

  # Shims outlive containerd; pods' processes outlive their shims when killed.
  pids="$(pids_mentioning "$run_dir/" containerd-shim-runc-v2; pids_in_cgroups; pids_in_netns)"
  pids="$(sort -u <<<"$pids" | grep -v "^$$\$" || true)"
  if [[ -n "$pids" ]]; then
    log "killing leftover processes: $(tr '\n' ' ' <<<"$pids")"
    # shellcheck disable=SC2086
    kill_pids $pids
  fi

  unmount_all
  remove_cgroup_root
  rm -rf "$run_dir"
  rm -rf "$node_dir/containerd" "$node_dir/kubelet" "$node_dir/cni/ipam" "$node_dir/node.env"
  remove_host_paths
  restore_sysctls
  log "stopped in $(elapsed "$started") s"
}

cmd_stop() { do_stop; }

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
  if [[ -f "$node_dir/network.env" ]]; then
    load_network
    printf '%-24s %s (host %s)\n' "network" "$NODE_IP" "$NODE_HOST_IP"
    if load_cluster 2>/dev/null && node_ready; then
      printf '%-24s Ready\n' "$node_name"
    else
      printf '%-24s not Ready\n' "$node_name"
      rc=1
    fi
  fi
  return "$rc"
}

cmd_env() {
  [[ -f "$node_dir/node.env" ]] || die "no node running in $cluster_dir"
  cat "$node_dir/node.env"
}

cmd_load_image() {
  local archive="${1:-}" name ref started
  [[ -f "$archive" ]] || die "usage: $0 load-image <oci-archive> [<extra name>...] ('$archive' is not a file)"
  shift
  started="$(now_ms)"
  live_pid containerd >/dev/null || die "the node's containerd is not running: start it with 'CLUSTER_NODE=1 hack/cluster.sh up'"
  BIN="$("$here/build-node.sh" | tail -n1)"
  ref="$(tar -xOf "$archive" index.json | python3 -c 'import json,sys; print(json.load(sys.stdin)["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"])')"
  ctr_ images import "$archive" >&2
  for name in "$@"; do
    ctr_ images rm "$name" >/dev/null 2>&1 || true
    ctr_ images tag "$ref" "$name" >/dev/null
  done
  log "loaded $ref${*:+ (also as $*)} in $(elapsed "$started") s"
}

# What this node could leave on the host; each line printed is one leftover.
cmd_leftovers() {
  local found=() pid path dir
  for pid in $(pids_mentioning "$node_dir/"; pids_mentioning "$run_dir/"; pids_in_netns; pids_in_cgroups); do
    [[ "$pid" == "$$" || "$pid" == "$BASHPID" ]] && continue
    found+=("process $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-160)")
  done
  while IFS= read -r path; do [[ -z "$path" ]] || found+=("mount $path"); done < <(node_mounts)
  mountpoint -q "$netns" 2>/dev/null && found+=("network namespace $netns")
  ip link show "$host_if" >/dev/null 2>&1 && found+=("network interface $host_if")
  if command -v iptables-save >/dev/null; then
    # No rule of a node ever belongs in the host's tables (they live in the node's namespace).
    while IFS= read -r line; do found+=("iptables rule on the host: $line"); done < <(
      { iptables-save 2>/dev/null; ip6tables-save 2>/dev/null; } | grep -E "KUBE-|CNI-|cni0|$host_if" || true)
  fi
  for dir in /sys/fs/cgroup/*/"$cgroup_root"; do [[ -d "$dir" ]] && found+=("cgroup $dir"); done
  [[ -e "$run_dir" ]] && found+=("path $run_dir")
  for path in "$node_dir/containerd" "$node_dir/kubelet"; do [[ -e "$path" ]] && found+=("path $path"); done
  if [[ -z "$(other_kubelets)" ]]; then
    for path in /var/lib/kubelet /var/lib/cni /var/log/containers /run/containerd /var/lib/containerd /opt/containerd /opt/cni /var/run/nri "$sysctl_saved"; do
      [[ -e "$path" ]] && found+=("path $path")
    done
  fi
  if ((${#found[@]} > 0)); then
    printf 'node: left behind: %s\n' "${found[@]}" >&2
    return 1
  fi
  log "nothing of $node_name is left on this machine"
}

take_lock() {
  mkdir -p "$node_dir"
  exec 8>"$node_dir/.lock"
  flock -w 300 8 || die "timed out waiting for the lock on $node_dir/.lock"
}

usage() {
  echo "usage: $0 network-up|network-down|start|stop|status|env|leftovers|load-image <archive> [<name>...]" >&2
  exit 2
}

[[ $# -ge 1 ]] || usage
[[ "$(id -u)" == 0 ]] || die "the node needs root (network namespaces, mounts, cgroups)"
command="$1"
shift
case "$command" in
  network-up) take_lock; cmd_network_up ;;
  network-down) take_lock; cmd_network_down ;;
  start) take_lock; cmd_start ;;
  stop) take_lock; cmd_stop ;;
  status) cmd_status ;;
  env) cmd_env ;;
  leftovers) cmd_leftovers ;;
  load-image) cmd_load_image "$@" ;;
  *) usage ;;
esac

#!/usr/bin/env bash
# A single-node Kubernetes data plane for the tests, held in a network + mount namespace of its own:
# containerd + runc + the CNI bridge (Debian packages), kubelet and kube-proxy (hack/k8s/build.sh,
# the same pinned release as the control plane). Nothing of it is visible from the host but a veth
# pair and a cgroup directory, and `down` removes both.
#
#   hack/k8s/node.sh netns DIR                 the namespace and the veth pair; prints
#                                              HOST_IP=... NODE_IP=... (DIR/node.env has them too)
#   hack/k8s/node.sh start DIR SERVER CA_CRT CA_KEY
#                                              containerd, kubelet, kube-proxy against the apiserver
#                                              SERVER (https://HOST_IP:PORT), with client
#                                              certificates signed by the cluster CA
#   hack/k8s/node.sh import DIR FILE.tar...    docker-archive images into containerd (k8s.io)
#   hack/k8s/node.sh exec DIR CMD...           a command inside the namespace (debugging)
#   hack/k8s/node.sh kill-container DIR NS POD CONTAINER
#                                              SIGKILL of a container's processes (a crash: no
#                                              clean stop); kubelet restarts it
#   hack/k8s/node.sh down DIR                  kills every process of the namespace, removes its
#                                              mounts, link and cgroups, then checks
#   hack/k8s/node.sh check DIR                 exit 1 (saying what) if anything of DIR is left
#
# One holder process (`unshare --net --mount --propagation private sleep`) owns the namespaces;
# every daemon is started with `nsenter` into them. Paths the daemons hard-code (/run/containerd,
# /run/netns, /var/lib/kubelet, /var/lib/cni, /var/log/pods, /var/log/containers) are bind mounts of
# directories under DIR inside the namespace; so are the five kernel tunables kubelet would
# otherwise set on the host (vm.overcommit_memory, kernel.panic...): files holding the values it
# wants. iptables rules (kube-proxy, the bridge plugin's masquerade) live in the namespace's own
# tables; the host gets none. Pods reach the apiserver on HOST_IP through the veth, masqueraded to
# NODE_IP, so the host needs no route to the pod network.
#
# Environment: DITTOFS_K8S_NODE_NAME (node name, default dittofs-node), DITTOFS_K8S_POD_CIDR
# (10.244.0.0/24), DITTOFS_K8S_SERVICE_CIDR (10.0.0.0/24), DITTOFS_K8S_CACHE (where build.sh put
# kubelet, kube-proxy, pause). Needs root.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
NODE_NAME=${DITTOFS_K8S_NODE_NAME:-dittofs-node}
POD_CIDR=${DITTOFS_K8S_POD_CIDR:-10.244.0.0/24}
SERVICE_CIDR=${DITTOFS_K8S_SERVICE_CIDR:-10.0.0.0/24}
PAUSE_IMAGE=registry.k8s.io/pause:3.10
# Paths kubelet, containerd and the CNI plugins use whatever their configuration says.
# /run/netns: containerd pins each pod's network namespace on a file there; on the host's directory
# those files (empty mount points once the namespace is gone) would outlive the node.
HARD_CODED=(/run/containerd /run/netns /var/lib/kubelet /var/lib/cni /var/log/pods /var/log/containers)
# kubelet's setupKernelTunables: it sets these on the host unless they already hold these values.
TUNABLES=(vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1
  kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000)

log() { printf '[k8s-node] %s\n' "$*" >&2; }
die() { printf '[k8s-node] error: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

[[ $# -ge 1 ]] || { usage >&2; exit 2; }
cmd=$1
shift
case $cmd in -h | --help) usage; exit 0 ;; esac
[[ $# -ge 1 ]] || die "$cmd: DIR is missing"
DIR=$(realpath -m "$1")
shift
ENVF=$DIR/node.env

holder_pid() { [[ -f $DIR/run/holder.pid ]] && cat "$DIR/run/holder.pid"; }
holder_alive() {
  local p
  p=$(holder_pid) || return 1
  [[ -n $p && -d /proc/$p ]] && [[ $(tr '\0' ' ' <"/proc/$p/cmdline") == *"dittofs-k8s-node-holder"* ]]
}
in_ns() { nsenter -t "$(holder_pid)" -n -m -- "$@"; }
load_env() { [[ -f $ENVF ]] || die "$DIR is not a node (no node.env: run '$0 netns $DIR' first)"; source "$ENVF"; }
bin_dir() { "$HERE/build.sh" --print-bin-dir; }

# --- netns ---------------------------------------------------------------------------------------
cmd_netns() {
  [[ $(id -u) == 0 ]] || die "needs root (network and mount namespaces, veth, mounts)"
  for t in unshare nsenter ip iptables containerd runc ctr; do
    command -v "$t" >/dev/null || die "$t is not installed (hack/install-deps.sh k8s-node)"
  done
  mkdir -p "$DIR/run" "$DIR/logs"
  holder_alive && die "$DIR already holds a running node (holder $(holder_pid))"
  # A /30 on the veth that no route of the host covers yet: 10.213.N.0/30 (N random, retried).
  local n id host_ip node_ip i
  for ((i = 0; i < 64; i++)); do
    n=$((RANDOM % 64 * 4))
    id=$(printf '%04x' $((RANDOM % 65536)))
    host_ip=10.213.$((RANDOM % 256)).$((n + 1)) node_ip=${host_ip%.*}.$((n + 2))
    ip route get "$node_ip" 2>/dev/null | grep -q ' dev eth\| via ' || continue
    ip link show "dk8s$id" >/dev/null 2>&1 && continue
    ip -o addr show | grep -q " ${host_ip%.*}\." && continue
    break
  done
  ((i < 64)) || die "found no free 10.213.x.y/30 for the veth pair"
  # The holder: sleeps in the new namespaces until `down` kills it. Its argv names it (argv[0]).
  setsid unshare --net --mount --propagation private -- \
    bash -c 'exec -a dittofs-k8s-node-holder sleep infinity' </dev/null >/dev/null 2>&1 &
  echo $! >"$DIR/run/holder.pid"
  for ((i = 0; i < 100; i++)); do
    [[ $(readlink "/proc/$!/ns/net" 2>/dev/null) != "$(readlink /proc/self/ns/net)" ]] && break
    sleep 0.05
  done
  holder_alive || die "the holder process did not start"
  local hostif=dk8s$id nodeif=dk8s${id}n
  ip link add "$hostif" type veth peer name "$nodeif"
  ip link set "$nodeif" netns "$(holder_pid)"
  ip addr add "$host_ip/30" dev "$hostif"
  ip link set "$hostif" up
  in_ns ip link set lo up
  in_ns ip link set "$nodeif" name eth0
  in_ns ip addr add "$node_ip/30" dev eth0
  in_ns ip link set eth0 up
  in_ns ip route add default via "$host_ip"
  in_ns sysctl -qw net.ipv4.ip_forward=1
  # The private tree, and the hard-coded paths as bind mounts of it (inside the namespace only).
  # A mount point missing on the host is created, remembered, and removed by `down`.
  : >"$DIR/run/created-dirs"
  local p
  for p in "${HARD_CODED[@]}"; do
    if [[ ! -d $p ]]; then
      local q=$p
      while [[ ! -d $(dirname "$q") ]]; do q=$(dirname "$q"); done
      echo "$q" >>"$DIR/run/created-dirs"
      mkdir -p "$p"
    fi
    mkdir -p "$DIR/root$p"
    in_ns mount --bind "$DIR/root$p" "$p"
  done
  mkdir -p "$DIR/sysctl"
  for t in "${TUNABLES[@]}"; do
    local key=${t%%=*} f
    f=$DIR/sysctl/${key//\//.}
    echo "${t#*=}" >"$f"
    in_ns mount --bind "$f" "/proc/sys/$key"
  done
  cat >"$ENVF" <<EOF
HOST_IP=$host_ip
NODE_IP=$node_ip
HOST_IF=$hostif
CGROUP=dittofs-k8s-$id
EOF
  log "namespace held by pid $(holder_pid); veth $hostif $host_ip <-> $node_ip"
  cat "$ENVF"
}

# --- start ---------------------------------------------------------------------------------------
# A client certificate for CN/O, signed by the cluster CA, and a kubeconfig with it.
client_kubeconfig() { # name cn org server ca_crt ca_key
  local name=$1 cn=$2 org=$3 server=$4 ca=$5 cakey=$6 d=$DIR/pki
  mkdir -p "$d"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/$name.key" 2>/dev/null
  openssl req -new -key "$d/$name.key" -subj "/O=$org/CN=$cn" -out "$d/$name.csr" 2>/dev/null
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' >"$d/$name.ext"
  openssl x509 -req -in "$d/$name.csr" -CA "$ca" -CAkey "$cakey" -set_serial "0x$(openssl rand -hex 8)" \
    -days 30 -sha256 -extfile "$d/$name.ext" -out "$d/$name.crt" 2>/dev/null
  cat >"$DIR/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "$server", certificate-authority: "$ca"}
users:
- name: u
  user: {client-certificate: "$d/$name.crt", client-key: "$d/$name.key"}
contexts:
- name: c
  context: {cluster: c, user: u}
current-context: c
EOF
}

# Starts a daemon inside the namespace, detached, with its pid in run/NAME.pid and log in logs/.
daemon() { # name cmd...
  local name=$1
  shift
  setsid nsenter -t "$(holder_pid)" -n -m -- "$@" </dev/null >>"$DIR/logs/$name.log" 2>&1 &
  echo $! >"$DIR/run/$name.pid"
}

wait_for() { # what seconds cmd...
  local what=$1 secs=$2 i
  shift 2
  for ((i = 0; i < secs * 4; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  die "$what not ready after ${secs}s (logs: $DIR/logs)"
}

cmd_start() {
  [[ $# -eq 3 ]] || die "start DIR SERVER CA_CRT CA_KEY"
  local server=$1 ca=$2 cakey=$3 bin
  load_env
  holder_alive || die "no namespace in $DIR (run '$0 netns $DIR')"
  bin=$(bin_dir)
  for b in kubelet kube-proxy pause; do
    [[ -x $bin/$b ]] || die "$bin/$b is not built (hack/k8s/build.sh)"
  done
  local c=$DIR/containerd
  mkdir -p "$c/root" "$DIR/cni/net.d" "$DIR/kubelet"
  # containerd: its root under DIR, the CRI plugin with runc (cgroupfs) and the CNI bridge. The
  # root user here lacks CAP_SYS_RESOURCE, hence restrict_oom_score_adj.
  cat >"$c/config.toml" <<EOF
version = 2
root = "$c/root"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.internal.v1.opt", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$DIR/cni/net.d"
EOF
  cat >"$DIR/cni/net.d/10-dittofs.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "dittofs",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
EOF
  daemon containerd containerd --config "$c/config.toml"
  wait_for containerd 60 in_ns ctr -a /run/containerd/containerd.sock version
  log "containerd up"
  import_pause "$bin/pause"

  client_kubeconfig kubelet "system:node:$NODE_NAME" system:nodes "$server" "$ca" "$cakey"
  client_kubeconfig kube-proxy system:kube-proxy system:node-proxier "$server" "$ca" "$cakey"
  # kubelet's cgroups under a cgroup of their own in every v1 hierarchy (removed by `down`).
  local h
  for h in /sys/fs/cgroup/*/; do
    [[ -d $h && ! -L ${h%/} && $h != /sys/fs/cgroup/unified/ ]] && mkdir -p "$h$CGROUP"
  done
  cat >"$DIR/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: "$ca"}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP
cgroupsPerQOS: true
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
resolvConf: ""
clusterDomain: cluster.local
staticPodPath: ""
podCIDR: $POD_CIDR
protectKernelDefaults: false
makeIPTablesUtilChains: false
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "1Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
localStorageCapacityIsolation: false
EOF
  daemon kubelet "$bin/kubelet" --config="$DIR/kubelet/config.yaml" --kubeconfig="$DIR/kubelet.kubeconfig" \
    --root-dir=/var/lib/kubelet --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --v=1
  wait_for kubelet 120 in_ns curl -sf http://127.0.0.1:10248/healthz
  log "kubelet up"
  cat >"$DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: "$DIR/kube-proxy.kubeconfig"}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $POD_CIDR
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
iptables: {masqueradeAll: true}
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  daemon kube-proxy "$bin/kube-proxy" --config="$DIR/kube-proxy.yaml" --v=1
  wait_for kube-proxy 60 in_ns curl -sf http://127.0.0.1:10256/healthz
  log "kube-proxy up; node $NODE_NAME at $NODE_IP"
}

# The pause image: the static binary build.sh compiled, as a one-layer docker-archive.
import_pause() {
  local d=$DIR/pause-image
  rm -rf "$d"
  mkdir -p "$d/layer"
  cp "$1" "$d/layer/pause"
  tar -C "$d/layer" -cf "$d/layer.tar" pause
  local diff cfg
  diff=sha256:$(sha256sum "$d/layer.tar" | cut -d' ' -f1)
  printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/pause"],"User":"65535:65535"},"rootfs":{"type":"layers","diff_ids":["%s"]}}' "$diff" >"$d/config.json"
  cfg=$(sha256sum "$d/config.json" | cut -d' ' -f1)
  mv "$d/config.json" "$d/$cfg.json"
  printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["layer.tar"]}]' "$cfg" "$PAUSE_IMAGE" >"$d/manifest.json"
  tar -C "$d" -cf "$d/pause.tar" manifest.json "$cfg.json" layer.tar
  cmd_import "$d/pause.tar"
}

cmd_import() {
  holder_alive || die "no namespace in $DIR"
  local f
  for f in "$@"; do
    in_ns ctr -a /run/containerd/containerd.sock -n k8s.io images import --no-unpack=false "$f" >/dev/null ||
      die "ctr images import $f failed"
    log "imported $(basename "$f")"
  done
}

cmd_kill_container() {
  [[ $# -eq 3 ]] || die "kill-container DIR NAMESPACE POD CONTAINER"
  holder_alive || die "no namespace in $DIR"
  local ids
  ids=$(in_ns ctr -a /run/containerd/containerd.sock -n k8s.io containers ls -q \
    "labels.\"io.kubernetes.pod.namespace\"==$1,labels.\"io.kubernetes.pod.name\"==$2,labels.\"io.kubernetes.container.name\"==$3")
  [[ -n $ids ]] || die "no container $3 of pod $1/$2"
  local id killed=0
  for id in $ids; do
    # Only the running one (exited containers of earlier restarts have no task).
    in_ns ctr -a /run/containerd/containerd.sock -n k8s.io tasks kill -a -s SIGKILL "$id" 2>/dev/null && killed=$((killed + 1))
  done
  ((killed > 0)) || die "container $3 of pod $1/$2 has no running task"
  log "SIGKILL to container $3 of pod $1/$2"
}

# --- down / check ----------------------------------------------------------------------------------
# Every process in the namespace (daemons, shims, containers): the ones whose network namespace is the holder's.
ns_pids() {
  local ns
  ns=$(readlink "/proc/$1/ns/net" 2>/dev/null) || return 0
  # One stat for all processes: a readlink each is hundreds of forks per poll of cmd_down's loops,
  # seconds per poll on a loaded machine. %N quotes as QUOTING_STYLE says: pinned to the default the
  # pattern expects (with QUOTING_STYLE=literal nothing matched, and down saw no process to kill).
  QUOTING_STYLE=shell-escape-always stat -c '%N' /proc/[0-9]*/ns/net 2>/dev/null | grep -F -- "-> '$ns'" | sed -E "s|^'/proc/([0-9]+)/.*|\1|" || true
}

# The containers: every process in the node's cgroups (pods have network namespaces of their own,
# and outlive their shims).
cgroup_pids() {
  [[ -n ${CGROUP:-} ]] || return 0
  local h
  for h in /sys/fs/cgroup/*/"$CGROUP"; do
    [[ -d $h ]] && find "$h" -name cgroup.procs -exec cat {} + 2>/dev/null
  done
}

node_pids() { { [[ -z $1 ]] || ns_pids "$1" | grep -vx "$1"; cgroup_pids; } | sort -un; }

cmd_down() {
  [[ -f $ENVF ]] && source "$ENVF"
  local h="" i
  holder_alive && h=$(holder_pid)
  if [[ -n $h ]]; then
    # kubelet first (it would restart containers), then the rest, then the holder.
    for n in kubelet kube-proxy; do [[ -f $DIR/run/$n.pid ]] && kill "$(cat "$DIR/run/$n.pid")" 2>/dev/null || true; done
  fi
  # Daemons, shims and containers: TERM, then KILL; each round waits up to 10 s for them to go.
  local pids sig
  for sig in TERM TERM KILL KILL; do
    pids=$(node_pids "$h" || true)
    [[ -z $pids ]] && break
    # shellcheck disable=SC2086
    kill -s "$sig" $pids 2>/dev/null || true
    for ((i = 0; i < 40; i++)); do
      [[ -z $(node_pids "$h" || true) ]] && break
      sleep 0.25
    done
  done
  if [[ -n $h ]]; then
    kill -KILL "$h" 2>/dev/null || true
    for ((i = 0; i < 40; i++)); do [[ -d /proc/$h ]] || break; sleep 0.1; done
  fi
  # The host end of the veth goes with the namespace; delete it in case it did not.
  [[ -n ${HOST_IF:-} ]] && ip link del "$HOST_IF" 2>/dev/null || true
  # cgroups, deepest first (empty once their processes are gone).
  if [[ -n ${CGROUP:-} ]]; then
    local hdir
    for hdir in /sys/fs/cgroup/*/; do
      [[ -d $hdir$CGROUP ]] || continue
      for ((i = 0; i < 80; i++)); do
        find "$hdir$CGROUP" -depth -type d -exec rmdir {} + 2>/dev/null || true
        [[ -d $hdir$CGROUP ]] || break
        sleep 0.25
      done
    done
  fi
  # The mount points this node created on the host (empty there), unless another node still runs:
  # they may be its mount points too.
  if [[ -f $DIR/run/created-dirs ]] && ! pgrep -f '^dittofs-k8s-node-holder' >/dev/null; then
    while read -r d; do
      [[ -n $d && -d $d ]] && find "$d" -depth -type d -empty -delete 2>/dev/null || true
    done <"$DIR/run/created-dirs"
  fi
  cmd_check
}

cmd_check() {
  [[ -f $ENVF ]] && source "$ENVF"
  local bad=()
  holder_alive && bad+=("holder process $(holder_pid)")
  local f
  # One grep over every command line (NUL-separated arguments; no argument holds a NUL).
  for f in $(grep -lsaF -- "$DIR/" /proc/[0-9]*/cmdline || true); do
    f=${f%/cmdline}
    bad+=("process ${f#/proc/}: $(tr '\0' ' ' <"$f/cmdline" 2>/dev/null | cut -c1-100)")
  done
  grep -qF " $DIR" /proc/self/mountinfo && bad+=("mounts under $DIR on the host")
  if [[ -n ${HOST_IF:-} ]]; then
    ip link show "$HOST_IF" >/dev/null 2>&1 && bad+=("link $HOST_IF")
    ip route show | grep -q "${HOST_IP%.*}\." && bad+=("route to ${HOST_IP%.*}.x")
    iptables-save 2>/dev/null | grep -qE "${HOST_IP//./\\.}|${NODE_IP//./\\.}|KUBE-|CNI-" && bad+=("iptables rules of the node on the host")
  fi
  [[ -n ${CGROUP:-} ]] && ls -d /sys/fs/cgroup/*/"$CGROUP" >/dev/null 2>&1 && bad+=("cgroup $CGROUP")
  if ((${#bad[@]})); then
    printf '[k8s-node] left behind: %s\n' "${bad[@]}" >&2
    return 1
  fi
  log "nothing of $DIR is left (processes, mounts, link, routes, iptables, cgroups)"
}

case $cmd in
  netns) cmd_netns ;;
  start) cmd_start "$@" ;;
  import) cmd_import "$@" ;;
  kill-container) cmd_kill_container "$@" ;;
  exec) holder_alive || die "no namespace in $DIR"; in_ns "$@" ;;
  down) cmd_down ;;
  check) cmd_check ;;
  *) usage >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# End-to-end test of `rvs k8s run` (issue 9, item 7): the fake API server, the rvs daemon
# and `rvs k8s run` in a "node" namespace, real "pod" namespaces behind it, real traffic.
#
#   outside ns  x0 192.168.77.2/24 ── e0 192.168.77.1/24   node ns (rvs daemon + TUN data
#                                                           plane, rvs k8s run, fake API
#   pod ns pc (client)  eth0 10.244.1.10/32 ── vc  ┐        server on 127.0.0.1)
#   pod ns p1..p3       eth0 10.244.1.1N/32 ── vN  ┘  /32 routes on the node, gateway
#                                                     169.254.1.1 (calico's layout: every
#                                                     pod packet is routed through the node)
#
# Pods p1..p3 run nginx on 8080 answering "rsN". Services (clusterCIDR 10.244.0.0/16):
#   default/web   NodePort, clusterIP 10.96.0.10:80 -> 8080, nodePort 30080; endpoints p1, p2
#   default/flip  ClusterIP 10.96.0.20:80 -> 8080; endpoints p1, then changed while traffic
#                 flows (fixture updates through the fake server's /fake/apply)
# What must hold:
#   * rvs k8s run programs the table from the fake server (both services, the NodePort on
#     the node address);
#   * 60 requests from the client pod to the ClusterIP all answered, by p1 and p2 both;
#   * 60 requests from outside the node to nodeIP:30080 all answered, by p1 and p2 both;
#   * a stream of requests from the client pod to flip's ClusterIP while its EndpointSlice
#     goes p1 -> p1+p3 -> p3 (p1 terminating) -> p2+p3 loses none, and the answers follow
#     the endpoints (p3 and then p2 appear; p1 does not answer after it left);
#   * deleting flip (Service and slice) removes its virtual service.
# Usage (root): tests/e2e/k8s.sh      Cleans up namespaces and processes, also on failure.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "k8s.sh: needs root (network namespaces)"; exit 2; }
for t in nginx curl ip; do command -v $t >/dev/null || { echo "k8s.sh: missing $t"; exit 2; }; done
if [ -n "${RVS_BIN:-}" ]; then RVS=$RVS_BIN; else
  RVS=$REPO/target/debug/rvs; (cd "$REPO" && cargo build -q -p rvs) || exit 2; fi
RVS=$(readlink -f "$RVS")
. "$REPO/tests/e2e/nginx.sh"

ID=$$
N=rvsk8s$ID-node X=rvsk8s$ID-out PC=rvsk8s$ID-pc
PODS=(rvsk8s$ID-p1 rvsk8s$ID-p2 rvsk8s$ID-p3)
T=$(mktemp -d /tmp/rvs-k8s-e2e.XXXXXX)
PIDS=()
API=http://127.0.0.1:16443

cleanup() {
  local p n
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for n in 1 2 3 9; do e2e_nginx_stop "$T" $n; done
  sleep 0.3
  for n in $N $X $PC "${PODS[@]}"; do
    ip netns pids "$n" 2>/dev/null | xargs -r kill -9 2>/dev/null
    ip netns del "$n" 2>/dev/null
  done
  rm -rf "$T"
  return 0
}
on_exit() {
  local rc=$?
  set +e
  if [ $rc != 0 ] && [ -d "$T" ]; then
    echo "--- daemon log"; tail -n 20 "$T/daemon.log" 2>/dev/null
    echo "--- rvs k8s run log"; tail -n 30 "$T/k8s.log" 2>/dev/null
  fi
  cleanup
  exit $rc
}
trap on_exit EXIT
trap 'exit 1' INT TERM

fail=0
check() { # NAME STATUS(0 = ok) DETAIL
  if [ "$2" = 0 ]; then echo "ok   $1"; else echo "FAIL $1: $3"; fail=1; fi
}
innode() { ip netns exec "$N" "$@"; }

# --- the node, the outside client, the pods
for n in $N $X $PC "${PODS[@]}"; do ip netns add "$n"; ip -n "$n" link set lo up; done
ip link add x0 netns $X type veth peer name e0 netns $N
ip -n $X addr add 192.168.77.2/24 dev x0; ip -n $X link set x0 up
ip -n $N addr add 192.168.77.1/24 dev e0; ip -n $N link set e0 up
ip -n $X route add default via 192.168.77.1
# The pods' gateway, answered by the node on every veth (a local address, no proxy ARP needed).
ip -n $N addr add 169.254.1.1/32 dev lo
pod_link() { # NS NODE_SIDE_NAME POD_IP
  ip link add eth0 netns "$1" type veth peer name "$2" netns $N
  ip -n "$1" addr add "$3/32" dev eth0; ip -n "$1" link set eth0 up
  ip -n "$1" route add 169.254.1.1 dev eth0 scope link
  ip -n "$1" route add default via 169.254.1.1 dev eth0
  ip -n $N link set "$2" up
  ip -n $N route add "$3/32" dev "$2"
}
pod_link $PC vc 10.244.1.10
# Pod N answers "rsN CLIENT-ADDRESS" (what it sees as the source: masquerade or not).
pod_nginx() { # NS I LISTEN
  local dir=$T/ng$2
  mkdir -p "$dir"
  cat > "$dir/nginx.conf" <<NGINX
daemon on; worker_processes 1; pid $dir/nginx.pid; error_log stderr;
events { worker_connections 512; }
http { access_log off; client_body_temp_path $dir; proxy_temp_path $dir;
  fastcgi_temp_path $dir; uwsgi_temp_path $dir; scgi_temp_path $dir;
  server { listen $3; location / { return 200 "rs$2 \$remote_addr\n"; } } }
NGINX
  ip netns exec "$1" nginx -c "$dir/nginx.conf" -e stderr
}
for i in 1 2 3; do
  pod_link "${PODS[$((i-1))]}" v$i 10.244.1.1$i
  pod_nginx "${PODS[$((i-1))]}" $i 8080
done
# A host service on the node listening on every address, ports 9999 and 80 (kube-proxy
# #72236: it must not be reachable through a service IP, nor answer for a service without
# endpoints).
pod_nginx $N 9 "9999; listen 80"

# --- the objects
service() { # NAME CLUSTER_IP TYPE [NODE_PORT]
  local np=${4:+, \"nodePort\": $4}
  cat <<JSON
{"apiVersion": "v1", "kind": "Service",
 "metadata": {"name": "$1", "namespace": "default", "uid": "uid-svc-$1", "resourceVersion": "1"},
 "spec": {"type": "$3", "clusterIP": "$2", "clusterIPs": ["$2"], "ipFamilies": ["IPv4"],
  "ipFamilyPolicy": "SingleStack", "sessionAffinity": "None",
  "externalTrafficPolicy": "Cluster", "internalTrafficPolicy": "Cluster",
  "selector": {"app": "$1"},
  "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080$np}]}}
JSON
}
lb_local() { # NAME CLUSTER_IP NODE_PORT HEALTH_CHECK_NODE_PORT: LoadBalancer, eTP Local
  cat <<JSON
{"apiVersion": "v1", "kind": "Service",
 "metadata": {"name": "$1", "namespace": "default", "uid": "uid-svc-$1", "resourceVersion": "1"},
 "spec": {"type": "LoadBalancer", "clusterIP": "$2", "clusterIPs": ["$2"], "ipFamilies": ["IPv4"],
  "ipFamilyPolicy": "SingleStack", "sessionAffinity": "None",
  "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Cluster", "healthCheckNodePort": $4,
  "selector": {"app": "$1"},
  "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": $3}]}}
JSON
}
slice() { # SERVICE "IP:STATE ..." (STATE: ready | terminating | remote, a ready one elsewhere)
  local eps= e ip st cond node
  for e in $2; do
    ip=${e%%:*} st=${e##*:} node=node-e2e
    if [ "$st" = terminating ]; then cond='"ready": false, "serving": true, "terminating": true'
    else cond='"ready": true, "serving": true, "terminating": false'; fi
    [ "$st" = remote ] && node=node-other
    eps="$eps${eps:+, }{\"addresses\": [\"$ip\"], \"conditions\": {$cond}, \"nodeName\": \"$node\"}"
  done
  cat <<JSON
{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
 "metadata": {"name": "$1-abcde", "namespace": "default", "uid": "uid-slice-$1",
  "resourceVersion": "1", "labels": {"kubernetes.io/service-name": "$1"}},
 "addressType": "IPv4", "endpoints": [$eps],
 "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}
JSON
}
{
  echo '{"apiVersion": "v1", "kind": "List", "items": ['
  cat <<JSON
{"apiVersion": "v1", "kind": "Node",
 "metadata": {"name": "node-e2e", "uid": "uid-node", "resourceVersion": "1",
  "labels": {"kubernetes.io/hostname": "node-e2e"}},
 "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]},
 "status": {"addresses": [{"address": "192.168.77.1", "type": "InternalIP"},
  {"address": "node-e2e", "type": "Hostname"}]}},
JSON
  service web 10.96.0.10 NodePort 30080; echo ,
  slice web "10.244.1.11:ready 10.244.1.12:ready"; echo ,
  service flip 10.96.0.20 ClusterIP; echo ,
  slice flip "10.244.1.11:ready"; echo ,
  service empty 10.96.0.30 ClusterIP; echo ,
  slice empty ""; echo ,
  lb_local lbl 10.96.0.40 30090 32100; echo ,
  slice lbl "10.244.1.11:ready 10.244.1.12:remote"; echo ,
  lb_local lbr 10.96.0.41 30091 32101; echo ,
  slice lbr "10.244.1.12:remote"
  echo ']}'
} > "$T/objects.json"
cat > "$T/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: ipvs
clusterCIDR: 10.244.0.0/16
ipvs:
  scheduler: rr
  minSyncPeriod: 0s
  syncPeriod: 5s
YAML

# --- the daemon, the fake API server, rvs k8s run (all in the node namespace)
export RVS_SOCKET=$T/rvs.sock
innode "$RVS" daemon --socket "$RVS_SOCKET" --state "$T/state.json" >"$T/daemon.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do "$RVS" ping -q 2>/dev/null && break; sleep 0.05; done
"$RVS" ping -q || { echo "k8s.sh: the rvs daemon did not start"; exit 1; }
innode "$RVS" k8s fake-apiserver --objects "$T/objects.json" --listen 127.0.0.1:16443 \
  >"$T/api.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do innode curl -sf "$API/api/v1/nodes" >/dev/null && break; sleep 0.05; done
innode "$RVS" k8s run -v --server "$API" --config "$T/kube-proxy.yaml" --node node-e2e \
  --node-addresses 192.168.77.1 --socket "$RVS_SOCKET" \
  --healthz-bind-address 127.0.0.1:16256 --metrics-bind-address 127.0.0.1:16249 \
  >"$T/k8s.log" 2>&1 &
K8S_PID=$!; PIDS+=($K8S_PID)

table() { innode "$RVS" ipvsadm -Ln; }
wait_for() { # DESCRIPTION COMMAND...: polls for 10 s
  local d=$1; shift
  for _ in $(seq 200); do "$@" && return 0; sleep 0.05; done
  echo "timed out waiting for: $d"; return 1
}
has_dests() { # VS "RIP ..." [WEIGHT]: the VS's real servers of that weight (default: > 0)
  local want got
  want=$(for r in $2; do echo "$r:8080"; done | sort)
  got=$(innode "$RVS" ipvsadm -Ln -t "$1" 2>/dev/null |
    awk -v w="${3:-}" '$1 == "->" && $2 ~ /^10\./ && (w == "" ? $4 > 0 : $4 == w) {print $2}' | sort)
  [ "$want" = "$got" ]
}
fake() { # PATH BODY-FILE
  innode curl -sf -X POST --data-binary "@$2" "$API/fake/$1" >/dev/null
}

rc=0; wait_for "web's ClusterIP programmed" has_dests 10.96.0.10:80 "10.244.1.11 10.244.1.12" || rc=1
check "rvs k8s run programs the ClusterIP of web from the fake API server" $rc "$(table)"
rc=0; has_dests 192.168.77.1:30080 "10.244.1.11 10.244.1.12" || rc=1
check "the NodePort is programmed on the node address" $rc "$(table)"
rc=0; has_dests 10.96.0.20:80 "10.244.1.11" || rc=1
check "flip's ClusterIP is programmed" $rc "$(table)"

http() { # NS COUNT URL OUTFILE: sequential requests, one body (or ERR) per line
  ip netns exec "$1" sh -c "for i in \$(seq $2); do curl -s --max-time 2 '$3' || echo ERR; done" > "$4"
}
answered() { grep -c '^rs[123] ' "$1" || true; }
by() { grep -c "^rs$2 " "$1" || true; }

# 1. pod -> ClusterIP
http $PC 60 http://10.96.0.10/ "$T/cip.txt"
n=$(answered "$T/cip.txt")
check "60 requests from a pod to a ClusterIP answered" $([ "$n" = 60 ]; echo $?) \
  "$n of 60: $(sort "$T/cip.txt" | uniq -c | tr '\n' ' ')"
check "both endpoints answer the ClusterIP" \
  $([ "$(by "$T/cip.txt" 1)" -gt 0 ] && [ "$(by "$T/cip.txt" 2)" -gt 0 ]; echo $?) \
  "$(sort "$T/cip.txt" | uniq -c | tr '\n' ' ')"
n=$(grep -c ' 10.244.1.10$' "$T/cip.txt" || true)
check "a pod's traffic to a ClusterIP keeps its source (inside clusterCIDR: no masquerade)" \
  $([ "$n" = 60 ]; echo $?) "$(sort "$T/cip.txt" | uniq -c | tr '\n' ' ')"

# 2. outside -> NodePort
http $X 60 http://192.168.77.1:30080/ "$T/np.txt"
n=$(answered "$T/np.txt")
check "60 requests from outside the node to nodeIP:30080 answered" $([ "$n" = 60 ]; echo $?) \
  "$n of 60: $(sort "$T/np.txt" | uniq -c | tr '\n' ' ')"
check "both endpoints answer the NodePort" \
  $([ "$(by "$T/np.txt" 1)" -gt 0 ] && [ "$(by "$T/np.txt" 2)" -gt 0 ]; echo $?) \
  "$(sort "$T/np.txt" | uniq -c | tr '\n' ' ')"
n=$(grep -c ' 192.168.77.2$' "$T/np.txt" || true)
check "off-cluster traffic to a NodePort is masqueraded (the pod sees a node address)" \
  $([ "$n" = 0 ] && [ "$(answered "$T/np.txt")" = 60 ]; echo $?) "$(sort "$T/np.txt" | uniq -c | tr '\n' ' ')"

# 2b. node plumbing (nftables tables inet/arp rvs-k8s)
# Hairpin: a pod reaching itself through its service (KUBE-LOOP-BACK) is masqueraded, else
# its own reply would never go back through rvs.
http ${PODS[0]} 20 http://10.96.0.10/ "$T/hairpin.txt"
n=$(answered "$T/hairpin.txt"); self=$(by "$T/hairpin.txt" 1)
check "hairpin: a pod reaches itself through its ClusterIP" \
  $([ "$n" = 20 ] && [ "$self" -gt 0 ]; echo $?) "$(sort "$T/hairpin.txt" | uniq -c | tr '\n' ' ')"
n=$(grep -c '^rs1 10.244.1.11$' "$T/hairpin.txt" || true)
check "hairpin traffic is masqueraded" $([ "$n" = 0 ]; echo $?) \
  "$(sort "$T/hairpin.txt" | uniq -c | tr '\n' ' ')"
# A service without endpoints refuses at once (ICMP port unreachable: curl's exit 7), and
# its packets never reach the node's own listener on :80.
t0=$(date +%s%N); rc=0; ip netns exec $PC curl -s --max-time 3 http://10.96.0.30/ >/dev/null || rc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
check "a service without endpoints is rejected, not black-holed" $([ $rc = 7 ] && [ $ms -lt 1500 ]; echo $?) \
  "curl exit $rc after $ms ms"
# Stray ports of a service IP: the node's own listener is not reachable through it.
body=$(ip netns exec $PC curl -s --max-time 2 http://192.168.77.1:9999/ || echo ERR)
check "the node's listener on :9999 answers on the node address (sanity)" \
  $([ "${body%% *}" = rs9 ]; echo $?) "got $body"
rc=0; ip netns exec $PC curl -s --max-time 2 http://10.96.0.10:9999/ >/dev/null || rc=$?
check "a port a service IP does not serve is refused (not the node's listener)" \
  $([ $rc = 7 ]; echo $?) "curl exit $rc"
# ARP: the node does not answer for service IPs on its interfaces (it does for its own).
ip -n $X route add 10.96.0.10/32 dev x0
rc=0; ip netns exec $X curl -s --max-time 2 http://10.96.0.10/ >/dev/null || rc=$?
neigh=$(ip -n $X neigh show 10.96.0.10)
check "no ARP answer for a service IP on the node's interfaces" \
  $([ $rc != 0 ] && ! echo "$neigh" | grep -q lladdr; echo $?) "curl exit $rc, neighbour: $neigh"
ip -n $X route del 10.96.0.10/32 dev x0
rc=0; ip -n $X neigh show 192.168.77.1 | grep -q lladdr || rc=1
check "ARP still answered for the node address" $rc "$(ip -n $X neigh)"

# Checklist 28: loadBalancerSourceRanges. A LoadBalancer whose ingress IP 198.51.100.7 is
# open to 203.0.113.0/24 only: the outside client (192.168.77.2) is dropped; once the
# range holds it, it is answered.
lb_ranges() { # RANGE
  cat <<JSON
{"apiVersion": "v1", "kind": "Service",
 "metadata": {"name": "fw", "namespace": "default", "uid": "uid-svc-fw", "resourceVersion": "1"},
 "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.50", "clusterIPs": ["10.96.0.50"],
  "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "sessionAffinity": "None",
  "externalTrafficPolicy": "Cluster", "internalTrafficPolicy": "Cluster",
  "loadBalancerSourceRanges": ["$1"], "selector": {"app": "fw"},
  "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30095}]},
 "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.7", "ipMode": "VIP"}]}}}
JSON
}
lb_ranges 203.0.113.0/24 > "$T/fw1.json"; slice fw "10.244.1.11:ready" > "$T/fw2.json"
fake apply "$T/fw1.json"; fake apply "$T/fw2.json"
rc=0; wait_for "fw's LB VIP programmed" has_dests 198.51.100.7:80 "10.244.1.11" || rc=1
rc2=0; ip netns exec $X curl -s --max-time 2 http://198.51.100.7/ >/dev/null || rc2=$?
check "loadBalancerSourceRanges: a client outside the ranges is dropped" \
  $([ $rc = 0 ] && [ $rc2 = 28 ]; echo $?) "curl exit $rc2 (28 = timed out), $(table | grep -A1 198.51)"
lb_ranges 192.168.77.0/24 > "$T/fw3.json"; fake apply "$T/fw3.json"
fw_open() { ip netns exec $X curl -s --max-time 1 http://198.51.100.7/ | grep -q '^rs1 '; }
rc=0; wait_for "fw open to 192.168.77.0/24" fw_open || rc=1
check "loadBalancerSourceRanges: a client inside the ranges is answered" $rc "$(table | grep -A1 198.51)"

# externalTrafficPolicy Local keeps the client's address (KUBE-NODE-PORT-LOCAL-TCP).
http $X 10 http://192.168.77.1:30090/ "$T/local.txt"
n=$(grep -c '^rs1 192.168.77.2$' "$T/local.txt" || true)
check "NodePort with externalTrafficPolicy Local: the local endpoint sees the client's address" \
  $([ "$n" = 10 ]; echo $?) "$(sort "$T/local.txt" | uniq -c | tr '\n' ' ')"

# 2c. health-check node ports (externalTrafficPolicy Local), asked from outside the node as
# a cloud load balancer does.
hc() { # PORT: "CODE WEIGHT-HEADER BODY"
  ip netns exec $X curl -s -i --max-time 2 "http://192.168.77.1:$1/anything" | tr -d '\r' | awk '
    NR == 1 {code = $2} tolower($1) == "x-load-balancing-endpoint-weight:" {w = $2}
    /^$/ {body = 1; next} body {b = b $0} END {print code, w, b}'
}
want='200 1 {"service":{"namespace":"default","name":"lbl"},"localEndpoints":1,"serviceProxyHealthy":true}'
got=$(hc 32100)
check "health-check node port: 200 with one local endpoint (kube-proxy's body and header)" \
  $([ "$got" = "$want" ]; echo $?) "got: $got"
want='503 0 {"service":{"namespace":"default","name":"lbr"},"localEndpoints":0,"serviceProxyHealthy":true}'
got=$(hc 32101)
check "health-check node port: 503 without a local endpoint" $([ "$got" = "$want" ]; echo $?) "got: $got"
slice lbl "10.244.1.11:terminating 10.244.1.12:remote" > "$T/hc1.json"; fake apply "$T/hc1.json"
hc_code() { [ "$(hc "$1" | cut -d' ' -f1)" = "$2" ]; }
rc=0; wait_for "lbl's health check -> 503" hc_code 32100 503 || rc=1
check "health-check node port: 503 once the local endpoint terminates" $rc "got: $(hc 32100)"

# Checklist 5: changing only sessionAffinity edits web's two virtual services in place
# (one EditService each, nothing removed, both endpoints kept).
lines=$(wc -l < "$T/k8s.log")
service web 10.96.0.10 NodePort 30080 | sed 's/"sessionAffinity": "None"/"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}}/' > "$T/aff.json"
fake apply "$T/aff.json"
persistent() { table | grep -E '^TCP +(10.96.0.10:80|192.168.77.1:30080) ' | grep -c 'persistent 600' | grep -qx 2; }
rc=0; wait_for "web persistent" persistent || rc=1
line=$(tail -n +$((lines + 1)) "$T/k8s.log" | grep -m1 'sync partial' || true)
check "sessionAffinity changed in place: 2 VSs persistent, one edit each, no RS removed" \
  $([ $rc = 0 ] && echo "$line" | grep -q 'sync partial: 1 services, 2 ops, 0 refused' &&
    has_dests 10.96.0.10:80 "10.244.1.11 10.244.1.12"; echo $?) "$line / $(table)"

# 3. endpoints change while traffic flows: a stream of requests, each on a new connection
# (curl's --max-time 2: a request sent to an endpoint that left would time out or be reset).
ip netns exec $PC sh -c "i=0; while [ ! -f $T/stop ]; do i=\$((i+1));
  r=\$(curl -s --max-time 2 http://10.96.0.20/ || echo ERR); echo \"\$i \${r%% *}\"; done" > "$T/flow.txt" &
FLOW=$!; PIDS+=($FLOW)
mark() { echo "$1" > "$T/mark-$2"; wc -l < "$T/flow.txt" > "$T/at-$2"; }
sleep 1
slice flip "10.244.1.11:ready 10.244.1.13:ready" > "$T/s1.json"; fake apply "$T/s1.json"
rc=0; wait_for "flip -> p1+p3" has_dests 10.96.0.20:80 "10.244.1.11 10.244.1.13" || rc=1
check "slice update (p3 added) reaches the table while traffic flows" $rc "$(table)"
mark p1p3 1; sleep 1
slice flip "10.244.1.11:terminating 10.244.1.13:ready" > "$T/s2.json"; fake apply "$T/s2.json"
rc=0; wait_for "flip -> p3 (p1 terminating)" has_dests 10.96.0.20:80 "10.244.1.13" || rc=1
check "slice update (p1 terminating) takes p1 out of rotation" $rc "$(table)"
# p1 still has connections (TIME_WAIT at least): kept at weight 0 until they end (§1.8).
rc=0; has_dests 10.96.0.20:80 "10.244.1.11" 0 || rc=1
check "the terminating endpoint with connections drains at weight 0" $rc "$(table)"
mark p3 2; sleep 1
slice flip "10.244.1.12:ready 10.244.1.13:ready" > "$T/s3.json"; fake apply "$T/s3.json"
rc=0; wait_for "flip -> p2+p3" has_dests 10.96.0.20:80 "10.244.1.12 10.244.1.13" || rc=1
check "slice update (p1 gone, p2 added) reaches the table" $rc "$(table)"
mark p2p3 3; sleep 1
touch "$T/stop"; wait $FLOW 2>/dev/null || true
total=$(wc -l < "$T/flow.txt")
errs=$(grep -c ' ERR$' "$T/flow.txt" || true)
check "no request lost while the endpoints changed ($total requests)" \
  $([ "$total" -gt 20 ] && [ "$errs" = 0 ]; echo $?) "$errs errors of $total"
phase() { # FROM-LINE TO-LINE: the answers in that range
  awk -v a="$1" -v b="$2" '$1 > a && $1 <= b {print $2}' "$T/flow.txt" | sort | uniq -c | tr '\n' ' '
}
# A request counted at the marks may have started before the table changed: one line of slack.
a1=$(( $(cat "$T/at-1") + 1 )) a2=$(( $(cat "$T/at-2") + 1 )) a3=$(( $(cat "$T/at-3") + 1 ))
p3=$(awk -v a="$a1" '$1 > a && $2 == "rs3"' "$T/flow.txt" | wc -l)
check "p3 answers after it was added" $([ "$p3" -gt 0 ]; echo $?) "$(phase "$a1" "$total")"
p1late=$(awk -v a="$a2" '$1 > a && $2 == "rs1"' "$T/flow.txt" | wc -l)
check "p1 answers no new request after it started terminating" $([ "$p1late" = 0 ]; echo $?) \
  "$(phase "$a2" "$total")"
p2=$(awk -v a="$a3" '$1 > a && $2 == "rs2"' "$T/flow.txt" | wc -l)
check "p2 answers after it was added" $([ "$p2" -gt 0 ]; echo $?) "$(phase "$a3" "$total")"

# The sets follow the endpoints (element updates, no full rewrite): p3, added above, now
# reaches itself through flip (its KUBE-LOOP-BACK entry came with the slice update).
http ${PODS[2]} 6 http://10.96.0.20/ "$T/hairpin3.txt"
check "hairpin for an endpoint added by a slice update" \
  $([ "$(answered "$T/hairpin3.txt")" = 6 ] && [ "$(by "$T/hairpin3.txt" 3)" -gt 0 ]; echo $?) \
  "$(sort "$T/hairpin3.txt" | uniq -c | tr '\n' ' ')"
n=$(grep -c 'sync partial: .*nft [0-9.]* ms' "$T/k8s.log" || true)
check "partial syncs update the nftables sets" $([ "$n" -gt 0 ]; echo $?) "$(grep 'sync partial' "$T/k8s.log" | tail -n 3)"

# 4. the service goes away
service flip 10.96.0.20 ClusterIP > "$T/d1.json"; slice flip "" > "$T/d2.json"
fake delete "$T/d1.json"; fake delete "$T/d2.json"
gone() { ! innode "$RVS" ipvsadm -Ln | grep -q '10.96.0.20:80'; }
rc=0; wait_for "flip removed" gone || rc=1
check "deleting the Service removes its virtual service" $rc "$(table)"

# 5. /healthz of rvs k8s run
code=$(innode curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:16256/healthz || true)
check "/healthz answers 200" $([ "$code" = 200 ]; echo $?) "got $code"

# 6. the periodic full syncs (syncPeriod 5 s) found the table as desired: they wrote nothing.
n=$(grep -c 'sync full: [0-9]* services, 0 ops' "$T/k8s.log" || true)
check "a periodic full sync with nothing changed sends no operation" $([ "$n" -gt 0 ]; echo $?) \
  "$(grep 'sync full' "$T/k8s.log" | tail -n 3)"
rc=0; nft_tables=$(innode nft list tables) || rc=1
check "the node plumbing is rvs's own tables" \
  $([ $rc = 0 ] && [ "$(echo "$nft_tables" | sort | tr '\n' ' ')" = "table arp rvs-k8s table inet rvs-k8s " ]; echo $?) \
  "$nft_tables"

# 7. Checklist 44: `rvs k8s cleanup` (kube-proxy's --cleanup), with the proxy stopped: an
# empty table, no service address routed locally, no rvs-k8s tables.
kill "$K8S_PID"; wait "$K8S_PID" 2>/dev/null || true
vips_before=$(ip -n $N route show table local | grep -c ' 10\.96\.' || true)
rc=0; innode "$RVS" k8s cleanup --socket "$RVS_SOCKET" || rc=$?
vss=$(table | grep -cE '^(TCP|UDP|SCTP) ' || true)
vips=$(ip -n $N route show table local | grep -c ' 10\.96\.' || true)
nft_left=$(innode nft list tables | grep -c rvs-k8s || true)
check "rvs k8s cleanup: empty table, no service address, no nftables tables" \
  $([ $rc = 0 ] && [ "$vss" = 0 ] && [ "$vips_before" -gt 0 ] && [ "$vips" = 0 ] && [ "$nft_left" = 0 ]; echo $?) \
  "exit $rc, $vss virtual services, $vips local routes ($vips_before before), $nft_left tables"

[ $fail = 0 ] && echo "k8s.sh: all checks passed" || echo "k8s.sh: FAILED"
exit $fail

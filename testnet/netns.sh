# testnet/netns.sh: what the network-namespace labs share (testnet/nat, testnet/dht-scale).
# Sourced, not run: the lab sets LAB (its name), ROOT (the repository), BUILD (1: build the
# debug binary first) and OUT (where to keep the nodes' logs, or empty) before it. Skips the
# lab (exit 0 with a SKIP line) where namespaces cannot be built; otherwise leaves BIN, WORK,
# PFX and the helpers below, and removes every namespace and node it made on exit.

skip() { echo "SKIP testnet/$LAB: $*"; exit 0; }
[ "$(id -u)" = 0 ] || skip "not root: network namespaces need root"
command -v ip >/dev/null && command -v iptables >/dev/null && command -v jq >/dev/null ||
  skip "ip, iptables or jq missing"
PFX="hn$$"
ip netns add "${PFX}probe" 2>/dev/null || skip "cannot create network namespaces (ip netns add failed)"
if ! ip netns exec "${PFX}probe" iptables -t nat -L >/dev/null 2>&1; then
  ip netns del "${PFX}probe"
  skip "iptables does not work inside a network namespace"
fi
ip netns del "${PFX}probe"

if [ "$BUILD" = 1 ]; then
  (cd "$ROOT" && cargo build --locked --bin hearth -q) || { echo "FAIL: cargo build"; exit 1; }
fi
BIN=${HEARTH_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/hearth}
[ -x "$BIN" ] || { echo "FAIL: no hearth binary at $BIN"; exit 1; }

WORK=$(mktemp -d /tmp/hearth-$LAB.XXXXXX)
NSS=()
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  # Whatever still runs inside the namespaces this script made (a node is never left behind to
  # load the machine for the next variant or run: deleting a namespace does not stop it).
  local n left
  for n in "${NSS[@]}"; do
    left=$(ip netns pids "$n" 2>/dev/null)
    [ -n "$left" ] && kill $left 2>/dev/null
  done
  for n in "${NSS[@]}"; do
    for _ in 1 2 3 4 5 6 7 8 9 10; do [ -z "$(ip netns pids "$n" 2>/dev/null)" ] && break; sleep 0.5; done
    left=$(ip netns pids "$n" 2>/dev/null)
    [ -n "$left" ] && kill -9 $left 2>/dev/null
  done
  for n in "${NSS[@]}"; do ip netns del "$n" 2>/dev/null; done
  NSS=()
  PIDS=()
  [ ${#NEIGH_SAVED[@]} -gt 0 ] && sysctl -qw "${NEIGH_SAVED[@]}"
  NEIGH_SAVED=()
}

# neigh_room: room in the kernel's neighbour (ARP) table for a lab of many namespaces. The
# table and its limits are the whole machine's, not each namespace's: at the default 1 024
# entries, `testnet/dht-scale` with 40 homes filled it ("neighbour: arp_cache: neighbor table
# overflow!" in the kernel log), and homes could not resolve their router, nor routers the
# bootstrap node, for up to 2 minutes (docs/scale.md). Raised for the lab (never lowered), put
# back by `cleanup`.
NEIGH_SAVED=()
neigh_room() {
  local k want have
  for k in 1 2 3; do
    case $k in 1) want=4096 ;; 2) want=32768 ;; 3) want=65536 ;; esac
    have=$(sysctl -n "net.ipv4.neigh.default.gc_thresh$k") || continue
    [ "$have" -ge "$want" ] && continue
    NEIGH_SAVED+=("net.ipv4.neigh.default.gc_thresh$k=$have")
    sysctl -qw "net.ipv4.neigh.default.gc_thresh$k=$want"
  done
}
trap 'cleanup; [ -n "$OUT" ] || rm -rf "$WORK"' EXIT
trap 'exit 1' INT TERM

log() { echo "[$(date +%H:%M:%S)] $*"; }
T0=$(date +%s)

ns() { local n="${PFX}$1"; ip netns add "$n"; NSS+=("$n"); ip -n "$n" link set lo up; }
x() { local n="${PFX}$1"; shift; ip netns exec "$n" "$@"; }
# wire NS IFACE ADDR: a veth from NS into the internet bridge.
wire() {
  ip link add "${PFX}$1" type veth peer name "$2" netns "${PFX}$1"
  ip link set "${PFX}$1" netns "${PFX}inet"
  x inet ip link set "${PFX}$1" master br0 up
  # Latency on the "internet" (HEARTH_NAT_DELAY_MS each way into a host or router): a lab
  # without any hides the timing a hole punch depends on.
  [ "${HEARTH_NAT_DELAY_MS:-0}" -gt 0 ] && x inet tc qdisc add dev "${PFX}$1" root netem delay "${HEARTH_NAT_DELAY_MS}ms"
  x "$1" ip addr add "$3/24" dev "$2"
  x "$1" ip link set "$2" up
  # Every other network of the "internet" is on the same segment.
  x "$1" ip route add default dev "$2"
}
# lan ROUTER HOST ADDR GW: a home host on ROUTER's LAN bridge.
lan() {
  ip link add "${PFX}$2" type veth peer name eth0 netns "${PFX}$2"
  ip link set "${PFX}$2" netns "${PFX}$1"
  x "$1" ip link set "${PFX}$2" master lan up
  x "$2" ip addr add "$3/24" dev eth0
  x "$2" ip link set eth0 up
  x "$2" ip route add default via "$4"
}

# home_router ROUTER I MASQUERADE-ARGS...: ROUTER (wired with a `wan` interface) becomes a home
# router with LAN 10.I.0.0/24 on a bridge `lan`, translating with iptables MASQUERADE-ARGS.
home_router() {
  local r=$1 i=$2
  shift 2
  local masq=("$@")
  x "$r" ip link add lan type bridge
  x "$r" ip addr add "10.$i.0.1/24" dev lan
  x "$r" ip link set lan up
  x "$r" sysctl -qw net.ipv4.ip_forward=1
  x "$r" iptables -t nat -A POSTROUTING -o wan -s "10.$i.0.0/24" "${masq[@]}"
  # Only answers to connections from inside come in (the usual home router).
  x "$r" iptables -A FORWARD -i lan -o wan -j ACCEPT
  x "$r" iptables -A FORWARD -i wan -o lan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
  x "$r" iptables -P FORWARD DROP
  # The router's own firewall drops unsolicited packets instead of answering with a reset,
  # as home routers do (a reset would kill a hole punch whose first SYN arrives early).
  x "$r" iptables -A INPUT -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
  x "$r" iptables -A INPUT -i wan -j DROP
}

# start NAME PORT [extra hearth.toml lines...]
start() {
  local n=$1 port=$2 d="$WORK/$1"
  shift 2
  mkdir -p "$d"
  x "$n" "$BIN" --data-dir "$d" init >/dev/null || return 1
  {
    echo "[node]"
    echo "listen = [\"/ip4/0.0.0.0/tcp/$port\"]"
    echo "api = \"127.0.0.1:7070\""
    echo "mdns = false"
    [ -n "${BOOT:-}" ] && echo "bootstrap = [\"$BOOT\"]"
    for l in "$@"; do echo "$l"; done
    echo "[worker]"
    echo "slots = 1"
  } >"$d/hearth.toml"
  # `ip netns exec` directly, not through the `x` function: a function in the background runs
  # in a subshell, whose pid is not the node's, and killing it would leave the node running.
  RUST_LOG=${HEARTH_NAT_RUST_LOG:-hearth=info,libp2p_dcutr=debug,libp2p_swarm=debug,warn} ip netns exec "${PFX}$n" "$BIN" --data-dir "$d" node >"$d/log" 2>&1 &
  PIDS+=($!)
}
hx() { local n=$1; shift; x "$n" "$BIN" --data-dir "$WORK/$n" --api 127.0.0.1:7070 "$@"; }
status() { hx "$1" status --json 2>/dev/null; }
peer_of() { status "$1" | jq -r .peer_id; }

wait_until() { # TIMEOUT DESCRIPTION COMMAND...
  local secs=$1 what=$2
  local deadline=$(($(date +%s) + secs))
  shift 2
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || { log "timed out after $secs s waiting for: $what"; return 1; }
    sleep 1
  done
}
api_up() { status "$1" >/dev/null; }
# punch_failed A B: A or B logged a failed hole punch with the other.
punch_failed() {
  grep -q "conn{peer=${PEER[$2]}}.*hole punch failed" "$WORK/$1/log" ||
    grep -q "conn{peer=${PEER[$1]}}.*hole punch failed" "$WORK/$2/log"
}
has_relay() { [ "$(status "$1" | jq '.reachability.relays | length')" -gt 0 ]; }
is_public() { [ "$(status "$1" | jq '.reachability.confirmed_addrs | length')" -gt 0 ]; }

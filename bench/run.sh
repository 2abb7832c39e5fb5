#!/usr/bin/env bash
# WebSocket echo benchmark: tcllib 1.4.2 (pure Tcl) vs ours (Rust, 1.7.0)
# vs node `ws` 8, all driven by bench/loadgen over loopback.
#
#   bench/run.sh                              # full run (long!)
#   ROUNDS=1 DURATION=2 IDLE_CONNS=2000 bench/run.sh    # smoke run
#
# Environment:
#   ROUNDS=3            rounds; each round runs every server once per scenario,
#                       interleaved (server order rotates from round to round)
#   DURATION=5          seconds per timed scenario (pipelined, large)
#   IDLE_CONNS=10000    connections held by the idle scenario
#   RTT_COUNT=10000     messages in the rtt scenario
#   SCENARIOS="pipelined rtt rtt_same_core large conns idle"   subset/order
#                       (rtt_same_core: rtt with the load generator pinned to
#                       the server's core, SERVER_CPU)
#   SERVERS="tcllib ours node"                   subset/order
#
# permessage-deflate (RFC 7692) scenarios, not in the default list:
#   deflate1k deflate64k   pipelined echo of JSON-like text messages of 1 KiB
#                       (50 in flight) / 64 KiB (8 in flight), the load
#                       generator offering permessage-deflate and compressing
#                       (level 6, context takeover); reports msg/s, the
#                       server's CPU per message (utime+stime from
#                       /proc/PID/stat, all threads) and bytes on the wire per
#                       message each way
#   idle_deflate        the idle scenario, every connection having negotiated
#                       permessage-deflate (offer: "permessage-deflate;
#                       client_max_window_bits"), IDLE_CONNS of them
#   active_deflate      ACTIVE_CONNS=2000 connections that each exchanged one
#                       compressed 1 KiB message each way, held; RSS per
#                       connection
#   quiet_deflate       the same, measured after QUIET_SECS=35 quiet seconds
#                       (ours frees a compressor unused for -idlerelease, 30 s)
# and servers for them:
#   python              Python websockets (bench/python/server.py, its default
#                       compression="deflate")
#   ours_nodeflate      ours with ::websocket::deflate -enable 0 (the echo
#                       server's -deflate 0): what compression costs us
#                       (in idle_deflate/active_deflate/quiet_deflate: the same connections
#                       without deflate, as a baseline)
# node runs with perMessageDeflate: true in these scenarios only (false in
# the others, as before); ours negotiates it whenever a client offers it.
#   SERVERS="ours node python ours_nodeflate" SCENARIOS="deflate1k deflate64k idle_deflate active_deflate quiet_deflate" bench/run.sh
#   SERVER_CPU=1 LOADGEN_CPU=0                   taskset pinning
#   TCLLIB_DIR=/usr/share/tcltk/tcllib1.21       where tcllib's websocket is
#   BUILD=1             0 skips cargo build / npm install
#
# Every server is started fresh for every single run, on 127.0.0.1 and a
# kernel-chosen port.  Every wait is bounded; all servers are killed on exit.
# Output: a markdown table of medians on stdout and in
# bench/results/<timestamp>.md, raw JSON lines in bench/results/<timestamp>.jsonl,
# server logs in bench/results/<timestamp>/.
set -u -o pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH")

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
IDLE_CONNS=${IDLE_CONNS:-10000}
RTT_COUNT=${RTT_COUNT:-10000}
ACTIVE_CONNS=${ACTIVE_CONNS:-2000}
QUIET_SECS=${QUIET_SECS:-35}
SCENARIOS=${SCENARIOS:-"pipelined rtt rtt_same_core large conns idle"}
SERVERS=${SERVERS:-"tcllib ours node"}
SERVER_CPU=${SERVER_CPU:-1}
LOADGEN_CPU=${LOADGEN_CPU:-0}
TCLLIB_DIR=${TCLLIB_DIR:-/usr/share/tcltk/tcllib1.21}
BUILD=${BUILD:-1}
TCLSH=${TCLSH:-tclsh}
PYTHON=${PYTHON:-python3}
NODE=${NODE:-node}

LOADGEN=$BENCH/loadgen/target/release/loadgen
STAMP=$(date +%Y%m%d-%H%M%S)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
RESULTS=$BENCH/results
LOGDIR=$RESULTS/$STAMP
JSONL=$RESULTS/$STAMP.jsonl
REPORT=$RESULTS/$STAMP.md

die() { echo "run.sh: $*" >&2; exit 1; }
note() { echo "run.sh: $*" >&2; }

for s in $SCENARIOS; do
    case $s in pipelined|rtt|rtt_same_core|large|conns|idle|deflate1k|deflate64k|idle_deflate|active_deflate|quiet_deflate) ;;
        *) die "unknown scenario '$s'";; esac
done
for s in $SERVERS; do
    case $s in tcllib|ours|node|python|ours_nodeflate) ;; *) die "unknown server '$s'";; esac
done
[[ $ROUNDS =~ ^[0-9]+$ && $ROUNDS -ge 1 ]] || die "ROUNDS must be a positive integer"
[[ $IDLE_CONNS =~ ^[0-9]+$ ]] || die "IDLE_CONNS must be an integer"
[[ $ACTIVE_CONNS =~ ^[0-9]+$ ]] || die "ACTIVE_CONNS must be an integer"
[[ $QUIET_SECS =~ ^[0-9]+$ ]] || die "QUIET_SECS must be an integer"
[[ $DURATION =~ ^[0-9]+([.][0-9]+)?$ ]] || die "DURATION must be a number of seconds"
DUR_INT=${DURATION%.*}; DUR_INT=${DUR_INT:-0}

# ------------------------------------------------------------------ cleanup
SERVER_PIDS=()
cleanup() {
    local p
    for p in "${SERVER_PIDS[@]}"; do
        kill "$p" 2>/dev/null
    done
    sleep 0.2
    for p in "${SERVER_PIDS[@]}"; do
        kill -9 "$p" 2>/dev/null
    done
}
trap cleanup EXIT
trap 'note "interrupted"; exit 130' INT TERM

# ------------------------------------------------------------------ build
if [[ $BUILD == 1 ]]; then
    note "building the extension"
    (cd "$ROOT" && cargo build --release) >&2 || die "cargo build (extension) failed"
    note "building the load generator"
    cargo build --release --manifest-path "$BENCH/loadgen/Cargo.toml" >&2 || die "cargo build (loadgen) failed"
    if [[ $SERVERS == *node* ]]; then
        note "npm install"
        npm install --prefix "$BENCH" --no-audit --no-fund >&2 || die "npm install failed"
    fi
fi
[[ -x $LOADGEN ]] || die "no $LOADGEN (run with BUILD=1)"
[[ $SERVERS != *tcllib* || -f $TCLLIB_DIR/websocket/websocket.tcl ]] || die "no tcllib websocket in $TCLLIB_DIR"
[[ $SERVERS != *node* || -d $BENCH/node_modules/ws ]] || die "no $BENCH/node_modules/ws (npm install --prefix bench)"
[[ $SERVERS != *python* ]] || "$PYTHON" -c 'import websockets.asyncio.server' 2>/dev/null \
    || die "no Python websockets >= 13 for $PYTHON"

# Servers and loadgen need many descriptors for the idle scenario.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
if [[ $NOFILE != unlimited && $IDLE_CONNS -gt $((NOFILE - 64)) && $SCENARIOS == *idle* ]]; then
    note "warning: RLIMIT_NOFILE is $NOFILE, too low for IDLE_CONNS=$IDLE_CONNS"
fi
if [[ $NOFILE != unlimited && $ACTIVE_CONNS -gt $((NOFILE - 64)) && ( $SCENARIOS == *active_deflate* || $SCENARIOS == *quiet_deflate* ) ]]; then
    note "warning: RLIMIT_NOFILE is $NOFILE, too low for ACTIVE_CONNS=$ACTIVE_CONNS"
fi

# Pinning (skipped when the cores don't exist).
NCPU=$(nproc)
pin_server=(); pin_loadgen=(); pin_same=()
if command -v taskset >/dev/null && (( NCPU > SERVER_CPU && NCPU > LOADGEN_CPU )); then
    pin_server=(taskset -c "$SERVER_CPU"); pin_loadgen=(taskset -c "$LOADGEN_CPU")
    pin_same=(taskset -c "$SERVER_CPU")
else
    note "warning: not pinning (nproc=$NCPU)"
fi

mkdir -p "$LOGDIR"
: > "$JSONL"

# ------------------------------------------------------------------ servers
# start_server NAME LOGBASE [SCENARIO] -> sets SRV_PID, SRV_PORT (empty on failure)
start_server() {
    local name=$1 log=$2 scen=${3:-} cmd node_deflate=0
    case $scen in deflate*|*_deflate) node_deflate=1 ;; esac
    SRV_PID=; SRV_PORT=
    case $name in
        tcllib) cmd=(env WEBSOCKET_PKG="$TCLLIB_DIR" BENCH_EXPECT_VERSION=1.4.2
                     "$TCLSH" "$BENCH/echo_server.tcl" -port 0 -quiet 1) ;;
        ours)   cmd=(env -u WEBSOCKET_PKG BENCH_EXPECT_VERSION=1.7.0
                     "$TCLSH" "$BENCH/echo_server.tcl" -port 0 -quiet 1) ;;
        ours_nodeflate) cmd=(env -u WEBSOCKET_PKG BENCH_EXPECT_VERSION=1.7.0
                     "$TCLSH" "$BENCH/echo_server.tcl" -port 0 -quiet 1 -deflate 0) ;;
        node)   cmd=("$NODE" "$BENCH/node/server.js" -port 0 -deflate "$node_deflate") ;;
        python) cmd=("$PYTHON" "$BENCH/python/server.py" -port 0) ;;
    esac
    # exec: taskset execs the server, so $! is the server's own pid.
    "${pin_server[@]}" "${cmd[@]}" >"$log.out" 2>"$log.err" </dev/null &
    SRV_PID=$!
    SERVER_PIDS+=("$SRV_PID")
    local i
    for ((i = 0; i < 100; i++)); do           # <= 10 s
        if grep -q '^listening on ' "$log.out" 2>/dev/null; then
            SRV_PORT=$(sed -n 's|^listening on ws://[^ ]*:\([0-9][0-9]*\)/$|\1|p' "$log.out" | head -n1)
            break
        fi
        kill -0 "$SRV_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [[ $name != node && $name != python && -n $SRV_PORT ]]; then
        # the wrapper prints the loaded version once the event loop runs
        for ((i = 0; i < 50; i++)); do
            grep -q '^websocket ' "$log.err" 2>/dev/null && break
            kill -0 "$SRV_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$SRV_PID" 2>/dev/null || SRV_PORT=
    fi
}

stop_server() {
    local pid=$1 i
    kill "$pid" 2>/dev/null
    for ((i = 0; i < 30; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    local rc=$?
    local keep=() p
    for p in "${SERVER_PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    SERVER_PIDS=("${keep[@]+"${keep[@]}"}")
    return $rc
}

# ------------------------------------------------------------------ one run
json_str() { jq -Rn --arg s "$1" '$s'; }

run_one() {
    local round=$1 scen=$2 name=$3
    local log=$LOGDIR/$scen-$name-r$round
    local args=() maxt mode=$scen pin=("${pin_loadgen[@]}")
    case $scen in
        pipelined) args=(--duration "$DURATION" --inflight 100 --size 32); maxt=$((DUR_INT + 20)) ;;
        rtt)       args=(--count "$RTT_COUNT" --size 32); maxt=120 ;;
        rtt_same_core) args=(--count "$RTT_COUNT" --size 32); maxt=120; mode=rtt
                   pin=("${pin_same[@]}") ;;
        large)     args=(--duration "$DURATION" --size 1048576); maxt=$((DUR_INT + 30)) ;;
        conns)     args=(--conns 200 --echoes 50 --repeat 7 --size 32 --batch 50); maxt=90 ;;
        idle)      args=(--conns "$IDLE_CONNS" --batch 200); maxt=$((60 + IDLE_CONNS / 100)) ;;
        deflate1k) args=(--duration "$DURATION" --inflight 50 --size 1024); maxt=$((DUR_INT + 20)); mode=deflate ;;
        deflate64k) args=(--duration "$DURATION" --inflight 8 --size 65536); maxt=$((DUR_INT + 20)); mode=deflate ;;
        idle_deflate) args=(--conns "$IDLE_CONNS" --batch 200 --deflate 1); maxt=$((60 + IDLE_CONNS / 100)); mode=idle ;;
        active_deflate) args=(--conns "$ACTIVE_CONNS" --batch 200 --deflate 1 --active 1)
                   maxt=$((60 + ACTIVE_CONNS / 50)); mode=idle ;;
        quiet_deflate) args=(--conns "$ACTIVE_CONNS" --batch 200 --deflate 1 --active 1 --settle "$QUIET_SECS")
                   maxt=$((60 + ACTIVE_CONNS / 50 + QUIET_SECS * 2)); mode=idle ;;
    esac
    # ours_nodeflate declines the offer on purpose: its idle figures are the baseline.
    [[ $name == ours_nodeflate && $scen == *_deflate ]] && args+=(--require-deflate 0)
    start_server "$name" "$log" "$scen"
    local line rc=0 alive=true
    if [[ -z $SRV_PORT ]]; then
        line="{\"scenario\":\"$scen\",\"ok\":false,\"error\":\"server did not start\"}"
        alive=false
    else
        # The load generator's own 1 MiB buffers must not be unmapped and
        # faulted back in for every message (glibc's defaults do that):
        # these settings apply to the load generator only, whatever server runs.
        line=$(MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=67108864 \
            timeout -k 5 $((maxt + 15)) "${pin[@]}" "$LOADGEN" "$mode" --port "$SRV_PORT" \
                   --server-pid "$SRV_PID" --max-time "$maxt" --label "$name r$round" "${args[@]}" \
                   2>"$log.loadgen.err" | tail -n1)
        rc=$?
        if ! jq -e . >/dev/null 2>&1 <<<"$line"; then
            line="{\"scenario\":\"$scen\",\"ok\":false,\"error\":\"loadgen gave no result (rc=$rc)\"}"
        fi
        kill -0 "$SRV_PID" 2>/dev/null || alive=false
    fi
    local srv_rc=
    if [[ -n $SRV_PID ]]; then
        stop_server "$SRV_PID"
        local stop_rc=$?
        [[ $alive == true ]] || srv_rc=$stop_rc    # e.g. 134 = SIGABRT
    fi
    local tail_err
    tail_err=$(grep -v '^websocket ' "$log.err" 2>/dev/null | tail -n 3 | cut -c1-300)
    local version
    version=$(sed -n 's/^websocket \([0-9.]*\):.*/\1/p' "$log.err" 2>/dev/null | head -n1)
    jq -c --arg server "$name" --argjson round "$round" --arg version "$version" \
          --argjson alive "$alive" --arg srv_rc "$srv_rc" --arg tail "$tail_err" --arg log "$log" \
          --arg scen "$scen" \
          '{server: $server, round: $round, pkg_version: $version, server_survived: $alive,
            server_exit: $srv_rc, server_stderr_tail: $tail, log: $log} + . + {scenario: $scen}' <<<"$line" >>"$JSONL"
    tail -n1 "$JSONL" | jq -r '"  \(.server) \(.scenario) r\(.round): " +
        (if .ok then "ok" else "FAIL: \(.error // "?")" end) +
        (if .server_survived then "" else " [server died: \(.server_stderr_tail)]" end)' >&2
}

# ------------------------------------------------------------------ main loop
read -r -a SRV_LIST <<<"$SERVERS"
note "results: $REPORT"
note "rounds=$ROUNDS duration=${DURATION}s idle_conns=$IDLE_CONNS active_conns=$ACTIVE_CONNS rtt_count=$RTT_COUNT scenarios='$SCENARIOS' servers='$SERVERS'"
for ((r = 1; r <= ROUNDS; r++)); do
    for scen in $SCENARIOS; do
        n=${#SRV_LIST[@]}
        for ((k = 0; k < n; k++)); do
            name=${SRV_LIST[$(( (k + r - 1) % n ))]}
            run_one "$r" "$scen" "$name"
        done
    done
done

# ------------------------------------------------------------------ report
{
    echo "# WebSocket echo benchmark, $STAMP"
    echo
    echo "- host: $(uname -srm), nproc=$NCPU, load average at start: $LOAD_START, at end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- tclsh: $(echo 'puts [info patchlevel]' | "$TCLSH" 2>/dev/null), node: $("$NODE" --version 2>/dev/null), ws: $(jq -r .version "$BENCH/node_modules/ws/package.json" 2>/dev/null)$([[ $SERVERS == *python* ]] && echo ", python: $("$PYTHON" -c 'import sys, websockets; print(sys.version.split()[0], "websockets", websockets.__version__)' 2>/dev/null)")"
    echo "- ROUNDS=$ROUNDS DURATION=$DURATION IDLE_CONNS=$IDLE_CONNS RTT_COUNT=$RTT_COUNT SCENARIOS='$SCENARIOS'$([[ $SCENARIOS == *active_deflate* || $SCENARIOS == *quiet_deflate* ]] && echo " ACTIVE_CONNS=$ACTIVE_CONNS QUIET_SECS=$QUIET_SECS")"
    echo "- server pinned to: ${pin_server[*]:-none}; loadgen pinned to: ${pin_loadgen[*]:-none}"
    echo "- commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (dirty)')"
    echo
    "$NODE" "$BENCH/summarize.js" "$JSONL"
    echo
    echo "Raw results: \`${JSONL#$ROOT/}\`, logs: \`${LOGDIR#$ROOT/}/\`"
} | tee "$REPORT"

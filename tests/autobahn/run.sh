#!/usr/bin/env bash
# Autobahn|Testsuite (cases 1-10, RFC 6455, and 12-13, permessage-deflate) against this
# package in both roles:
#   server role: examples/echo_server.tcl  <-  wstest -m fuzzingclient
#   client role: tests/autobahn/client.tcl ->  wstest -m fuzzingserver
# Prints a per-role summary and a last line "autobahn: N passed, M failed";
# exits 1 if any case is FAILED or UNIMPLEMENTED (behavior or behaviorClose),
# if a role's report holds fewer or more cases than expected (a run that
# stopped early must not pass), or if a role's driver failed (wstest
# fuzzingclient, or client.tcl, which exits non-zero when a case did not
# end in a clean disconnect or the count of cases it ran is short).
#
# Environment:
#   AUTOBAHN_HOME     wstest install cache (see setup.sh)
#   AUTOBAHN_REPORTS  where the reports go (default target/autobahn, wiped first)
#   AUTOBAHN_CASES    space-separated case patterns (default "1.* ... 10.* 12.* 13.*")
#   AUTOBAHN_PARALLEL 1: both roles at once (default with 2+ CPUs); 0: one after the other
#   AUTOBAHN_ROLE_LIMIT seconds a role's driver may take (default 2400)
#   AUTOBAHN_EXPECTED cases each role must report (default: expected_cases
#                     below for the default patterns; with other patterns,
#                     unchecked unless given)
#   AUTOBAHN_ROLES    "server client" (default both)
#   TCLSH             tclsh to use (default tclsh)
set -euo pipefail

# Cases 1-13 of Autobahn|Testsuite 25.10.1 per role: 301 in 1-10, and 216
# more in 12-13 (permessage-deflate).
expected_cases=517
default_cases="1.* 2.* 3.* 4.* 5.* 6.* 7.* 8.* 9.* 10.* 12.* 13.*"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
reports=${AUTOBAHN_REPORTS:-$root/target/autobahn}
# The default run is two phases: cases 1-10 with one role at a time (their
# 16 MiB messages must not meet a second wstest's load: Autobahn gives a
# closing handshake 1 s), then 12-13 with both roles at once (wstest's
# compression is slow, about a core per role). Each phase checks its count.
if [[ -z ${AUTOBAHN_CASES:-} ]]; then
    base=${AUTOBAHN_REPORTS:-$root/target/autobahn}
    rc=0
    AUTOBAHN_CASES="1.* 2.* 3.* 4.* 5.* 6.* 7.* 8.* 9.* 10.*" AUTOBAHN_EXPECTED=301 \
        AUTOBAHN_PARALLEL=0 AUTOBAHN_REPORTS="$base/rfc6455" bash "$0" || rc=1
    AUTOBAHN_CASES="12.* 13.*" AUTOBAHN_EXPECTED=216 \
        AUTOBAHN_REPORTS="$base/deflate" bash "$0" || rc=1
    if ((rc == 0)); then
        echo "autobahn: cases 1-13 ($expected_cases per role) clean in both roles"
    else
        echo "autobahn: FAILED (see the phases above)"
    fi
    exit $rc
fi
cases=${AUTOBAHN_CASES:-$default_cases}
if [[ $cases == "$default_cases" ]]; then
    expected=${AUTOBAHN_EXPECTED:-$expected_cases}
else
    expected=${AUTOBAHN_EXPECTED:-}
fi
roles=${AUTOBAHN_ROLES:-"server client"}
tclsh=${TCLSH:-tclsh}
agent=tcl-websocket
start=$SECONDS

pids=()
driver_failed=()
cleanup() {
    local p
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        wait "$p" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "run.sh: $*" >&2; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_port PORT PID SECONDS: until something listens on 127.0.0.1:PORT.
wait_port() {
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        kill -0 "$2" 2>/dev/null || return 1
        if python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$1" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

cases_json() {
    python3 -c 'import json,sys; print(json.dumps(sys.argv[1:]))' $cases
}

wstest=$("$here/setup.sh" | tail -n 1)
py2=$(dirname "$wstest")/python
wstest_cmd=("$py2" "$here/wstest_loopback.py")

rm -rf "$reports"
mkdir -p "$reports"

log "building the extension (cargo build --release)"
if ! (cd "$root" && cargo build --release) >"$reports/cargo.log" 2>&1; then
    cat "$reports/cargo.log" >&2; exit 1
fi
log "reports in $reports"

set -f   # the case patterns contain '*'

# Each role runs in a subshell of its own (the two may run at once: each
# wstest takes about one core, and with permessage-deflate, sections 12 and
# 13, it is wstest's own compression that takes the time); a subshell ends
# what it started when it ends or is told to.
role_limit=${AUTOBAHN_ROLE_LIMIT:-2400}
server_role() {
    pids=()
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    port=$(free_port)
    # 9.1.6 / 9.2.6 send 16 MiB (16777216-byte) messages, the largest of
    # cases 1-10; tcllib's default -maxlength is exactly that, and a message
    # of exactly -maxlength bytes must pass.  Set it explicitly so the
    # boundary is what is tested, whatever the default.
    "$tclsh" "$root/examples/echo_server.tcl" -host 127.0.0.1 -port "$port" -quiet 1 \
        -maxlength 16777216 >"$reports/echo_server.out" 2>"$reports/echo_server.err" &
    server_pid=$!
    pids+=("$server_pid")
    if ! wait_port "$port" "$server_pid" 20; then
        log "echo server did not start"; cat "$reports/echo_server.err" >&2; return 1
    fi
    cat >"$reports/fuzzingclient.json" <<JSON
{
  "outdir": "$reports/server",
  "servers": [{"agent": "$agent", "url": "ws://127.0.0.1:$port/echo"}],
  "cases": $(cases_json),
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
JSON
    log "server role: wstest -m fuzzingclient against ws://127.0.0.1:$port/echo"
    t0=$SECONDS
    # In the background and waited for, so that the EXIT trap can end it.
    (cd "$reports" && exec timeout "$role_limit" "${wstest_cmd[@]}" -m fuzzingclient -s "$reports/fuzzingclient.json") \
        >"$reports/fuzzingclient.log" 2>&1 &
    pids+=("$!")
    rc=0; wait "$!" || rc=$?
    if ((rc != 0)); then
        log "wstest fuzzingclient exited with $rc (see $reports/fuzzingclient.log)"
        echo "server role: wstest fuzzingclient exited with $rc" >>"$reports/driver_failed"
    fi
    log "server role took $((SECONDS - t0)) s"
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
}

client_role() {
    pids=()
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    port=$(free_port)
    cat >"$reports/fuzzingserver.json" <<JSON
{
  "url": "ws://127.0.0.1:$port",
  "outdir": "$reports/client",
  "cases": $(cases_json),
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
JSON
    (cd "$reports" && exec "${wstest_cmd[@]}" -m fuzzingserver -u 0 -s "$reports/fuzzingserver.json") \
        >"$reports/fuzzingserver.log" 2>&1 &
    fuzz_pid=$!
    pids+=("$fuzz_pid")
    if ! wait_port "$port" "$fuzz_pid" 30; then
        log "wstest fuzzingserver did not start"; cat "$reports/fuzzingserver.log" >&2; return 1
    fi
    log "client role: client.tcl against wstest -m fuzzingserver on ws://127.0.0.1:$port"
    t0=$SECONDS
    timeout "$role_limit" "$tclsh" "$here/client.tcl" -url "ws://127.0.0.1:$port" -agent "$agent" \
        -timeout 60 -pkgdir "$root" 2>"$reports/client.err" &
    pids+=("$!")
    rc=0; wait "$!" || rc=$?
    if ((rc != 0)); then
        log "client.tcl exited with $rc (see $reports/client.err)"
        echo "client role: client.tcl exited with $rc" >>"$reports/driver_failed"
    fi
    log "client role took $((SECONDS - t0)) s"
    kill "$fuzz_pid" 2>/dev/null || true
    wait "$fuzz_pid" 2>/dev/null || true
}

role_pids=()
for role in $roles; do
    case $role in
        server) server_role || echo "server role: could not start" >>"$reports/driver_failed" & ;;
        client) client_role || echo "client role: could not start" >>"$reports/driver_failed" & ;;
        *) log "unknown role $role"; exit 2 ;;
    esac
    role_pids+=("$!")
    pids+=("$!")
    # One role at a time unless AUTOBAHN_PARALLEL=1 (the default with two
    # or more CPUs).
    if [[ ${AUTOBAHN_PARALLEL:-$(( $(nproc) >= 2 ))} != 1 ]]; then
        wait "$!" || true
    fi
done
for p in "${role_pids[@]}"; do
    wait "$p" || true
done
if [[ -s "$reports/driver_failed" ]]; then
    mapfile -t driver_failed <"$reports/driver_failed"
fi

set +f

status=0
python3 - "$reports" "$roles" "$expected" <<'PY' || status=$?
import json, os, sys

reports, roles = sys.argv[1], sys.argv[2].split()
expected = int(sys.argv[3]) if sys.argv[3] else None
KINDS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
PASS = {"OK", "NON-STRICT", "INFORMATIONAL"}
# Worst last: a case is classed by the worse of behavior and behaviorClose.
RANK = {k: i for i, k in enumerate(["OK", "INFORMATIONAL", "NON-STRICT", "UNIMPLEMENTED", "FAILED"])}

def case_key(cid):
    return tuple(int(p) for p in cid.split("."))

passed = failed = 0
bad = False
rows = []
for role in roles:
    path = os.path.join(reports, role, "index.json")
    if not os.path.exists(path):
        print("%s role: no report (%s missing)" % (role, path))
        bad = True
        failed += 1
        continue
    with open(path) as f:
        index = json.load(f)
    results = {}
    for agent, agent_cases in index.items():
        results.update(agent_cases)
    counts = dict.fromkeys(KINDS, 0)
    others = []
    for cid in sorted(results, key=case_key):
        r = results[cid]
        b, bc = r.get("behavior", "?"), r.get("behaviorClose", "?")
        # A case counts as its worse verdict of behavior and behaviorClose.
        worst = max((b, bc), key=lambda k: RANK.get(k, len(KINDS)))
        counts[worst if worst in counts else "FAILED"] += 1
        if worst in PASS:
            passed += 1
        else:
            failed += 1
            bad = True
        if b != "OK" or bc != "OK":
            others.append((cid, b, bc, r.get("remoteCloseCode"), r.get("duration")))
    rows.append((role, len(results), counts))
    if expected is not None and len(results) != expected:
        print("%s role: %d cases in the report, %d expected" % (role, len(results), expected))
        bad = True
        if len(results) < expected:
            failed += expected - len(results)
    print("%s role (%d cases): %s" % (role, len(results),
          ", ".join("%s %d" % (k, counts[k]) for k in KINDS)))
    for cid, b, bc, code, dur in others:
        print("  %-8s behavior=%-14s behaviorClose=%-14s remoteCloseCode=%s duration=%sms"
              % (cid, b, bc, code, dur))

print()
print("%-8s %6s %4s %10s %13s %13s %6s" % ("role", "cases", "OK", "NON-STRICT",
      "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"))
for role, n, c in rows:
    print("%-8s %6d %4d %10d %13d %13d %6d" % (role, n, c["OK"], c["NON-STRICT"],
          c["INFORMATIONAL"], c["UNIMPLEMENTED"], c["FAILED"]))
print("autobahn: %d passed, %d failed" % (passed, failed))
sys.exit(1 if bad else 0)
PY
for d in ${driver_failed[@]+"${driver_failed[@]}"}; do
    echo "autobahn: $d"
    status=1
done
log "total time $((SECONDS - start)) s"
exit $status

#!/usr/bin/env bash
# valgrind.sh -- runs tests/peers/lifecycle.tcl (connections in the main
# interpreter, in a deleted child interpreter, in a released thread, and
# open at `exit`) in tclsh under valgrind memcheck, against this checkout's
# release build.
#
#   bash tests/valgrind.sh            (TCLSH=... to pick another tclsh)
#
# Passes (exit 0, last line "valgrind.sh: ok") when
#   - the script ran to its end (it prints "step 4 ok" just before `exit`),
#   - valgrind's exit status is 0 (--error-exitcode=99 makes any error 99),
#   - the log says "ERROR SUMMARY: 0 errors",
#   - and no error block in the log has a libwebsocket frame.
# tests/valgrind.supp suppresses known noise of glibc/Tcl that involves no
# libwebsocket frame (see the comments there). Errors are definite leaks and
# every memcheck error (invalid reads/writes, uninitialised values, bad
# frees); possible leaks are not errors (threads of the tokio runtime and
# connections left open at exit are still allocated when the process ends).
# On failure the log is printed. Bounded: valgrind is killed after 120 s.
set -u
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
tclsh="${TCLSH:-tclsh}"
# The library for that tclsh: libwebsocket (8.6) or libtcl9websocket (9).
if [ "$(echo 'puts [package vsatisfies [package provide Tcl] 9-]' | "$tclsh")" = 1 ]; then
    lib="$root/target/release/libtcl9websocket.so"
else
    lib="$root/target/release/libwebsocket.so"
fi

if ! command -v valgrind >/dev/null 2>&1; then
    echo "valgrind.sh: valgrind is not installed" >&2
    exit 2
fi
if [ ! -f "$lib" ]; then
    echo "valgrind.sh: $lib not built (make, or make TCL_CONFIG=... for Tcl 9)" >&2
    exit 2
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/wsvalgrind.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
log="$tmp/valgrind.log"
out="$tmp/out.txt"

timeout -k 5 120 valgrind \
    --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
    --show-leak-kinds=definite --num-callers=50 \
    --suppressions="$here/valgrind.supp" --log-file="$log" \
    "$tclsh" "$here/peers/lifecycle.tcl" "$root" >"$out" 2>&1
status=$?

cat "$out"
summary="$(grep -o 'ERROR SUMMARY: [0-9]* errors' "$log" | tail -n 1)"
# Error blocks (blank-line separated, with a stack) that involve our library.
ours="$(awk '
    { sub(/^==[0-9]+== ?/, "") }
    /^$/ { if (blk ~ /(at|by) 0x/ && blk ~ /websocket::|libwebsocket|libtcl9websocket|shim\.c/) n++; blk = ""; next }
    { blk = blk "\n" $0 }
    END { if (blk ~ /(at|by) 0x/ && blk ~ /websocket::|libwebsocket|libtcl9websocket|shim\.c/) n++; print n + 0 }
' "$log")"
echo "valgrind.sh: exit status $status; ${summary:-no ERROR SUMMARY}; $ours error(s) involve libwebsocket"
grep -E 'definitely lost:|suppressed:' "$log" | sed 's/^==[0-9]*== */valgrind.sh:   /'

ok=1
grep -q '^step 4 ok$' "$out" || { echo "valgrind.sh: lifecycle.tcl did not run to its end"; ok=0; }
[ "$status" -eq 0 ] || ok=0
[ "$summary" = "ERROR SUMMARY: 0 errors" ] || ok=0
[ "$ours" -eq 0 ] || ok=0
if [ $ok -eq 1 ]; then
    echo "valgrind.sh: ok"
    exit 0
fi
echo "valgrind.sh: FAILED; valgrind log:"
cat "$log"
exit 1

#!/usr/bin/env bash
# tools/get-tcl9.sh PREFIX -- installs the Tcl 9.0 that the Tcl 9 build and
# tests use, on a Debian 12 (bookworm) machine, from Debian 13 (trixie)'s
# binary packages fetched with apt-get:
#
#   PREFIX/bin/tclsh9.0             a threaded tclsh 9.0
#   PREFIX/lib/tclConfig.sh         for `make TCL_CONFIG=PREFIX/lib/tclConfig.sh`
#   PREFIX/include/tcl.h ...        headers; PREFIX/lib/libtclstub9.0.a
#   PREFIX/lib/tcl9.0, tcl9/9.0     script library and modules (tcltest, http)
#   PREFIX/lib/thread3.0.1          Thread 3 (tests that start threads)
#   PREFIX/lib/tcllib2.0            tcllib 2.0 (websocket 1.6, the upstream
#                                   reference; tests check version selection)
#
# Idempotent: when PREFIX already holds a working install made by this
# script (same STAMP), it returns at once. The system's apt configuration and
# dpkg database are not touched: apt runs with private state in a temporary
# folder. Trixie's libtcl9.0.so needs glibc 2.38 (bookworm has 2.36), so
# tclsh9.0 is linked here from trixie's static libtcl9.0.a and tclAppInit.c.
# Needs: apt-get, dpkg-deb, gcc, zlib (libz.so), realpath.
set -euo pipefail
STAMP="websocket-get-tcl9 1"
PREFIX=$(realpath -m "${1:?usage: tools/get-tcl9.sh PREFIX}")
TCLSH=$PREFIX/bin/tclsh9.0

check() {
    echo 'puts "tclsh9.0 [info patchlevel] threaded=[tcl::pkgconfig get threaded] tcltest=[package require tcltest] Thread=[package require Thread] tcllib-websocket=[package require websocket]"' \
        | "$TCLSH"
}

if [ -x "$TCLSH" ] && [ "$(cat "$PREFIX/.get-tcl9.stamp" 2>/dev/null)" = "$STAMP" ] \
    && [ -f "$PREFIX/lib/tclConfig.sh" ] && check >/dev/null 2>&1; then
    echo "get-tcl9.sh: Tcl 9 already in $PREFIX"
    exit 0
fi

MULTIARCH=$(gcc -print-multiarch 2>/dev/null || true)
[ -n "$MULTIARCH" ] || MULTIARCH=$(dpkg-architecture -qDEB_HOST_MULTIARCH)

W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
chmod 755 "$W"
mkdir -p "$W/sp" "$W/lists/partial" "$W/cache/archives/partial" "$W/debs" "$W/root"
# The machine's own Debian mirror (the first URIs line of its apt sources).
MIRROR=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
[ -n "$MIRROR" ] || MIRROR=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$MIRROR" ] || { echo "get-tcl9.sh: no Debian mirror in the apt sources" >&2; exit 1; }
cat >"$W/sp/trixie.sources" <<SOURCES
Types: deb
URIs: $MIRROR
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
A=(-o Dir::Etc::sourcelist=/dev/null -o "Dir::Etc::sourceparts=$W/sp"
   -o "Dir::State::Lists=$W/lists" -o "Dir::Cache=$W/cache" -o Dir::State::status=/dev/null)
apt-get -q "${A[@]}" update >/dev/null
chmod 777 "$W/debs"   # apt's _apt download sandbox must be able to write here
(cd "$W/debs" && apt-get -q "${A[@]}" download libtcl9.0 tcl9.0-dev libtommath1 tcl9.0-thread tcllib >/dev/null)
for f in "$W"/debs/*.deb; do dpkg-deb -x "$f" "$W/root"; done

R=$W/root/usr
L=$R/lib/$MULTIARCH
rm -f "$PREFIX/.get-tcl9.stamp"
mkdir -p "$PREFIX/bin" "$PREFIX/lib/tcl9/9.0" "$PREFIX/include"
cp -a "$R/lib/tcl9.0" "$PREFIX/lib/"
cp -a "$R/lib/tcl9.0/tcl9/." "$PREFIX/lib/tcl9/9.0/"
cp -a "$R"/include/tcl9.0/*.h "$PREFIX/include/"
cp -a "$L/libtclstub9.0.a" "$L/libtcl9.0.a" "$L"/libtommath.so.1* "$PREFIX/lib/"
ln -sf libtommath.so.1 "$PREFIX/lib/libtommath.so"
cp -a "$R"/lib/tcltk/"$MULTIARCH"/thread3.* "$PREFIX/lib/"
cp -a "$R"/share/tcltk/tcllib* "$PREFIX/lib/"
gcc -O2 -DMODULE_SCOPE=extern -I"$PREFIX/include" -c "$PREFIX/lib/tcl9.0/tclAppInit.c" -o "$W/tclAppInit.o"
gcc -o "$TCLSH" "$W/tclAppInit.o" "$PREFIX/lib/libtcl9.0.a" -L"$PREFIX/lib" \
    -Wl,-rpath,"$PREFIX/lib" -ltommath -lz -lpthread -lm -ldl -Wl,--export-dynamic
# tclConfig.sh with this prefix's paths (build.rs reads TCL_INCLUDE_SPEC and
# TCL_STUB_LIB_PATH from it).
sed -e "s#/usr/include/tcl9.0/tcl-private#$PREFIX/include#g; s#/usr/include/tcl9.0#$PREFIX/include#g" \
    -e "s#/usr/lib/$MULTIARCH#$PREFIX/lib#g" \
    -e "s#^TCL_PREFIX='/usr'#TCL_PREFIX='$PREFIX'#; s#^TCL_EXEC_PREFIX='/usr'#TCL_EXEC_PREFIX='$PREFIX'#" \
    "$L/tcl9.0/tclConfig.sh" >"$PREFIX/lib/tclConfig.sh"
check
echo "$STAMP" >"$PREFIX/.get-tcl9.stamp"

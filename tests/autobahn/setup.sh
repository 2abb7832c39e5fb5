#!/usr/bin/env bash
# Idempotently install Autobahn|Testsuite (wstest, Python 2.7 only) into a
# cache directory.  Needs nothing but PyPI.
#
#   AUTOBAHN_HOME   cache dir (default $HOME/.cache/websocket-autobahn)
#   PYTHON2         a Python 2.7 interpreter (default: found on PATH/pyenv)
#   PYTHON3         a Python 3 interpreter used to bootstrap virtualenv
#
# On success prints nothing but the path of wstest on the last line of stdout.
set -euo pipefail

AUTOBAHN_HOME=${AUTOBAHN_HOME:-$HOME/.cache/websocket-autobahn}
# Bump when the pin set below changes so existing caches are rebuilt.
STAMP_VERSION=1

boot=$AUTOBAHN_HOME/boot        # python3 venv holding an old virtualenv
env2=$AUTOBAHN_HOME/py27        # the python2.7 env with wstest
stamp=$env2/.autobahn-ok-$STAMP_VERSION

if [[ -f $stamp && -x $env2/bin/wstest ]]; then
    echo "$env2/bin/wstest"
    exit 0
fi

find_python2() {
    local c
    for c in "${PYTHON2:-}" python2.7 python2 \
             "$HOME"/.pyenv/versions/2.7*/bin/python \
             /root/.pyenv/versions/2.7*/bin/python \
             /usr/bin/python2.7 /usr/local/bin/python2.7; do
        [[ -n $c ]] || continue
        if command -v "$c" >/dev/null 2>&1 &&
           "$c" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (2, 7) else 1)' 2>/dev/null; then
            command -v "$c"
            return 0
        fi
    done
    return 1
}

py2=$(find_python2) || { echo "setup.sh: no Python 2.7 found (set PYTHON2)" >&2; exit 1; }
py3=${PYTHON3:-python3}
command -v "$py3" >/dev/null || { echo "setup.sh: no python3 found (set PYTHON3)" >&2; exit 1; }

mkdir -p "$AUTOBAHN_HOME"
# One installer at a time per cache (parallel CI jobs on one runner).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$AUTOBAHN_HOME/.lock"
    flock 9
    if [[ -f $stamp && -x $env2/bin/wstest ]]; then
        echo "$env2/bin/wstest"
        exit 0
    fi
fi
exec 3>&1 1>&2      # all chatter to stderr; the wstest path goes to fd 3

echo "setup.sh: installing Autobahn|Testsuite into $AUTOBAHN_HOME (python2: $py2)"

# virtualenv >= 20.22 can no longer create Python 2 environments.
if [[ ! -x $boot/bin/virtualenv ]]; then
    rm -rf "$boot"
    "$py3" -m venv "$boot"
    "$boot/bin/pip" install -q 'virtualenv<20.22'
fi

rm -rf "$env2"
"$boot/bin/virtualenv" -q -p "$py2" "$env2"

# Pinned, known-working set (resolved on Python 2.7.18 with pip 20.3.4).
# Pinning everything keeps the resolver from wandering onto releases that
# dropped Python 2.  wsaccel and ujson build from sdist: a C compiler and the
# Python 2.7 headers are needed (pyenv builds have them).
req=$AUTOBAHN_HOME/requirements-py27.txt
cat > "$req" <<'REQ'
autobahntestsuite==25.10.1
attrs==21.4.0
autobahn==0.10.9
Automat==22.10.0
cffi==1.15.1
constantly==15.1.0
cryptography==3.3.2
enum34==1.1.10
hyperlink==21.0.0
idna==2.10
incremental==16.10.1
ipaddress==1.0.23
Jinja2==2.11.3
klein==17.10.0
linecache2==1.0.0
MarkupSafe==1.1.1
pyasn1==0.5.1
pyasn1-modules==0.3.0
pycparser==2.21
PyHamcrest==1.10.1
pyOpenSSL==19.1.0
service-identity==18.1.0
six==1.16.0
traceback2==1.4.0
Twisted==19.10.0
txaio==2.1.0
typing==3.10.0.0
ujson==2.0.3
unittest2==1.1.0
Werkzeug==1.0.1
wsaccel==0.6.6
zope.interface==4.6.0
setuptools==44.0.0
argparse==1.4.0
REQ
"$env2/bin/pip" install -q --disable-pip-version-check -r "$req"

"$env2/bin/wstest" --help >/dev/null
touch "$stamp"
echo "$env2/bin/wstest" >&3

# Python 2.7: run wstest with its WebSocket listener bound to 127.0.0.1
# instead of all interfaces (autobahntestsuite passes no interface to
# listenWS, which then binds to '').  Arguments are wstest's.
import sys

import autobahntestsuite.fuzzing as fuzzing

_listenWS = fuzzing.listenWS


def _listen_loopback(factory, contextFactory=None, backlog=50, interface=''):
    return _listenWS(factory, contextFactory, backlog, interface or '127.0.0.1')


fuzzing.listenWS = _listen_loopback

from autobahntestsuite.wstest import run

if __name__ == '__main__':
    sys.argv[0] = 'wstest'
    sys.exit(run())

#!/usr/bin/env python3
"""Reference echo server for bench/run.sh, on Python's `websockets` (>= 13,
asyncio API) with its defaults, so permessage-deflate is negotiated when a
client offers it (compression="deflate": server_max_window_bits=12,
client_max_window_bits=12 when the client allows it, memLevel 5, zlib level
default).

  python3 bench/python/server.py [-port N] [-host 127.0.0.1] [-deflate 0|1]

Port 0 picks a free port.  Prints "listening on ws://HOST:PORT/" on stdout
(the same line as examples/echo_server.tcl), echoes every text and binary
message on any path, and runs until killed.  Keepalive pings are off (the
other servers send none, and the load generator does not answer them);
max_size is 16 MiB like the others.
"""
import asyncio
import signal
import sys

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed


async def echo(ws):
    try:
        async for msg in ws:
            await ws.send(msg)
    except ConnectionClosed:
        pass


async def main():
    opt = {"-port": "8080", "-host": "127.0.0.1", "-deflate": "1"}
    args = sys.argv[1:]
    for i in range(0, len(args) - 1, 2):
        opt[args[i]] = args[i + 1]
    compression = "deflate" if opt["-deflate"] not in ("0", "false", "no", "off") else None
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    async with serve(echo, opt["-host"], int(opt["-port"]), compression=compression,
                     max_size=16 * 1024 * 1024, ping_interval=None, backlog=4096) as server:
        port = server.sockets[0].getsockname()[1]
        sys.stdout.write(f"listening on ws://{opt['-host']}:{port}/\n")
        sys.stdout.flush()
        await stop


if __name__ == "__main__":
    asyncio.run(main())

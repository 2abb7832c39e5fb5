#!/usr/bin/env python3
"""A WebSocket peer for the tcltest suite, built on the `websockets` package
(asyncio API). Every payload crosses the process boundary hex-encoded so the
Tcl side never has to decode JSON string escapes.

  ws_peer.py server [--subprotocols a,b] [--max-size N]
      Echo server on 127.0.0.1, port 0. First stdout line: the port number.
      Then one JSON object per line for what happens:
        {"event": "connect", "path": "/x?q", "subprotocol": "a" | null}
        {"event": "text"|"binary", "hex": "..."}
        {"event": "closed", "code": N | null, "reason_hex": "..."}
      Text and binary messages are echoed, except text messages that start
      with "cmd:", which are commands:
        cmd:close CODE REASON   close the connection with CODE and REASON
        cmd:fragments A B C     send one text message in fragments A, B, C
        cmd:binfragments N K    send N bytes (i % 256) as binary in K fragments
        cmd:big N               send N bytes (i % 256) as one binary message
        cmd:codepoints TEXT     answer with TEXT's code points, hex, spaces between
        cmd:ping HEX            send a ping, report {"event": "pong"} when answered
        cmd:subprotocol         answer with the negotiated subprotocol ("" if none)
      Exits when stdin reaches EOF (the Tcl side closes the pipe).

  ws_peer.py client URL OP ... [--subprotocols a,b]
      Connects and runs the OPs in order, printing JSON lines:
        {"event": "open", "subprotocol": ...}
        {"event": "text"|"binary", "hex": "..."}     (for recv; binary also
            has "len" and "pattern": 1 if the bytes are i % 256; hex is
            empty above 64 KiB)
        {"event": "pong", "ms": N}                  (for ping)
        {"event": "closed", "code": N | null, "reason_hex": "..."}
        {"event": "error", "message": "..."}
      OPs:
        text:HEX      send UTF-8 bytes HEX as a text message
        binary:HEX    send bytes HEX as a binary message
        bigbinary:N   send N bytes (i % 256) as a binary message
        fragments:HEX,HEX,...   send a text message in fragments
        recv          receive one message and print it
        recv_n:N      receive N messages and print them
        ping:HEX      ping with payload HEX and wait (max 5 s) for the pong
        close:CODE:HEX  close with CODE and reason bytes HEX
        wait_close    wait (max 10 s) for the server to close, print "closed"
      At the end prints {"event": "done"} and exits 0.
"""

import asyncio
import json
import os
import sys
import threading

try:
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import serve
    from websockets.exceptions import ConnectionClosed
except ImportError:  # pragma: no cover - the Tcl side checks before running us
    print(json.dumps({"event": "error", "message": "websockets not importable"}), flush=True)
    sys.exit(3)


def out(**obj):
    sys.stdout.write(json.dumps(obj, ensure_ascii=True) + "\n")
    sys.stdout.flush()


def pattern(n):
    return bytes(i % 256 for i in range(n))


def closed_event(ws):
    reason = ws.close_reason or ""
    out(event="closed", code=ws.close_code, reason_hex=reason.encode("utf-8").hex())


def opts_from(argv):
    opts = {"subprotocols": None, "max_size": None, "compression": None}
    rest = []
    i = 0
    while i < len(argv):
        if argv[i] == "--subprotocols":
            opts["subprotocols"] = [p for p in argv[i + 1].split(",") if p]
            i += 2
        elif argv[i] == "--deflate":
            # permessage-deflate with websockets' defaults (window 12 bits
            # for its compressor, client_max_window_bits offered).
            opts["compression"] = "deflate"
            i += 1
        elif argv[i] == "--max-size":
            opts["max_size"] = int(argv[i + 1])
            i += 2
        else:
            rest.append(argv[i])
            i += 1
    return opts, rest


async def server_handler(ws):
    out(event="connect", path=ws.request.path, subprotocol=ws.subprotocol,
        extensions=ws.response.headers.get("Sec-WebSocket-Extensions", ""))
    try:
        async for msg in ws:
            if isinstance(msg, str):
                out(event="text", hex=msg.encode("utf-8").hex())
                if msg.startswith("cmd:"):
                    await server_command(ws, msg[4:])
                else:
                    await ws.send(msg)
            else:
                out(event="binary", hex=msg.hex() if len(msg) <= 4096 else "", len=len(msg))
                await ws.send(msg)
    except ConnectionClosed:
        pass
    closed_event(ws)


async def server_command(ws, cmd):
    word, _, rest = cmd.partition(" ")
    if word == "close":
        code, _, reason = rest.partition(" ")
        await ws.close(int(code), reason)
    elif word == "fragments":
        await ws.send(rest.split(" "))
    elif word == "binfragments":
        n, k = (int(x) for x in rest.split())
        data = pattern(n)
        step = (n + k - 1) // k
        await ws.send([data[i:i + step] for i in range(0, n, step)])
    elif word == "big":
        await ws.send(pattern(int(rest)))
    elif word == "codepoints":
        await ws.send(" ".join("%x" % ord(c) for c in rest))
    elif word == "ping":
        waiter = await ws.ping(bytes.fromhex(rest))
        await asyncio.wait_for(waiter, 5)
        out(event="pong")
    elif word == "subprotocol":
        await ws.send(ws.subprotocol or "")
    else:
        await ws.send("unknown command " + word)


async def run_server(argv):
    opts, _ = opts_from(argv)
    async with serve(
        server_handler,
        "127.0.0.1",
        0,
        subprotocols=opts["subprotocols"],
        max_size=opts["max_size"],
        compression=opts["compression"],
        ping_interval=None,
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        sys.stdout.write("%d\n" % port)
        sys.stdout.flush()
        # Run until the Tcl side closes our stdin (a daemon thread watches it,
        # so a stuck read never keeps the process alive).
        loop = asyncio.get_running_loop()
        eof = asyncio.Event()

        def watch():
            sys.stdin.read()
            loop.call_soon_threadsafe(eof.set)

        threading.Thread(target=watch, daemon=True).start()
        await eof.wait()
        server.close()


async def run_client(argv):
    opts, rest = opts_from(argv)
    url, ops = rest[0], rest[1:]
    try:
        ws = await connect(
            url,
            subprotocols=opts["subprotocols"],
            max_size=opts["max_size"],
            compression=opts["compression"],
            ping_interval=None,
            proxy=None,
            open_timeout=5,
        )
    except Exception as e:  # noqa: BLE001 - reported to the Tcl side
        out(event="error", message="connect: %s: %s" % (type(e).__name__, e))
        out(event="done")
        return
    out(event="open", subprotocol=ws.subprotocol,
        extensions=ws.response.headers.get("Sec-WebSocket-Extensions", ""))
    try:
        for op in ops:
            name, _, arg = op.partition(":")
            if name == "text":
                await ws.send(bytes.fromhex(arg).decode("utf-8"))
            elif name == "binary":
                await ws.send(bytes.fromhex(arg))
            elif name == "bigbinary":
                await ws.send(pattern(int(arg)))
            elif name == "fragments":
                await ws.send([bytes.fromhex(p).decode("utf-8") for p in arg.split(",")])
            elif name in ("recv", "recv_n"):
                for _ in range(int(arg) if arg else 1):
                    msg = await asyncio.wait_for(ws.recv(), 10)
                    if isinstance(msg, str):
                        out(event="text", hex=msg.encode("utf-8").hex())
                    else:
                        out(event="binary", hex=msg.hex() if len(msg) <= 65536 else "",
                            len=len(msg), pattern=int(msg == pattern(len(msg))))
            elif name == "ping":
                t0 = asyncio.get_running_loop().time()
                waiter = await ws.ping(bytes.fromhex(arg))
                await asyncio.wait_for(waiter, 5)
                ms = int((asyncio.get_running_loop().time() - t0) * 1000)
                out(event="pong", ms=ms)
            elif name == "close":
                code, _, reason = arg.partition(":")
                await ws.close(int(code), bytes.fromhex(reason).decode("utf-8"))
                closed_event(ws)
            elif name == "wait_close":
                try:
                    while True:
                        msg = await asyncio.wait_for(ws.recv(), 10)
                        out(event="unexpected", hex=msg.encode("utf-8").hex() if isinstance(msg, str) else msg.hex())
                except ConnectionClosed:
                    pass
                await asyncio.wait_for(ws.wait_closed(), 10)
                closed_event(ws)
            else:
                out(event="error", message="unknown op " + op)
    except ConnectionClosed:
        closed_event(ws)
    except Exception as e:  # noqa: BLE001
        out(event="error", message="%s: %s" % (type(e).__name__, e))
    finally:
        try:
            await asyncio.wait_for(ws.close(), 5)
        except Exception:  # noqa: BLE001
            pass
    out(event="done")


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in ("server", "client"):
        sys.stderr.write(__doc__)
        sys.exit(2)
    mode, argv = sys.argv[1], sys.argv[2:]
    coro = run_server(argv) if mode == "server" else run_client(argv)
    status = 0
    try:
        # A hard bound on the whole run, so a stuck peer never hangs the suite.
        asyncio.run(asyncio.wait_for(coro, 60))
    except asyncio.TimeoutError:
        out(event="error", message="peer timed out")
        status = 1
    sys.stdout.flush()
    os._exit(status)


if __name__ == "__main__":
    main()

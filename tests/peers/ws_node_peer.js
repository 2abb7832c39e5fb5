#!/usr/bin/env node
// A WebSocket peer for the tcltest suite (tests/interop_node.test), built on
// node's `ws` package (v8, installed with `npm install --prefix tests/peers`).
// It speaks the same line protocol as ws_peer.py, so the Tcl side reuses
// its helpers (py_wait, py_events, py_stop): one JSON object per line on
// stdout, every payload hex-encoded (the raw bytes from the wire, so text
// is checked as the UTF-8 that was sent).
//
//   node ws_node_peer.js server
//       Echo server on 127.0.0.1, port 0. First stdout line: the port.
//       Then:
//         {"event": "connect", "path": "/x?q"}
//         {"event": "text"|"binary", "hex": "...", "len": N}
//         {"event": "pong", "hex": "..."}
//         {"event": "closed", "code": N, "reason_hex": "..."}
//       Text and binary messages are echoed, except text messages starting
//       with "cmd:", which are commands:
//         cmd:close CODE REASON   close with CODE and REASON
//         cmd:fragments H1 H2 ..  send one text message whose fragments are
//                                 the bytes H1, H2, ... (hex; a fragment may
//                                 end inside a UTF-8 sequence)
//         cmd:binfragments N K    N bytes (i % 256) as binary, K fragments
//         cmd:big N               N bytes (i % 256) as one binary message
//         cmd:ping HEX            ping with payload HEX; report the pong
//       Exits when stdin reaches EOF.
//
//   node ws_node_peer.js client URL OP ...
//       Connects, runs the OPs in order, prints the events above (plus
//       {"event": "open"}, {"event": "error", "message": ...}) and finally
//       {"event": "done"}; then waits for stdin EOF and exits. OPs:
//         text:HEX  binary:HEX  bigbinary:N  fragments:HEX,HEX,...
//         recv      wait for one message (printed when it arrives)
//         ping:HEX  ping and wait for the pong
//         close:CODE:HEX  close with CODE and reason bytes HEX, wait for
//                         the close to complete
//         wait_close      wait for the other side to close
//
// Binary events above 64 KiB carry "hex": "" and "pattern": 1 if the bytes
// are i % 256. Every wait is bounded (10 s), and the whole run too (60 s).
'use strict';
const { WebSocket, WebSocketServer } = require('ws');
// WS_DEFLATE=1: permessage-deflate, with ws's defaults (both roles).
const DEFLATE = process.env.WS_DEFLATE === '1';

const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

function pattern(n) {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = i & 0xff;
  return b;
}

function report(data, isBinary) {
  const len = data.length;
  const ev = { event: isBinary ? 'binary' : 'text', hex: len <= 65536 ? data.toString('hex') : '', len };
  if (isBinary) ev.pattern = data.equals(pattern(len)) ? 1 : 0;
  out(ev);
}

function reportClose(code, reason) {
  out({ event: 'closed', code, reason_hex: Buffer.from(reason).toString('hex') });
}

function onStdinEof(fn) {
  process.stdin.on('data', () => {});
  process.stdin.on('end', fn);
  process.stdin.resume();
}

// A hard bound on the whole run, so a stuck peer never hangs the suite.
setTimeout(() => { out({ event: 'error', message: 'peer timed out' }); process.exit(1); }, 60000).unref();

// Sends the hex fragments as one text message (raw bytes, opcode text).
function sendFragments(ws, hexes, cb) {
  hexes.forEach((h, i) => {
    const last = i === hexes.length - 1;
    ws.send(Buffer.from(h, 'hex'), { binary: false, fin: last }, last ? cb : undefined);
  });
}

function sendBinFragments(ws, n, k) {
  const data = pattern(n);
  const step = Math.ceil(n / k);
  for (let off = 0; off < n; off += step) {
    ws.send(data.subarray(off, Math.min(n, off + step)), { binary: true, fin: off + step >= n });
  }
}

function runServer() {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: DEFLATE });
  wss.on('listening', () => process.stdout.write(wss.address().port + '\n'));
  wss.on('connection', (ws, req) => {
    out({ event: 'connect', path: req.url, extensions: ws.extensions });
    ws.on('error', (e) => out({ event: 'error', message: String(e.message) }));
    ws.on('pong', (d) => out({ event: 'pong', hex: d.toString('hex') }));
    ws.on('close', reportClose);
    ws.on('message', (data, isBinary) => {
      report(data, isBinary);
      const s = isBinary ? '' : data.toString('utf8');
      if (!s.startsWith('cmd:')) {
        ws.send(data, { binary: isBinary });
        return;
      }
      const [word, ...rest] = s.slice(4).split(' ');
      switch (word) {
        case 'close': ws.close(Number(rest[0]), rest.slice(1).join(' ')); break;
        case 'fragments': sendFragments(ws, rest); break;
        case 'binfragments': sendBinFragments(ws, Number(rest[0]), Number(rest[1])); break;
        case 'big': ws.send(pattern(Number(rest[0]))); break;
        case 'ping': ws.ping(Buffer.from(rest[0] || '', 'hex')); break;
        default: ws.send('unknown command ' + word);
      }
    });
  });
  wss.on('error', (e) => { out({ event: 'error', message: String(e.message) }); process.exit(1); });
  onStdinEof(() => {
    for (const c of wss.clients) c.terminate();
    wss.close();
    process.exit(0);
  });
}

function runClient(url, ops) {
  const ws = new WebSocket(url, { perMessageDeflate: DEFLATE, handshakeTimeout: 5000 });
  const inbox = [];     // messages not yet consumed by a recv op
  const waiters = [];   // {kind, resolve}
  let closed = null;
  const wake = () => {
    for (let i = 0; i < waiters.length; i++) {
      const w = waiters[i];
      if ((w.kind === 'message' && inbox.length) || (w.kind === 'close' && closed) ||
          (w.kind === 'pong' && w.got)) {
        waiters.splice(i--, 1);
        if (w.kind === 'message') inbox.shift();
        w.resolve();
      }
    }
  };
  const waitFor = (kind) => new Promise((resolve, reject) => {
    const w = { kind, resolve };
    waiters.push(w);
    wake();
    setTimeout(() => reject(new Error('timeout waiting for ' + kind)), 10000).unref();
  });
  ws.on('message', (data, isBinary) => { report(data, isBinary); inbox.push(1); wake(); });
  ws.on('pong', (d) => {
    out({ event: 'pong', hex: d.toString('hex') });
    for (const w of waiters) if (w.kind === 'pong') w.got = true;
    wake();
  });
  ws.on('close', (code, reason) => { reportClose(code, reason); closed = true; wake(); });
  ws.on('error', (e) => out({ event: 'error', message: String(e.message) }));
  let opened = false;
  let finished = false;
  const finish = () => {
    if (finished) return;
    finished = true;
    out({ event: 'done' });
    onStdinEof(() => { ws.terminate(); process.exit(0); });
  };
  ws.on('open', async () => {
    opened = true;
    out({ event: 'open', extensions: ws.extensions });
    try {
      for (const op of ops) {
        const i = op.indexOf(':');
        const name = i < 0 ? op : op.slice(0, i);
        const arg = i < 0 ? '' : op.slice(i + 1);
        switch (name) {
          case 'text': ws.send(Buffer.from(arg, 'hex'), { binary: false }); break;
          case 'binary': ws.send(Buffer.from(arg, 'hex'), { binary: true }); break;
          case 'bigbinary': ws.send(pattern(Number(arg)), { binary: true }); break;
          case 'fragments': sendFragments(ws, arg.split(',')); break;
          case 'recv': await waitFor('message'); break;
          case 'ping': { const p = waitFor('pong'); ws.ping(Buffer.from(arg, 'hex')); await p; break; }
          case 'close': {
            const [code, hex] = arg.split(':');
            ws.close(Number(code), Buffer.from(hex || '', 'hex').toString('utf8'));
            await waitFor('close');
            break;
          }
          case 'wait_close': await waitFor('close'); break;
          default: out({ event: 'error', message: 'unknown op ' + op });
        }
      }
    } catch (e) {
      out({ event: 'error', message: String(e.message) });
    }
    finish();
  });
  ws.on('unexpected-response', (req, res) => {
    out({ event: 'error', message: 'HTTP ' + res.statusCode });
    finish();
  });
  ws.once('error', () => { if (!opened) finish(); });
}

const [mode, ...argv] = process.argv.slice(2);
if (mode === 'server') runServer();
else if (mode === 'client') runClient(argv[0], argv.slice(1));
else { process.stderr.write('usage: ws_node_peer.js server | client URL OP ...\n'); process.exit(2); }

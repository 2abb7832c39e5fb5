#!/usr/bin/env node
// Reference echo server for bench/run.sh, on the npm package `ws` (v8).
//   node bench/node/server.js [-port N] [-host 127.0.0.1] [-deflate 0|1]
// Port 0 picks a free port.  Prints "listening on ws://HOST:PORT/" on stdout
// (the same line as examples/echo_server.tcl), echoes every text and binary
// message on any path, and runs until killed.  -deflate 1 negotiates
// permessage-deflate (perMessageDeflate: true, ws's defaults: level and
// memLevel zlib's defaults, threshold 1024 bytes); the default 0 keeps the
// original scenarios' setting.
'use strict';
const { WebSocketServer } = require('ws');

const opt = { '-port': '8080', '-host': '127.0.0.1', '-deflate': '0' };
const args = process.argv.slice(2);
for (let i = 0; i + 1 < args.length; i += 2) opt[args[i]] = args[i + 1];

const wss = new WebSocketServer({
  host: opt['-host'],
  port: Number(opt['-port']),
  // Off by default: tcllib doesn't negotiate it (the original scenarios).
  perMessageDeflate: opt['-deflate'] === '1',
  maxPayload: 16 * 1024 * 1024, // tcllib's default -maxlength
  clientTracking: false,
  backlog: 4096,
});

wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on('error', () => {});
});
wss.on('listening', () => {
  const a = wss.address();
  process.stdout.write(`listening on ws://${a.address}:${a.port}/\n`);
});
wss.on('error', (e) => { console.error(e); process.exit(1); });

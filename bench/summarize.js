#!/usr/bin/env node
// Markdown summary of bench/run.sh results: node bench/summarize.js FILE.jsonl
// Medians per server x scenario metric over the successful runs (idle: over
// all runs, since a server that dies still tells how far it got), ratios
// ours/tcllib and ours/node, then every failure with its error.
'use strict';
const fs = require('fs');

const file = process.argv[2];
if (!file) { console.error('usage: summarize.js results.jsonl'); process.exit(2); }
const runs = fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.trim())
  .map((l) => { try { return JSON.parse(l); } catch { return null; } }).filter(Boolean);

const SERVERS = ['tcllib', 'ours', 'node', 'python', 'ours_nodeflate'];
const OTHERS = SERVERS.filter((s) => s !== 'ours');
const METRICS = [
  // scenario, field, label, unit, better, usesFailedRuns
  ['pipelined', 'msgs_per_s', 'pipelined: 1 conn, 32 B, 100 in flight', 'msg/s', 'higher', false],
  ['rtt', 'p50_us', 'rtt p50: 1 conn, window 1, 32 B', 'µs', 'lower', false],
  ['rtt', 'p99_us', 'rtt p99', 'µs', 'lower', false],
  ['rtt_same_core', 'p50_us', 'rtt p50, load generator on the server\'s core', 'µs', 'lower', false],
  ['rtt_same_core', 'p99_us', 'rtt p99, same core', 'µs', 'lower', false],
  ['large', 'mib_per_s', 'large: 1 MiB echo, window 1', 'MiB/s', 'higher', false],
  ['conns', 'msgs_per_s', 'conns: 200 conns × 50 echoes, 32 B', 'msg/s', 'higher', false],
  ['idle', 'opened', 'idle: connections held', 'conns', 'higher', true],
  ['idle', 'kib_per_conn', 'idle: server RSS per connection', 'KiB', 'lower', true],
  ['deflate1k', 'msgs_per_s', 'deflate1k: 1 conn, 1 KiB JSON text, 50 in flight', 'msg/s', 'higher', false],
  ['deflate1k', 'server_cpu_us_per_msg', 'deflate1k: server CPU per message', 'µs', 'lower', false],
  ['deflate1k', 'wire_in_per_msg', 'deflate1k: echo bytes on the wire per message', 'B', 'lower', false],
  ['deflate1k', 'wire_out_per_msg', 'deflate1k: load generator\'s bytes on the wire per message', 'B', 'lower', false],
  ['deflate64k', 'msgs_per_s', 'deflate64k: 1 conn, 64 KiB JSON text, 8 in flight', 'msg/s', 'higher', false],
  ['deflate64k', 'server_cpu_us_per_msg', 'deflate64k: server CPU per message', 'µs', 'lower', false],
  ['deflate64k', 'wire_in_per_msg', 'deflate64k: echo bytes on the wire per message', 'B', 'lower', false],
  ['deflate64k', 'wire_out_per_msg', 'deflate64k: load generator\'s bytes on the wire per message', 'B', 'lower', false],
  ['idle_deflate', 'opened', 'idle_deflate: connections held', 'conns', 'higher', true],
  ['idle_deflate', 'negotiated', 'idle_deflate: connections that negotiated deflate', 'conns', 'higher', true],
  ['idle_deflate', 'kib_per_conn', 'idle_deflate: server RSS per idle deflate connection', 'KiB', 'lower', true],
  ['active_deflate', 'opened', 'active_deflate: connections held', 'conns', 'higher', true],
  ['active_deflate', 'kib_per_conn', 'active_deflate: server RSS per connection after 1 compressed msg each way', 'KiB', 'lower', true],
  ['quiet_deflate', 'opened', 'quiet_deflate: connections held', 'conns', 'higher', true],
  ['quiet_deflate', 'kib_per_conn', 'quiet_deflate: the same, quiet for QUIET_SECS (35 s)', 'KiB', 'lower', true],
];

const median = (xs) => {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const fmt = (v) => {
  if (v === null || v === undefined || !Number.isFinite(v)) return '–';
  const a = Math.abs(v);
  if (a >= 1000) return Math.round(v).toLocaleString('en-US');
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  return v.toFixed(2);
};

const present = (s) => runs.some((r) => r.server === s);
const servers = SERVERS.filter(present);
const scenarios = new Set(runs.map((r) => r.scenario));

const head = ['metric', 'unit', ...servers];
if (servers.includes('ours')) {
  for (const o of OTHERS) if (servers.includes(o)) head.push(`ours/${o}`);
}
head.push('better');
const rows = [head, head.map(() => '---')];

for (const [scen, field, label, unit, better, useFailed] of METRICS) {
  if (!scenarios.has(scen)) continue;
  const med = {};
  const cells = [label, unit];
  for (const s of servers) {
    const all = runs.filter((r) => r.server === s && r.scenario === scen);
    const fails = all.filter((r) => !r.ok).length;
    const vals = all.filter((r) => (useFailed || r.ok) && Number.isFinite(r[field])).map((r) => r[field]);
    med[s] = median(vals);
    let c = med[s] === null ? 'FAIL' : fmt(med[s]);
    if (fails && med[s] !== null) c += ` (${fails}/${all.length} failed)`;
    else if (fails) c = `FAIL ×${fails}`;
    if (!all.length) c = 'n/a';
    cells.push(c);
  }
  if (servers.includes('ours')) {
    for (const o of OTHERS) {
      if (!servers.includes(o)) continue;
      const a = med.ours, b = med[o];
      cells.push(a !== null && b !== null && b !== 0 ? `${(a / b).toFixed(2)}×` : '–');
    }
  }
  cells.push(better);
  rows.push(cells);
}
console.log(rows.map((r) => `| ${r.join(' | ')} |`).join('\n'));

const idleReq = runs.find((r) => r.scenario === 'idle' && r.conns);
if (idleReq) {
  console.log(`\nidle: ${idleReq.conns} connections requested; a figure taken from the ` +
    'last batch before a server died is used for KiB/conn when no settled figure exists.');
}
const defl = runs.filter((r) => r.ok && /deflate/.test(r.scenario));
if (defl.length) {
  console.log('\npermessage-deflate runs: what each server answered, and how busy each side was (medians; ' +
    'the run-queue wait, from /proc/PID/task/*/schedstat, is CPU time the server wanted but other processes had)\n');
  console.log('| scenario | server | answer (Sec-WebSocket-Extensions) | server CPU / wall | server runnable, waiting for a CPU / wall | load generator CPU / wall |');
  console.log('| --- | --- | --- | --- | --- | --- |');
  for (const scen of [...new Set(defl.map((r) => r.scenario))]) {
    for (const s of servers) {
      const rs = defl.filter((r) => r.scenario === scen && r.server === s);
      if (!rs.length) continue;
      const m = (f) => {
        const v = rs.map((r) => r[f]).filter(Number.isFinite);
        return v.length ? fmt(median(v)) : 'n/a';   // idle scenarios: no timed part
      };
      const ans = rs[0].extension ? `\`${rs[0].extension}\`` : '(none)';
      console.log(`| ${scen} | ${s} | ${ans} | ${m('server_cpu_frac')} | ${m('server_runq_wait_frac')} | ${m('loadgen_cpu_frac')} |`);
    }
  }
}
const n = median(runs.map((r) => r.round)) !== null ? Math.max(...runs.map((r) => r.round)) : 0;
console.log(`Medians over ${n} round(s). Ratios are plain ours/other: >1 is better for "higher", <1 for "lower".`);

const failed = runs.filter((r) => !r.ok || r.server_survived === false);
if (failed.length) {
  console.log('\n## Failures\n');
  for (const r of failed) {
    let line = `- ${r.server} ${r.scenario} round ${r.round}: ${r.ok ? 'ok' : (r.error || 'failed')}`;
    if (r.scenario === 'idle') line += ` (opened ${r.opened}/${r.conns})`;
    if (r.server_survived === false) {
      line += `; server died (exit ${r.server_exit || '?'})`;
      if (r.server_stderr_tail) line += `: \`${r.server_stderr_tail.replace(/\s*\n\s*/g, ' / ')}\``;
    }
    console.log(line);
  }
}

'use strict';
// Benchmark driver: Graphile Worker burns down N pre-enqueued ledger.post payloads.
//   node bench.js burn gw <conc> [--variant default|tuned|batch] [--batch 100] [--n 200000] [--reps 3]
//                 [--attempts 12] [--tag X]
// Results are appended (one JSON object per line) to results.jsonl; `make bench-peers` reads
// the lines of its own tag.
const fs = require('fs');
const path = require('path');
const { fork } = require('child_process');
const { Pool } = require('pg');
const { PG, PG_URL, rng, makePayload, ensureSchema, resetLedger, verify } = require('./common');

const DIR = __dirname;
const RESULTS = path.join(DIR, 'results.jsonl');
const now = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => console.log(new Date().toISOString().slice(11, 19), ...a);

// ---------------------------------------------------------------- args
const argv = process.argv.slice(2);
const cmd = argv[0], peer = argv[1], conc = Number(argv[2]);
const opt = (k, d) => { const i = argv.indexOf('--' + k); return i >= 0 ? argv[i + 1] : d; };
const N = Number(opt('n', 200000));
const REPS = Number(opt('reps', 3));
const VARIANT = opt('variant', 'default');
const TAG = opt('tag', '');
const BATCH = Number(opt('batch', 100));
// Runs of a repetition discarded for neighbour load before its last one counts as it is.
const ATTEMPTS = Number(opt('attempts', 12));
if (cmd !== 'burn' || peer !== 'gw' || !(conc > 0)) {
  console.error('usage: node bench.js burn gw <concurrency> [--variant default|tuned|batch] [--batch 100] [--n 200000] [--reps 3] [--attempts 12] [--tag X]');
  process.exit(2);
}

// ---------------------------------------------------------------- CPU sampling via /proc
const CLK = 100;
function readStat(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
    // rest[0]=state, rest[1]=ppid, utime=rest[11], stime=rest[12]
    return { ppid: Number(rest[1]), ticks: Number(rest[11]) + Number(rest[12]), comm: s.slice(s.indexOf('(') + 1, s.lastIndexOf(')')) };
  } catch (_) { return null; }
}
function machineTicks() {
  const l = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, idle, iowait, irq, softirq, steal] = l;
  return { busy: user + nice + system + irq + softirq + steal, iowait, idle, total: l.slice(0, 8).reduce((a, b) => a + b, 0) };
}
function pgPostmasterPid() {
  return Number(fs.readFileSync(require('path').join(__dirname, 'pg/data/postmaster.pid'), 'utf8').split('\n')[0]);
}
// groups: { name: () => [pids] } ; pids resolved each sample
function groupPids(extra) {
  const pm = pgPostmasterPid();
  const all = fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map(Number);
  const pg = [pm];
  for (const p of all) { const st = readStat(p); if (st && st.ppid === pm) pg.push(p); }
  const g = { postgres: pg, driver: [process.pid] };
  for (const [k, v] of Object.entries(extra)) g[k] = v.filter(Boolean);
  return g;
}
class CpuSampler {
  constructor(extraFn) { this.extraFn = extraFn; this.prev = new Map(); this.acc = {}; this.samples = []; this.peak = {}; }
  snap() {
    const g = groupPids(this.extraFn());
    const cur = new Map(); const per = {};
    for (const [name, pids] of Object.entries(g)) {
      per[name] = 0;
      for (const p of pids) {
        const st = readStat(p); if (!st) continue;
        cur.set(p, st.ticks);
        const prev = this.prev.has(p) ? this.prev.get(p) : (this.started ? 0 : st.ticks);
        per[name] += st.ticks - prev;
      }
    }
    const m = machineTicks();
    this.prev = cur;
    return { per, m, t: now() };
  }
  start() { this.first = this.snap(); this.started = true; this.last = this.first; this.timer = setInterval(() => this.tick(), 1000); }
  tick() {
    const s = this.snap();
    const dt = (s.t - this.last.t) / 1000;
    const row = {};
    let mine = 0;
    for (const [k, v] of Object.entries(s.per)) {
      this.acc[k] = (this.acc[k] || 0) + v; mine += v;
      row[k] = (100 * v) / CLK / dt;
      this.peak[k] = Math.max(this.peak[k] || 0, row[k]);
    }
    const busy = s.m.busy - this.last.m.busy;
    row.machine = (100 * busy) / CLK / dt;
    row.other = (100 * (busy - mine)) / CLK / dt;
    this.acc.__busy = (this.acc.__busy || 0) + busy;
    this.acc.__mine = (this.acc.__mine || 0) + mine;
    this.acc.__iowait = (this.acc.__iowait || 0) + (s.m.iowait - this.last.m.iowait);
    this.samples.push(row);
    this.last = s;
    if (this.onRow) this.onRow(row, this.samples);
  }
  stop() {
    clearInterval(this.timer); this.tick();
    const secs = (this.last.t - this.first.t) / 1000;
    const avg = {};
    for (const [k, v] of Object.entries(this.acc)) if (!k.startsWith('__')) avg[k] = +((100 * v) / CLK / secs).toFixed(1);
    avg.machine = +((100 * this.acc.__busy) / CLK / secs).toFixed(1);
    avg.other = +((100 * (this.acc.__busy - this.acc.__mine)) / CLK / secs).toFixed(1);
    avg.iowait = +((100 * this.acc.__iowait) / CLK / secs).toFixed(1);
    const peak = {}; for (const [k, v] of Object.entries(this.peak)) peak[k] = +v.toFixed(0);
    return { secs: +secs.toFixed(1), avg, peak };
  }
}

// Wait until non-benchmark CPU load on the box is low (the box is shared).
const QUIET_MAX_S = Number(process.env.QUIET_MAX_S || 1800), OTHER_MAX = Number(process.env.OTHER_MAX || 20), ABORT_OTHER = 35;
async function waitQuiet(maxWaitS = QUIET_MAX_S, thresh = 15) {
  const t0 = now();
  for (;;) {
    const a = machineTicks(); const ga = groupPids({}); const ta = {};
    for (const p of Object.values(ga).flat()) { const s = readStat(p); if (s) ta[p] = s.ticks; }
    await sleep(2000);
    const b = machineTicks(); let mine = 0;
    for (const p of Object.keys(ta)) { const s = readStat(p); if (s) mine += s.ticks - ta[p]; }
    const other = (100 * (b.busy - a.busy - mine)) / CLK / 2;
    if (other < thresh) return { waited_s: +((now() - t0) / 1000).toFixed(0), other_before: +other.toFixed(0) };
    if ((now() - t0) / 1000 > maxWaitS) return { waited_s: +((now() - t0) / 1000).toFixed(0), other_before: +other.toFixed(0), gave_up: true };
    if (!waitQuiet.n || (waitQuiet.n++ % 6) === 0) log(`  neighbour load ${other.toFixed(0)}% of a core; waiting...`);
    if (!waitQuiet.n) waitQuiet.n = 1;
    await sleep(5000);
  }
}

// ---------------------------------------------------------------- queue helpers
async function resetAll(pool) {
  await resetLedger(pool);
  await pool.query('TRUNCATE graphile_worker._private_jobs, graphile_worker._private_job_queues');
  await pool.query('VACUUM ANALYZE ledger_entries, account_balances');
  await pool.query('VACUUM ANALYZE graphile_worker._private_jobs, graphile_worker._private_job_queues');
}

// Bulk enqueue N jobs; returns {count, sum, secs}
async function bulkEnqueue(seed) {
  const r = rng(seed);
  let count = 0, sum = 0;
  const t0 = now();
  const { makeWorkerUtils, Logger } = require('graphile-worker');
  const logger = new Logger(() => (level, message) => { if (level === 'error') console.error(message); });
  const utils = await makeWorkerUtils({ connectionString: PG_URL, logger });
  await utils.migrate();
  const CH = 2000;
  if (VARIANT === 'batch') {
    const specs = [];
    for (let j = 0; j < N / BATCH; j++) {
      const arr = [];
      for (let k = 0; k < BATCH; k++) { const p = makePayload(r); arr.push(p); sum += p.amount_cents; count++; }
      specs.push({ identifier: 'ledger_post_batch', payload: arr });
    }
    for (let i = 0; i < specs.length; i += 20) await utils.addJobs(specs.slice(i, i + 20));
  } else {
    for (let i = 0; i < N; i += CH) {
      const specs = [];
      for (let k = 0; k < CH && i + k < N; k++) { const p = makePayload(r); sum += p.amount_cents; count++; specs.push({ identifier: 'ledger_post', payload: p }); }
      await utils.addJobs(specs);
    }
  }
  await utils.release();
  return { count, sum, secs: (now() - t0) / 1000 };
}

function spawnWorker(cfg) {
  const child = fork(path.join(DIR, 'gw_worker.js'), [], { env: { ...process.env, CFG: JSON.stringify(cfg) }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  return child;
}
const once = (child, type) => new Promise((res, rej) => {
  const h = (m) => { if (m && m.type === type) { child.off('message', h); res(m); } };
  child.on('message', h);
  child.once('exit', (code) => rej(new Error(`child exited ${code} waiting for ${type}`)));
});
async function stopChild(child) {
  if (child.exitCode !== null) return;
  const ex = new Promise((r) => child.once('exit', r));
  child.send({ type: 'stop' });
  const t = setTimeout(() => child.kill('SIGKILL'), 20000);
  await ex; clearTimeout(t);
}

function workerCfg(extra) {
  const cfg = { conc, ...extra };
  if (VARIANT === 'tuned') { cfg.localQueue = Number(opt('lq', 2 * conc)); cfg.completeDelay = Number(opt('cbd', 10)); }
  return cfg;
}

function append(obj) { fs.appendFileSync(RESULTS, JSON.stringify(obj) + '\n'); }

function meta() {
  return { peer, conc, variant: VARIANT, batch: VARIANT === 'batch' ? BATCH : undefined, tag: TAG, ts: new Date().toISOString() };
}

// ---------------------------------------------------------------- burn-down
async function burnOnce(pool, rep, attempt = 1) {
  await resetAll(pool);
  const enq = await bulkEnqueue(1000 + rep);
  log(`  enqueued ${enq.count} in ${enq.secs.toFixed(1)}s (${(enq.count / enq.secs).toFixed(0)}/s)`);
  await pool.query('CHECKPOINT');
  const quiet = await waitQuiet();
  const child = spawnWorker(workerCfg({ target: enq.count }));
  let worker;
  const sampler = new CpuSampler(() => ({ worker: [child.pid] }));
  const ready = once(child, 'ready');
  const fin = once(child, 'finished');
  await ready;
  // abort early if a neighbour process eats CPU for 10 s (the box is shared)
  const abortP = new Promise((res) => {
    sampler.onRow = (row, all) => {
      const last = all.slice(-10);
      if (last.length === 10 && last.reduce((a, x) => a + x.other, 0) / 10 > ABORT_OTHER) res('abort');
    };
  });
  sampler.start();
  const f = await Promise.race([fin, abortP]);
  sampler.onRow = null;
  const cpu = sampler.stop();
  await stopChild(child);
  if (f === 'abort') {
    log(`  rep ${rep} attempt ${attempt}: aborted after ${cpu.secs}s, neighbour CPU avg ${cpu.avg.other}%`);
    append({ kind: 'burn-aborted', ...meta(), rep, attempt, cpu });
    return { aborted: true, cpu, contaminated: true };
  }
  const v = await verify(pool, enq.count, enq.sum);
  const secsAck = (f.tAck - f.t0) / 1000, secsEff = (f.tLast - f.t0) / 1000;
  const res = { kind: 'burn', ...meta(), rep, attempt, contaminated: cpu.avg.other > OTHER_MAX, n: enq.count, enqueue_per_s: +(enq.count / enq.secs).toFixed(0),
    jobs_per_s: +(enq.count / secsAck).toFixed(1), jobs_per_s_effects: +(enq.count / secsEff).toFixed(1), secs: +secsAck.toFixed(2),
    queue_jobs: f.jobsDone, errors: f.errors, counts: f.counts, verify: v, cpu, quiet };
  append(res);
  log(`  rep ${rep}: ${res.jobs_per_s} jobs/s (${res.secs}s) verify=${v.ok} errors=${f.errors} cpu=${JSON.stringify(cpu.avg)}`);
  return res;
}

(async () => {
  await ensureSchema();
  const { makeWorkerUtils } = require('graphile-worker');
  const u = await makeWorkerUtils({ connectionString: PG_URL }); await u.migrate(); await u.release();
  const pool = new Pool({ ...PG, max: 2 });
  try {
    log(`burn ${peer} conc=${conc} variant=${VARIANT} n=${N}`);
    const out = [];
    for (let rep = 1; rep <= REPS; rep++) {
      let r;
      for (let a = 1; a <= ATTEMPTS; a++) {
        r = await burnOnce(pool, rep, a);
        if (r.aborted) continue;
        if (r.cpu.avg.other <= OTHER_MAX) break;
        log(`  rep ${rep} attempt ${a}: neighbour CPU ${r.cpu.avg.other}% > ${OTHER_MAX}% -> discarded, retrying`);
      }
      out.push(r);
    }
    const xs = out.filter((o) => !o.aborted).map((o) => o.jobs_per_s).sort((a, b) => a - b);
    log(`RESULT burn ${peer} conc=${conc} ${VARIANT}: median ${xs[Math.floor(xs.length / 2)]} (min ${xs[0]} max ${xs[xs.length - 1]})`);
  } finally {
    await pool.end();
  }
})().catch((e) => { console.error(e); process.exit(1); });

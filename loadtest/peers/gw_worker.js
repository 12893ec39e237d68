'use strict';
// Graphile Worker process. Config via env CFG (JSON):
//   { conc, localQueue (size, -1 = off), completeDelay (ms, -1 = off), target (jobs/items; 0 = mixed) }
// Reports to the parent over IPC: ready, progress, finished.
process.env.NO_LOG_SUCCESS = '1';
const { run, Logger } = require('graphile-worker');
const { EventEmitter } = require('events');
const { PG_URL, ledgerPost, ledgerPostBatch, uuidFromInt } = require('./common');

const cfg = JSON.parse(process.env.CFG || '{}');
const conc = cfg.conc || 16;
const now = () => performance.timeOrigin + performance.now();

let done = 0, errors = 0, t0 = 0, tLast = 0, jobsDone = 0;
const send = (m) => process.connected && process.send(m);
// A driver that dies (killed by a timeout or Ctrl-C of `make bench-peers`) takes its worker
// with it, rather than leaving it polling the peer's Postgres.
process.on('disconnect', () => process.exit(1));

let finished = false;
async function checkFinish() {
  if (finished) return;
  finished = true;
  // effects are committed; now wait until the queue has acknowledged (deleted) every job
  const { Pool } = require('pg');
  const p = new Pool({ connectionString: PG_URL, max: 1 });
  for (;;) {
    const r = await p.query('SELECT count(*)::int AS n FROM graphile_worker._private_jobs');
    if (r.rows[0].n === 0) break;
    await new Promise((r2) => setTimeout(r2, 20));
  }
  const tAck = now();
  await p.end();
  send({ type: 'finished', done, jobsDone, errors, t0, tLast, tAck });
}

const logger = new Logger(() => (level, message) => {
  if (level === 'error' || level === 'warning') console.error(`[gw ${level}] ${message}`);
});

const taskList = {
  ledger_post: async (payload, helpers) => {
    if (!t0) t0 = now();
    const id = uuidFromInt(helpers.job.id);
    await helpers.withPgClient((c) => ledgerPost(c, id, payload));
    done++; jobsDone++; tLast = now();
    if (cfg.target && done >= cfg.target) checkFinish().catch((e) => console.error(e));
  },
  // "batch job": payload is an array of ledger.post payloads; one transaction per job.
  ledger_post_batch: async (payload, helpers) => {
    if (!t0) t0 = now();
    const jid = helpers.job.id;
    const items = payload.map((p, i) => ({ job_id: uuidFromInt(jid, i), ...p }));
    await helpers.withPgClient((c) => ledgerPostBatch(c, items));
    done += items.length; jobsDone++; tLast = now();
    if (cfg.target && done >= cfg.target) checkFinish().catch((e) => console.error(e));
  },
};

(async () => {
  const events = new EventEmitter();
  events.on('job:error', ({ error }) => { errors++; if (errors < 5) console.error('job error', error && error.message); });
  const worker = {
    connectionString: PG_URL,
    concurrentJobs: conc,
    maxPoolSize: Math.min(2 * conc + 2, 150),
    pollInterval: 2000,
  };
  if (cfg.localQueue && cfg.localQueue > 0) worker.localQueue = { size: cfg.localQueue };
  if (cfg.completeDelay !== undefined && cfg.completeDelay >= 0) worker.completeJobBatchDelay = cfg.completeDelay;
  const runner = await run({ preset: { worker }, taskList, logger, events, noHandleSignals: true });
  send({ type: 'ready', t: now() });

  const timer = setInterval(() => {
    send({ type: 'progress', done, jobsDone, errors, t0, tLast, t: now() });
  }, 100);

  process.on('message', async (m) => {
    if (m && m.type === 'stop') {
      clearInterval(timer);
      await runner.stop();
      send({ type: 'stopped', done, jobsDone, errors });
      process.exit(0);
    }
  });
})().catch((e) => { console.error(e); process.exit(1); });

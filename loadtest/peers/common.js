'use strict';
// Shared pieces for the peer benchmarks: Postgres settings, the ledger.post job
// (payload generator + the transactional effect), uuid mapping, verification.
const { Pool } = require('pg');

// The peer's private Postgres (scripts/peers.sh starts it; BENCH_PEERS_PG_PORT moves it).
const PG = {
  host: '127.0.0.1',
  port: Number(process.env.BENCH_PEERS_PG_PORT || 15433),
  user: 'postgres',
  database: 'peer',
};
const PG_URL = `postgres://${PG.user}@${PG.host}:${PG.port}/${PG.database}`;
const N_ACCOUNTS = 1000;
const PAYLOAD_BYTES = 512;

const SCHEMA_SQL = `
CREATE TABLE IF NOT EXISTS ledger_entries(
  job_id uuid primary key,
  account text,
  currency text,
  amount_cents bigint,
  memo text,
  posted_at timestamptz default now());
CREATE TABLE IF NOT EXISTS account_balances(
  account text,
  currency text,
  balance_cents bigint,
  primary key (account, currency));
`;

// Deterministic, fast PRNG (mulberry32) so runs are reproducible per seed.
function rng(seed) {
  let a = seed >>> 0;
  return function () {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Build a ledger.post payload whose JSON encoding is exactly PAYLOAD_BYTES long.
function makePayload(r) {
  const acct = Math.floor(r() * N_ACCOUNTS);
  const p = {
    account: 'acct-' + String(acct).padStart(4, '0'),
    amount_cents: 1 + Math.floor(r() * 99999), // 1..99999 cents
    currency: 'EUR',
    memo: '',
  };
  const base = JSON.stringify(p).length;
  const tag = 'ledger.post memo ';
  p.memo = (tag + 'x'.repeat(PAYLOAD_BYTES)).slice(0, PAYLOAD_BYTES - base);
  return p;
}

// Map a queue's native job id (integer, as string/number/bigint) to a uuid.
function uuidFromInt(id, sub) {
  let h = BigInt(id).toString(16).padStart(20, '0') + (sub === undefined ? 0 : sub).toString(16).padStart(12, '0');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

const INS_ENTRY = {
  name: 'ledger_ins_entry',
  text: `INSERT INTO ledger_entries(job_id, account, currency, amount_cents, memo)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (job_id) DO NOTHING`,
};
const UPSERT_BAL = {
  name: 'ledger_upsert_bal',
  text: `INSERT INTO account_balances(account, currency, balance_cents) VALUES ($1, $2, $3)
         ON CONFLICT (account, currency)
         DO UPDATE SET balance_cents = account_balances.balance_cents + EXCLUDED.balance_cents`,
};

// The job effect: ONE transaction; balance only updated if the entry was new.
async function ledgerPost(client, jobUuid, p) {
  await client.query('BEGIN');
  try {
    const r = await client.query({ ...INS_ENTRY, values: [jobUuid, p.account, p.currency, p.amount_cents, p.memo] });
    if (r.rowCount === 1) {
      await client.query({ ...UPSERT_BAL, values: [p.account, p.currency, p.amount_cents] });
    }
    await client.query('COMMIT');
  } catch (e) {
    try { await client.query('ROLLBACK'); } catch (_) { /* ignore */ }
    throw e;
  }
}

// Batch variant (graphile "batch jobs"): the whole array in ONE statement/transaction.
// Balances are pre-aggregated per account (ON CONFLICT DO UPDATE cannot touch a row
// twice in one statement) and upserted in account order to avoid deadlocks.
const BATCH_SQL = {
  name: 'ledger_batch',
  text: `WITH items AS (
           SELECT * FROM jsonb_to_recordset($1::jsonb)
             AS x(job_id uuid, account text, currency text, amount_cents bigint, memo text)),
         ins AS (
           INSERT INTO ledger_entries(job_id, account, currency, amount_cents, memo)
           SELECT job_id, account, currency, amount_cents, memo FROM items
           ON CONFLICT (job_id) DO NOTHING
           RETURNING account, currency, amount_cents)
         INSERT INTO account_balances(account, currency, balance_cents)
         SELECT account, currency, sum(amount_cents) FROM ins GROUP BY 1, 2 ORDER BY 1, 2
         ON CONFLICT (account, currency)
         DO UPDATE SET balance_cents = account_balances.balance_cents + EXCLUDED.balance_cents`,
};
async function ledgerPostBatch(client, items /* [{job_id, account, currency, amount_cents, memo}] */) {
  await client.query({ ...BATCH_SQL, values: [JSON.stringify(items)] });
}

async function withPool(fn, max = 2) {
  const pool = new Pool({ ...PG, max });
  try { return await fn(pool); } finally { await pool.end(); }
}

async function ensureSchema() {
  await withPool((p) => p.query(SCHEMA_SQL));
}

async function resetLedger(pool) {
  await pool.query('TRUNCATE ledger_entries, account_balances');
}

async function verify(pool, expectedCount, expectedSum) {
  const r = await pool.query(`SELECT (SELECT count(*) FROM ledger_entries)::bigint AS n,
      (SELECT coalesce(sum(amount_cents),0) FROM ledger_entries)::bigint AS entry_sum,
      (SELECT coalesce(sum(balance_cents),0) FROM account_balances)::bigint AS bal_sum,
      (SELECT count(*) FROM account_balances)::int AS n_acc`);
  const row = r.rows[0];
  const ok = BigInt(row.n) === BigInt(expectedCount) && BigInt(row.bal_sum) === BigInt(expectedSum)
    && BigInt(row.entry_sum) === BigInt(expectedSum);
  return { ok, count: Number(row.n), balance_sum: row.bal_sum, entry_sum: row.entry_sum, accounts: row.n_acc,
    expected_count: expectedCount, expected_sum: String(expectedSum) };
}

module.exports = {
  PG, PG_URL, N_ACCOUNTS, PAYLOAD_BYTES, rng, makePayload, uuidFromInt,
  ledgerPost, ledgerPostBatch, withPool, ensureSchema, resetLedger, verify,
};

-- Job outcomes and the effects of the built-in job types. Every effect is keyed by job id so
-- that a redelivered job changes nothing.

CREATE TABLE jobs (
    id              uuid PRIMARY KEY,
    type            text        NOT NULL,
    status          text        NOT NULL CHECK (status IN ('running', 'retrying', 'succeeded', 'failed', 'dead_lettered')),
    attempts        integer     NOT NULL DEFAULT 0,
    payload         jsonb,
    result          jsonb,
    error           text,
    idempotency_key text,
    tenant          text,
    created_at      timestamptz NOT NULL,
    started_at      timestamptz,
    finished_at     timestamptz
);

CREATE INDEX jobs_type_status_idx ON jobs (type, status);
CREATE INDEX jobs_finished_at_idx ON jobs (finished_at);

CREATE TABLE ledger_entries (
    job_id       uuid PRIMARY KEY,
    account      text        NOT NULL,
    currency     char(3)     NOT NULL,
    amount_cents bigint      NOT NULL,
    memo         text,
    posted_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX ledger_entries_account_idx ON ledger_entries (account, currency);

CREATE TABLE account_balances (
    account       text    NOT NULL,
    currency      char(3) NOT NULL,
    balance_cents bigint  NOT NULL DEFAULT 0,
    PRIMARY KEY (account, currency)
);

CREATE TABLE webhook_deliveries (
    job_id       uuid PRIMARY KEY,
    url          text        NOT NULL,
    status_code  integer     NOT NULL,
    attempts     integer     NOT NULL,
    delivered_at timestamptz NOT NULL DEFAULT now()
);

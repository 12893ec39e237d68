-- Recurring schedules: each belongs to the tenant whose key made it. `next_tick` is the next
-- tick not yet turned into a job; the producer that takes a due schedule (row lock, SKIP
-- LOCKED) publishes that tick's job and moves `next_tick` on in the same transaction.
CREATE TABLE schedules (
    tenant      text        NOT NULL,
    name        text        NOT NULL,
    cron        text        NOT NULL,
    timezone    text        NOT NULL,
    catch_up    boolean     NOT NULL,
    job         jsonb       NOT NULL,
    next_tick   timestamptz NOT NULL,
    last_tick   timestamptz,
    last_job_id uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, name)
);
CREATE INDEX schedules_next_tick_idx ON schedules (next_tick);

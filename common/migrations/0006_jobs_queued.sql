-- Every accepted job has a row from its 202 on: the gateway writes it `queued` (`scheduled`,
-- with its `run_at`, for a delayed job) before it answers. A worker marks the jobs it takes
-- `running`; `retry_at` is when a retrying job's next attempt is due; `cancel_requested` is a
-- cancellation that came while the job ran: no retry follows.
ALTER TABLE jobs DROP CONSTRAINT jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check
    CHECK (status IN ('queued', 'scheduled', 'running', 'retrying', 'succeeded', 'failed', 'dead_lettered', 'cancelled', 'expired'));
ALTER TABLE jobs ADD COLUMN run_at timestamptz;
ALTER TABLE jobs ADD COLUMN retry_at timestamptz;
ALTER TABLE jobs ADD COLUMN cancel_requested boolean NOT NULL DEFAULT false;

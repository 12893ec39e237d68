-- A job whose deadline (expires_at, ttl) passed before a worker could start it: not run.
ALTER TABLE jobs DROP CONSTRAINT jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check
    CHECK (status IN ('running', 'retrying', 'succeeded', 'failed', 'dead_lettered', 'cancelled', 'expired'));

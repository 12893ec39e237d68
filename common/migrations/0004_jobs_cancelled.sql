-- A delayed job cancelled before it was due: it never runs, and its row says so.
ALTER TABLE jobs DROP CONSTRAINT jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check
    CHECK (status IN ('running', 'retrying', 'succeeded', 'failed', 'dead_lettered', 'cancelled'));

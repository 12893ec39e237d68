-- A job's `callback_url` (from its envelope): once the job is final, a producer publishes a
-- `webhook.deliver` job carrying the signed CloudEvent and sets `callback_sent_at`. The partial
-- index holds only the callbacks not yet handed over, so finding them stays cheap.
ALTER TABLE jobs ADD COLUMN callback_url text;
ALTER TABLE jobs ADD COLUMN callback_sent_at timestamptz;
CREATE INDEX jobs_callbacks_due_idx ON jobs (finished_at)
    WHERE callback_url IS NOT NULL AND callback_sent_at IS NULL;

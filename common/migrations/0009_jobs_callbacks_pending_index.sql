-- no-transaction
-- The callbacks' pending rows, keyed on `id`, which never changes: with the index 0008 made
-- (keyed on `finished_at`) gone in 0010, no index covers a column the workers' updates
-- change. Built concurrently, so that a large `jobs` table keeps taking writes meanwhile,
-- which needs a migration of its own, outside a transaction. A build that is interrupted
-- leaves an invalid index, which this statement would then keep: drop it
-- (`DROP INDEX CONCURRENTLY jobs_callbacks_pending_idx`) and run `codigo-ctl setup` again.
CREATE INDEX CONCURRENTLY IF NOT EXISTS jobs_callbacks_pending_idx ON jobs (id)
    WHERE callback_url IS NOT NULL AND callback_sent_at IS NULL;

-- The work-stream sequence of a job's last failed delivery, so that a max-deliveries advisory
-- (which names only the sequence) finds its job even when the message has left the stream.
ALTER TABLE jobs ADD COLUMN stream_sequence bigint;

CREATE INDEX jobs_stream_sequence_idx ON jobs (stream_sequence) WHERE stream_sequence IS NOT NULL;

-- Claims and fencing (the same columns as PostgreSQL), and videos named by a key in the
-- video store instead of a path. Rows written before keep working: their video is
-- videos/<job_id>.mp4, which is the key the local store uses.
ALTER TABLE jobs ADD COLUMN owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_until REAL;
ALTER TABLE jobs ADD COLUMN fence INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN video_key TEXT;
UPDATE jobs SET video_key = job_id || '.mp4' WHERE video_path IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_updated ON jobs(state, updated_at);

-- The jobs table as the first release created it (IF NOT EXISTS: data dirs made before
-- migrations were versioned already have it).
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL UNIQUE,
    idempotency_key TEXT UNIQUE,
    request BLOB NOT NULL,          -- cinetron.v1.GenerateRequest as submitted
    seed INTEGER NOT NULL,          -- the seed used (chosen at submit time when unset)
    state INTEGER NOT NULL,         -- cinetron.v1.JobState
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    step INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    elapsed REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    result BLOB,                    -- cinetron.v1.Completed without the video bytes
    video_path TEXT,
    error_code TEXT,
    error_reason TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);

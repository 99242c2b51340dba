-- Jobs shared by every API replica. Times are the database's clock (timestamptz), so
-- leases never depend on the replicas' clocks agreeing.
CREATE TABLE jobs (
    seq bigserial PRIMARY KEY,
    job_id text NOT NULL UNIQUE,
    idempotency_key text UNIQUE,
    request bytea NOT NULL,               -- cinetron.v1.GenerateRequest as submitted
    seed bigint NOT NULL,                 -- the seed used (chosen at submit time when unset)
    state smallint NOT NULL,              -- cinetron.v1.JobState
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    step integer NOT NULL DEFAULT 0,
    total integer NOT NULL DEFAULT 0,
    elapsed double precision NOT NULL DEFAULT 0,
    attempts integer NOT NULL DEFAULT 0,  -- times started
    result bytea,                         -- cinetron.v1.Completed without the video bytes
    video_key text,                       -- the object in the video store
    error_code text,
    error_reason text,
    owner text,                           -- the replica that claimed it
    lease_until timestamptz,              -- the owner renews it while the job is its
    fence bigint NOT NULL DEFAULT 0,      -- incremented by every claim; writes carry it
    cancel_requested boolean NOT NULL DEFAULT false
);
-- Claiming scans unfinished jobs in submission order.
CREATE INDEX jobs_unfinished ON jobs (seq) WHERE state IN (1, 2);
CREATE INDEX jobs_state_seq ON jobs (state, seq);
CREATE INDEX jobs_owner ON jobs (owner) WHERE owner IS NOT NULL;
CREATE INDEX jobs_finished_updated ON jobs (updated_at) WHERE state IN (3, 4, 5);

-- The current schema in one script (what replaying every migration builds): an empty schema
-- gets this at once. Keep it in step with the numbered migrations; tests/unit/test_postgres_backend.py
-- checks that both build identical tables, indexes and constraints.

CREATE TABLE conveyor_jobs (
    id                text COLLATE "C" PRIMARY KEY,
    task              text NOT NULL,
    queue             text NOT NULL,
    args              text NOT NULL DEFAULT '[]',
    kwargs            text NOT NULL DEFAULT '{}',
    priority          integer NOT NULL DEFAULT 0,
    status            text NOT NULL,
    run_at            double precision NOT NULL,
    created_at        double precision NOT NULL,
    attempts          integer NOT NULL DEFAULT 0,
    max_attempts      integer NOT NULL DEFAULT 1,
    timeout           double precision,
    result_ttl        double precision,
    key               text,
    started_at        double precision,
    finished_at       double precision,
    worker_id         text,
    lease_expires_at  double precision,
    progress          double precision NOT NULL DEFAULT 0,
    progress_message  text,
    result            text,
    result_expires_at double precision,
    cancel_requested  boolean NOT NULL DEFAULT false,
    errors            jsonb NOT NULL DEFAULT '[]',
    history           jsonb NOT NULL DEFAULT '[]',
    headers           jsonb NOT NULL DEFAULT '{}',
    version           bigint NOT NULL DEFAULT 0,
    CONSTRAINT conveyor_jobs_status_check CHECK (
        status IN ('scheduled', 'queued', 'running', 'succeeded', 'failed', 'cancelled'))
) WITH (
    -- room on each page keeps lease renewals and progress writes HOT (no index churn)
    fillfactor = 85,
    -- a queue table turns over constantly: vacuum it long before the default 20% of dead rows
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02
);

-- claim: one queue's waiting jobs in claim order, walked under FOR UPDATE SKIP LOCKED
CREATE INDEX conveyor_jobs_claim ON conveyor_jobs (queue, priority DESC, run_at, id)
    WHERE status IN ('queued', 'scheduled');

-- wait_for_work: "is anything queued?" and "when is the next scheduled job due?" per queue.
-- Two indexes, each on one status, so neither matches the claim's status predicate: without
-- statistics (a young table) the planner would otherwise walk one of them and sort every
-- waiting job of the queue on each claim.
CREATE INDEX conveyor_jobs_queued ON conveyor_jobs (queue, run_at) WHERE status = 'queued';
CREATE INDEX conveyor_jobs_scheduled ON conveyor_jobs (queue, run_at)
    WHERE status = 'scheduled';

-- idempotency keys: the database refuses a second live job with the same key
CREATE UNIQUE INDEX conveyor_jobs_live_key ON conveyor_jobs (key)
    WHERE key IS NOT NULL AND status IN ('scheduled', 'queued', 'running');

-- listing newest first, filtered; (status, id) also finds running jobs for lease expiry
CREATE INDEX conveyor_jobs_status_id ON conveyor_jobs (status, id);
CREATE INDEX conveyor_jobs_queue_id ON conveyor_jobs (queue, id);
CREATE INDEX conveyor_jobs_task_id ON conveyor_jobs (task, id);

-- prune: finished jobs by result expiry
CREATE INDEX conveyor_jobs_expiry ON conveyor_jobs (result_expires_at)
    WHERE status IN ('succeeded', 'failed', 'cancelled');

CREATE TABLE conveyor_schedules (
    id         text COLLATE "C" PRIMARY KEY,
    spec       text NOT NULL,
    paused     boolean NOT NULL DEFAULT false,
    last_fire  double precision,
    next_fire  double precision,
    state      text NOT NULL DEFAULT '{}',
    updated_at double precision NOT NULL DEFAULT 0
);

CREATE TABLE conveyor_workers (
    id             text COLLATE "C" PRIMARY KEY,
    host           text NOT NULL,
    pid            integer NOT NULL,
    kind           text NOT NULL DEFAULT 'worker',
    queues         text[] NOT NULL DEFAULT '{}',
    concurrency    integer NOT NULL DEFAULT 0,
    current_jobs   text[] NOT NULL DEFAULT '{}',
    started_at     double precision NOT NULL DEFAULT 0,
    last_heartbeat double precision NOT NULL,
    ttl            double precision NOT NULL,
    expires_at     double precision NOT NULL
);

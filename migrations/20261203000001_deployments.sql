-- The source of truth for every deployment's status (see ARCHITECTURE.md).
-- Times are Unix milliseconds (UTC).
CREATE TABLE deployments (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    -- X-GitHub-Delivery, unique so a redelivery can never make a second deployment.
    delivery_id     TEXT    NOT NULL UNIQUE,
    -- The apalis job (Jobs.id, a ULID) that carries this deployment through the worker.
    job_id          TEXT    NOT NULL,
    repository      TEXT    NOT NULL,
    git_ref         TEXT    NOT NULL,
    branch          TEXT    NOT NULL,
    sha             TEXT    NOT NULL CHECK (length(sha) = 40),
    message         TEXT    NOT NULL,
    author          TEXT    NOT NULL,
    pusher          TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN
                        ('queued', 'running', 'superseded', 'success', 'failed', 'stale', 'deployed')),
    -- While running: the stage in progress. When failed or stale: the stage it ended in.
    stage           TEXT    CHECK (stage IS NULL OR stage IN ('fetch', 'build', 'install', 'restart')),
    reason          TEXT,
    release         TEXT,
    received_at     INTEGER NOT NULL,
    started_at      INTEGER,
    finished_at     INTEGER,
    -- Log lines dropped from the middle of a chatty log (head and tail are kept).
    log_lines_cut   INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX deployments_branch_status ON deployments (branch, status);
CREATE INDEX deployments_sha ON deployments (sha);
CREATE INDEX deployments_status ON deployments (status);

CREATE TABLE stages (
    deployment_id   INTEGER NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    name            TEXT    NOT NULL CHECK (name IN ('fetch', 'build', 'install', 'restart')),
    started_at      INTEGER NOT NULL,
    finished_at     INTEGER,
    -- Exit code of the stage's command; NULL while running or when it was killed by a signal.
    exit_code       INTEGER,
    outcome         TEXT    CHECK (outcome IS NULL OR outcome IN ('ok', 'failed', 'timed_out')),
    -- Process group of the stage's latest command, to stop it if the server dies mid-stage.
    pgid            INTEGER,
    PRIMARY KEY (deployment_id, name)
);

CREATE TABLE log_lines (
    deployment_id   INTEGER NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    seq             INTEGER NOT NULL,
    stream          TEXT    NOT NULL CHECK (stream IN ('stdout', 'stderr', 'selfdeploy')),
    line            TEXT    NOT NULL,
    at              INTEGER NOT NULL,
    PRIMARY KEY (deployment_id, seq)
);

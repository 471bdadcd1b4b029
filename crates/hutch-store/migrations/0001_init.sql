-- Hutch control-plane schema, first cut. Timestamps are Unix milliseconds (UTC).

CREATE TABLE teams (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY NOT NULL,
    team_id     TEXT NOT NULL REFERENCES teams(id),
    name        TEXT NOT NULL,
    admin       INTEGER NOT NULL DEFAULT 0,
    prefix      TEXT NOT NULL,
    hash        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE INDEX api_keys_team ON api_keys(team_id);

CREATE TABLE sandboxes (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    team_id     TEXT NOT NULL REFERENCES teams(id),
    template    TEXT NOT NULL,
    state       TEXT NOT NULL,
    cpus        REAL NOT NULL,
    memory_mb   INTEGER NOT NULL,
    pids        INTEGER NOT NULL,
    timeout_s   INTEGER NOT NULL,
    on_timeout  TEXT NOT NULL,
    env         TEXT NOT NULL DEFAULT '{}',
    metadata    TEXT NOT NULL DEFAULT '{}',
    network     TEXT NOT NULL DEFAULT '{"mode":"none"}',
    created_at  INTEGER NOT NULL,
    started_at  INTEGER,
    expires_at  INTEGER,
    reason      TEXT,
    deleted_at  INTEGER
);
CREATE INDEX sandboxes_team ON sandboxes(team_id, seq);
CREATE INDEX sandboxes_state ON sandboxes(state);
CREATE INDEX sandboxes_expiry ON sandboxes(expires_at) WHERE deleted_at IS NULL;

CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    team_id     TEXT,
    sandbox_id  TEXT,
    type        TEXT NOT NULL,
    time        INTEGER NOT NULL,
    data        TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX events_team ON events(team_id, id);
CREATE INDEX events_sandbox ON events(sandbox_id, id);

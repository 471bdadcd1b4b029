-- Egress log and access requests (approvals).

CREATE TABLE egress (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    sandbox_id      TEXT NOT NULL,
    time            INTEGER NOT NULL,
    kind            TEXT NOT NULL,
    method          TEXT,
    host            TEXT NOT NULL,
    port            INTEGER NOT NULL,
    path            TEXT,
    status          INTEGER,
    bytes_sent      INTEGER NOT NULL DEFAULT 0,
    bytes_received  INTEGER NOT NULL DEFAULT 0,
    allowed         INTEGER NOT NULL,
    rule            TEXT,
    reason          TEXT
);
CREATE INDEX egress_sandbox ON egress(sandbox_id, seq);

CREATE TABLE approvals (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    team_id         TEXT NOT NULL REFERENCES teams(id),
    sandbox_id      TEXT NOT NULL,
    host            TEXT NOT NULL,
    path            TEXT,
    ports           TEXT NOT NULL DEFAULT '[]',
    justification   TEXT NOT NULL,
    state           TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    decided_at      INTEGER,
    note            TEXT,
    granted         TEXT
);
CREATE INDEX approvals_team ON approvals(team_id, seq);
CREATE INDEX approvals_sandbox ON approvals(sandbox_id, seq);

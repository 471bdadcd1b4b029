-- Team secrets (API keys and the like that the egress gateway injects). The value is never stored
-- in clear: `ciphertext` is AES-256-GCM (tag included) under a key derived from the server's
-- secrets key, with a random 96-bit `nonce` per write and the team and name as associated data,
-- so a row copied to another team or name does not decrypt. Nothing derived from the value
-- (hash, length, prefix) is kept.

CREATE TABLE secrets (
    team_id     TEXT NOT NULL REFERENCES teams(id),
    name        TEXT NOT NULL,
    description TEXT,
    -- Domains (JSON array; exact or `*.example.com`) the value may be injected into.
    hosts       TEXT NOT NULL DEFAULT '[]',
    nonce       BLOB NOT NULL,
    ciphertext  BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (team_id, name)
);

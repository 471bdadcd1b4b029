-- Per-sandbox preview settings. No row: previews need the sandbox's preview token.

CREATE TABLE previews (
    sandbox_id  TEXT PRIMARY KEY NOT NULL REFERENCES sandboxes(id),
    public      INTEGER NOT NULL DEFAULT 0,
    updated_at  INTEGER NOT NULL
);

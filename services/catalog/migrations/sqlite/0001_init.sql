-- Dataset manifests (SQLite). Times are microseconds since the Unix epoch;
-- counts are INTEGER (64-bit). Files are rows, not a JSON blob, so a commit
-- touches only the files it adds or removes.
CREATE TABLE datasets (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT    NOT NULL UNIQUE,
    bucket        TEXT    NOT NULL,
    description   TEXT    NOT NULL DEFAULT '',
    schema_json   TEXT    NOT NULL DEFAULT '[]',
    file_count    INTEGER NOT NULL DEFAULT 0,
    row_count     INTEGER NOT NULL DEFAULT 0,
    size_bytes    INTEGER NOT NULL DEFAULT 0,
    source_kind   TEXT    NOT NULL DEFAULT '',
    source        TEXT    NOT NULL DEFAULT '',
    source_query  TEXT    NOT NULL DEFAULT '',
    ingest_id     TEXT    NOT NULL DEFAULT '',
    start_us      INTEGER,
    finish_us     INTEGER,
    snapshot_us   INTEGER,
    lineage_rows  INTEGER NOT NULL DEFAULT 0,
    lineage_bytes INTEGER NOT NULL DEFAULT 0,
    create_us     INTEGER NOT NULL,
    update_us     INTEGER NOT NULL,
    version       INTEGER NOT NULL
);

CREATE TABLE files (
    dataset_id  INTEGER NOT NULL REFERENCES datasets (id) ON DELETE CASCADE,
    object_key  TEXT    NOT NULL,
    size_bytes  INTEGER NOT NULL,
    row_count   INTEGER NOT NULL,
    etag        TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (dataset_id, object_key)
) WITHOUT ROWID;

-- Dataset manifests (PostgreSQL). Times are microseconds since the Unix
-- epoch, as in the SQLite schema, so both backends share their queries.
-- Names and keys use the "C" collation: byte order, the same sort order
-- as SQLite, and what prefix ranges in ListDatasets rely on.
CREATE TABLE datasets (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          TEXT COLLATE "C" NOT NULL UNIQUE,
    bucket        TEXT   NOT NULL,
    description   TEXT   NOT NULL DEFAULT '',
    schema_json   TEXT   NOT NULL DEFAULT '[]',
    file_count    BIGINT NOT NULL DEFAULT 0,
    row_count     BIGINT NOT NULL DEFAULT 0,
    size_bytes    BIGINT NOT NULL DEFAULT 0,
    source_kind   TEXT   NOT NULL DEFAULT '',
    source        TEXT   NOT NULL DEFAULT '',
    source_query  TEXT   NOT NULL DEFAULT '',
    ingest_id     TEXT   NOT NULL DEFAULT '',
    start_us      BIGINT,
    finish_us     BIGINT,
    snapshot_us   BIGINT,
    lineage_rows  BIGINT NOT NULL DEFAULT 0,
    lineage_bytes BIGINT NOT NULL DEFAULT 0,
    create_us     BIGINT NOT NULL,
    update_us     BIGINT NOT NULL,
    version       BIGINT NOT NULL
);

CREATE TABLE files (
    dataset_id  BIGINT NOT NULL REFERENCES datasets (id) ON DELETE CASCADE,
    object_key  TEXT COLLATE "C" NOT NULL,
    size_bytes  BIGINT NOT NULL,
    row_count   BIGINT NOT NULL,
    etag        TEXT   NOT NULL DEFAULT '',
    PRIMARY KEY (dataset_id, object_key)
);

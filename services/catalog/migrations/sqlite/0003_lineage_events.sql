-- Lineage history: one row per event that produced a dataset version (a
-- commit, a resync, a schema change), written in the commit's own
-- transaction, so a resync no longer erases where the data came from. The
-- lineage columns mirror those of `datasets`; `added_columns` is a JSON
-- array of column names (schema changes). Rows go with their dataset.
CREATE TABLE lineage_events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    dataset_id      INTEGER NOT NULL REFERENCES datasets (id) ON DELETE CASCADE,
    dataset_version INTEGER NOT NULL,
    kind            TEXT    NOT NULL,
    source_kind     TEXT    NOT NULL DEFAULT '',
    source          TEXT    NOT NULL DEFAULT '',
    source_query    TEXT    NOT NULL DEFAULT '',
    ingest_id       TEXT    NOT NULL DEFAULT '',
    start_us        INTEGER,
    finish_us       INTEGER,
    snapshot_us     INTEGER,
    lineage_rows    INTEGER NOT NULL DEFAULT 0,
    lineage_bytes   INTEGER NOT NULL DEFAULT 0,
    added_columns   TEXT    NOT NULL DEFAULT '[]',
    create_us       INTEGER NOT NULL
);

CREATE INDEX lineage_events_by_dataset ON lineage_events (dataset_id, id);

-- Existing datasets start their history with the lineage they hold now,
-- recorded at their current version (the version that set it is unknown).
INSERT INTO lineage_events (dataset_id, dataset_version, kind, source_kind, source,
    source_query, ingest_id, start_us, finish_us, snapshot_us, lineage_rows,
    lineage_bytes, create_us)
SELECT id, version, CASE WHEN source_kind = 'resync' THEN 'resync' ELSE 'commit' END,
    source_kind, source, source_query, ingest_id, start_us, finish_us, snapshot_us,
    lineage_rows, lineage_bytes, update_us
FROM datasets
WHERE source_kind <> '' OR source <> '' OR ingest_id <> '';

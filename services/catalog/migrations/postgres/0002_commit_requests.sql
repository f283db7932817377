-- Idempotent commits: the first response to each CommitFiles request id,
-- written in the same transaction as the commit it describes, so a retry
-- (even after a restart, even after later commits) replays it instead of
-- committing again. `dataset` is the name the id was used for: reusing an
-- id for another dataset is refused. Rows older than the retention window
-- are pruned by later commits (`create_us` index).
CREATE TABLE commit_requests (
    request_id  TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    dataset     TEXT   NOT NULL,
    version     BIGINT NOT NULL,
    response    TEXT   NOT NULL,
    create_us   BIGINT NOT NULL
);

CREATE INDEX commit_requests_by_age ON commit_requests (create_us);

-- A small source database for a first ingest (docs/deploy.md), created once
-- when the PostgreSQL volume is new. The catalog's own database (`catalog`)
-- is created by the image from POSTGRES_DB; the catalog migrates it itself.
--
--   lakehouse --addr 127.0.0.1:50053 ingest postgres --dataset candidates --table candidates \
--     --dsn postgres://lakehouse@postgres:5432/staffing --password-secret postgres.password
CREATE DATABASE staffing;
\connect staffing

CREATE TABLE candidates (
    id        bigint PRIMARY KEY,
    summary   text   NOT NULL,
    -- 4 dimensions: small enough to read, enough for an HNSW index.
    embedding float4[] NOT NULL CHECK (cardinality(embedding) = 4)
);

INSERT INTO candidates (id, summary, embedding) VALUES
    (1,  'Rust engineer, storage systems, 8 years',          '{0.91, 0.12, 0.05, 0.30}'),
    (2,  'Data engineer, Spark and Parquet pipelines',        '{0.72, 0.55, 0.10, 0.21}'),
    (3,  'PostgreSQL DBA, replication and backups',           '{0.40, 0.81, 0.15, 0.12}'),
    (4,  'ML engineer, embeddings and vector search',         '{0.65, 0.20, 0.88, 0.10}'),
    (5,  'Site reliability engineer, Kubernetes on-call',     '{0.30, 0.35, 0.12, 0.90}'),
    (6,  'Backend developer, gRPC services in Go',            '{0.80, 0.30, 0.20, 0.45}'),
    (7,  'Analytics engineer, dbt and SQL modelling',         '{0.35, 0.90, 0.25, 0.05}'),
    (8,  'Research scientist, approximate nearest neighbours', '{0.55, 0.10, 0.95, 0.08}'),
    (9,  'Platform engineer, MinIO and object storage',       '{0.85, 0.25, 0.07, 0.60}'),
    (10, 'Recruiter, technical hiring for data teams',        '{0.10, 0.60, 0.30, 0.20}');

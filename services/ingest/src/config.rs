//! Ingest flags, flattened into `lakehouse serve`. Precedence: flag >
//! environment (`LAKEHOUSE_INGEST_*`) > default. The defaults keep one
//! ingest's memory near 150 MB whatever the table size; see ADR 0006.

use std::time::Duration;

/// Ingest settings.
#[derive(Debug, Clone, clap::Args)]
pub struct IngestConfig {
    /// Rows per Arrow batch handed from the PostgreSQL reader to the Parquet
    /// encoder.
    #[arg(long = "ingest-batch-rows", env = "LAKEHOUSE_INGEST_BATCH_ROWS", default_value_t = 16_384, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub batch_rows: u64,

    /// Source bytes after which a batch is cut early, so wide rows (large
    /// text, bytea, arrays) keep batches small.
    #[arg(long = "ingest-batch-bytes", env = "LAKEHOUSE_INGEST_BATCH_BYTES", default_value = "16MiB", value_parser = parse_bytes)]
    pub batch_bytes: u64,

    /// Batches queued between the reader and the encoder: how far reading
    /// may run ahead of encoding.
    #[arg(long = "ingest-queue-batches", env = "LAKEHOUSE_INGEST_QUEUE_BATCHES", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub queue_batches: u64,

    /// Default rows per Parquet row group (a request may override it).
    #[arg(long = "ingest-row-group-rows", env = "LAKEHOUSE_INGEST_ROW_GROUP_ROWS", default_value_t = 131_072, value_parser = clap::value_parser!(u64).range(1..))]
    pub row_group_rows: u64,

    /// Encoded bytes after which a row group is closed early (bounds the
    /// encoder's memory for wide rows).
    #[arg(long = "ingest-row-group-bytes", env = "LAKEHOUSE_INGEST_ROW_GROUP_BYTES", default_value = "96MiB", value_parser = parse_bytes)]
    pub row_group_bytes: u64,

    /// Size after which a Parquet part is closed and the next one started.
    #[arg(long = "ingest-part-bytes", env = "LAKEHOUSE_INGEST_PART_BYTES", default_value = "512MiB", value_parser = parse_bytes)]
    pub part_bytes: u64,

    /// zstd compression level of the Parquet parts (1 is fastest).
    #[arg(long = "ingest-zstd-level", env = "LAKEHOUSE_INGEST_ZSTD_LEVEL", default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=22))]
    pub zstd_level: i32,

    /// Most PostgreSQL connections one ingest may read with (the request's
    /// `parallelism` is capped to this).
    #[arg(long = "ingest-max-parallelism", env = "LAKEHOUSE_INGEST_MAX_PARALLELISM", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub max_parallelism: u32,

    /// Ingests that run at once; more wait their turn (each holds its own
    /// bounded memory, so this bounds the process).
    #[arg(long = "ingest-max-concurrent", env = "LAKEHOUSE_INGEST_MAX_CONCURRENT", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub max_concurrent: u32,

    /// Finished ingests kept in memory for ListIngests/GetIngest.
    #[arg(long = "ingest-history", env = "LAKEHOUSE_INGEST_HISTORY", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub history: u64,

    /// How long to wait for a source PostgreSQL connection.
    #[arg(long = "ingest-connect-timeout", env = "LAKEHOUSE_INGEST_CONNECT_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,

    /// Largest uploaded Parquet file (it is spooled to a temporary file,
    /// since Parquet's footer comes last); CSV and NDJSON stream and have no
    /// limit.
    #[arg(long = "ingest-max-upload-bytes", env = "LAKEHOUSE_INGEST_MAX_UPLOAD_BYTES", default_value = "4GiB", value_parser = parse_bytes)]
    pub max_upload_bytes: u64,

    /// How long an ingest folder (`datasets/<d>/<ingest-id>/`) must have
    /// gone unwritten before the orphan sweeper may remove the parts of an
    /// ingest that died without committing. It must exceed the longest gap
    /// between an ingest's last part and its commit; see the sweeper's docs.
    #[arg(long = "ingest-orphan-grace", env = "LAKEHOUSE_INGEST_ORPHAN_GRACE", default_value = "1h", value_parser = humantime::parse_duration)]
    pub orphan_grace: Duration,

    /// How often the orphan sweeper runs in the background; 0 turns it off
    /// (SweepOrphans still runs it on demand).
    #[arg(long = "ingest-sweep-interval", env = "LAKEHOUSE_INGEST_SWEEP_INTERVAL", default_value = "10m", value_parser = humantime::parse_duration)]
    pub sweep_interval: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            batch_rows: 16_384,
            batch_bytes: 16 << 20,
            queue_batches: 4,
            row_group_rows: 131_072,
            row_group_bytes: 96 << 20,
            part_bytes: 512 << 20,
            zstd_level: 1,
            max_parallelism: 8,
            max_concurrent: 2,
            history: 1000,
            connect_timeout: Duration::from_secs(10),
            max_upload_bytes: 4 << 30,
            orphan_grace: Duration::from_secs(3600),
            sweep_interval: Duration::from_secs(600),
        }
    }
}

pub use lakehouse_shared::config::parse_bytes;

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        ingest: IngestConfig,
    }

    #[test]
    fn defaults_match_the_default_impl() {
        let cli = Cli::try_parse_from(["x"]).expect("defaults parse");
        let defaults = IngestConfig::default();
        assert_eq!(cli.ingest.batch_rows, defaults.batch_rows);
        assert_eq!(cli.ingest.batch_bytes, defaults.batch_bytes);
        assert_eq!(cli.ingest.row_group_bytes, defaults.row_group_bytes);
        assert_eq!(cli.ingest.part_bytes, defaults.part_bytes);
        assert_eq!(cli.ingest.max_upload_bytes, defaults.max_upload_bytes);
        assert_eq!(cli.ingest.connect_timeout, defaults.connect_timeout);
        assert_eq!(cli.ingest.orphan_grace, defaults.orphan_grace);
        assert_eq!(cli.ingest.sweep_interval, defaults.sweep_interval);
    }

    #[test]
    fn a_zero_sweep_interval_parses_as_off() {
        let cli = Cli::try_parse_from([
            "x",
            "--ingest-sweep-interval",
            "0",
            "--ingest-orphan-grace",
            "90s",
        ])
        .expect("flags parse");
        assert_eq!(cli.ingest.sweep_interval, Duration::ZERO);
        assert_eq!(cli.ingest.orphan_grace, Duration::from_secs(90));
    }

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_bytes("16MiB"), Ok(16 << 20));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("12 parsecs").is_err());
    }
}

//! Vector flags, flattened into `lakehouse serve`. Precedence: flag >
//! environment (`LAKEHOUSE_VECTOR_*`) > default.

use lakehouse_shared::config::parse_bytes;

/// Vector service settings.
#[derive(Debug, Clone, clap::Args)]
pub struct VectorConfig {
    /// Index builds running at once; further builds wait (phase QUEUED).
    /// Each build already uses every build thread.
    #[arg(long = "vector-max-builds", env = "LAKEHOUSE_VECTOR_MAX_BUILDS", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub max_builds: u64,

    /// Threads that insert vectors during a build; 0 uses every core.
    /// Searches never wait for them: they run on their callers' threads.
    #[arg(
        long = "vector-build-threads",
        env = "LAKEHOUSE_VECTOR_BUILD_THREADS",
        default_value_t = 0
    )]
    pub build_threads: usize,

    /// Memory budget of the embedding cache; least recently used entries
    /// are evicted past it, and a load larger than it fails up front.
    #[arg(long = "vector-cache-bytes", env = "LAKEHOUSE_VECTOR_CACHE_BYTES", default_value = "4GiB", value_parser = parse_bytes)]
    pub cache_bytes: u64,

    /// Threads of trials and tuning (builds, ground truth, measurements);
    /// 0 uses half the cores (at least one), so serving keeps the rest.
    #[arg(
        long = "vector-trial-threads",
        env = "LAKEHOUSE_VECTOR_TRIAL_THREADS",
        default_value_t = 0
    )]
    pub trial_threads: usize,

    /// Trial runs (RunTrial, TuneIndex) running at once; further runs wait.
    #[arg(long = "vector-max-trials", env = "LAKEHOUSE_VECTOR_MAX_TRIALS", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=16))]
    pub max_trials: u64,

    /// Memory one trial build may take (its graph, and the sample it builds
    /// on while tuning); a trial estimated to need more fails up front.
    #[arg(long = "vector-trial-memory-bytes", env = "LAKEHOUSE_VECTOR_TRIAL_MEMORY_BYTES", default_value = "2GiB", value_parser = parse_bytes)]
    pub trial_memory_bytes: u64,

    /// Largest request or response of the vector service, above the
    /// server's `--max-message-bytes`: a BatchSearch of 10,000 queries of
    /// 768 dimensions is 31 MB. A response past it (many queries times a
    /// large k) is refused with RESOURCE_EXHAUSTED before it is sent.
    #[arg(id = "vector_max_message_bytes", long = "vector-max-message-bytes", env = "LAKEHOUSE_VECTOR_MAX_MESSAGE_BYTES", default_value = "64MiB", value_parser = parse_bytes)]
    pub max_message_bytes: u64,
}

impl Default for VectorConfig {
    fn default() -> Self {
        Self {
            max_builds: 1,
            build_threads: 0,
            cache_bytes: 4 << 30,
            trial_threads: 0,
            max_trials: 1,
            trial_memory_bytes: 2 << 30,
            max_message_bytes: 64 << 20,
        }
    }
}

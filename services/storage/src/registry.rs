//! The bucket registry: named `object_store` backends built from the buckets
//! file, with credentials from the secrets provider.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lakehouse_shared::secrets::SecretsProvider;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, RetryConfig};

use crate::config::{BackendConfig, BucketsFile};
use crate::{Error, Result};

/// The kind of backend, with what a probe needs to know about it.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A folder.
    Local {
        /// The folder.
        root: PathBuf,
    },
    /// An S3-compatible server.
    S3 {
        /// Endpoint URL.
        endpoint: String,
        /// Bucket on the server.
        bucket: String,
    },
    /// Process memory.
    Memory,
}

/// One configured bucket.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// Its name.
    pub name: String,
    /// Its backend kind.
    pub backend: Backend,
    /// The store that holds its objects.
    pub store: Arc<dyn ObjectStore>,
    /// The bucket that serves reads when this one fails.
    pub rescue: Option<String>,
}

impl Bucket {
    /// Where the data lives, without credentials.
    pub fn location(&self) -> String {
        match &self.backend {
            Backend::Local { root } => root.display().to_string(),
            Backend::S3 { endpoint, bucket } => format!("{endpoint}/{bucket}"),
            Backend::Memory => "memory".to_owned(),
        }
    }

    /// For a local bucket: the folder must exist. `LocalFileSystem` creates
    /// missing parents on write, so without this check a write to a bucket
    /// whose folder (or mount) vanished would silently recreate it elsewhere,
    /// and a read would look like a plain miss.
    pub async fn local_root_missing(&self) -> Option<String> {
        let Backend::Local { root } = &self.backend else {
            return None;
        };
        match tokio::fs::metadata(root).await {
            Ok(meta) if meta.is_dir() => None,
            Ok(_) => Some(format!("bucket folder {} is not a folder", root.display())),
            Err(error) => Some(format!("bucket folder {}: {error}", root.display())),
        }
    }

    /// Checks that the backend answers. A local bucket whose folder is gone
    /// is unreachable even though listing it would look empty.
    pub async fn probe(&self, timeout: Duration) -> std::result::Result<Duration, String> {
        let started = Instant::now();
        if let Backend::Local { root } = &self.backend {
            match tokio::fs::metadata(root).await {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => return Err(format!("{} is not a folder", root.display())),
                Err(error) => return Err(format!("{}: {error}", root.display())),
            }
        }
        let probe = Path::from("_lakehouse/probe");
        match tokio::time::timeout(timeout, self.store.list_with_delimiter(Some(&probe))).await {
            Ok(Ok(_)) => Ok(started.elapsed()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    }
}

/// All buckets by name, and the default.
#[derive(Debug)]
pub struct BucketRegistry {
    buckets: BTreeMap<String, Bucket>,
    default: String,
}

impl BucketRegistry {
    /// Builds every backend. Fails on the first bucket that cannot be built,
    /// naming it; an unreachable S3 endpoint is not a build failure (probes
    /// and the rescue fallback deal with it).
    pub fn build(file: &BucketsFile, secrets: &dyn SecretsProvider) -> Result<Self> {
        let mut buckets = BTreeMap::new();
        for (name, config) in &file.buckets {
            let (backend, store) = build_backend(name, &config.backend, secrets)?;
            buckets.insert(
                name.clone(),
                Bucket {
                    name: name.clone(),
                    backend,
                    store,
                    rescue: config.rescue_bucket.clone(),
                },
            );
        }
        Ok(Self {
            buckets,
            default: file.default_bucket.clone(),
        })
    }

    /// A registry over given buckets, for tests and embedding.
    pub fn from_buckets(buckets: Vec<Bucket>, default: &str) -> Self {
        Self {
            buckets: buckets.into_iter().map(|b| (b.name.clone(), b)).collect(),
            default: default.to_owned(),
        }
    }

    /// The bucket named, or the default when the name is empty.
    pub fn get(&self, name: &str) -> Result<&Bucket> {
        let name = if name.is_empty() { &self.default } else { name };
        self.buckets.get(name).ok_or_else(|| Error::UnknownBucket {
            name: name.to_owned(),
            known: self.names().join(", "),
        })
    }

    /// The default bucket.
    pub fn default_bucket(&self) -> &Bucket {
        // `build` and `from_buckets` callers guarantee the default exists
        // (the buckets file is validated); fall back to any bucket otherwise.
        self.buckets
            .get(&self.default)
            .or_else(|| self.buckets.values().next())
            .unwrap_or_else(|| unreachable!("a registry always has at least one bucket"))
    }

    /// The default bucket's name.
    pub fn default_name(&self) -> &str {
        &self.default
    }

    /// Every bucket, by name.
    pub fn all(&self) -> impl Iterator<Item = &Bucket> {
        self.buckets.values()
    }

    /// Every bucket name, sorted.
    pub fn names(&self) -> Vec<String> {
        self.buckets.keys().cloned().collect()
    }
}

fn build_backend(
    name: &str,
    config: &BackendConfig,
    secrets: &dyn SecretsProvider,
) -> Result<(Backend, Arc<dyn ObjectStore>)> {
    match config {
        BackendConfig::Local { path } => {
            std::fs::create_dir_all(path).map_err(|source| Error::CreateFolder {
                bucket: name.to_owned(),
                path: path.clone(),
                source,
            })?;
            let store = LocalFileSystem::new_with_prefix(path)
                .map_err(|source| Error::BuildBackend {
                    bucket: name.to_owned(),
                    source,
                })?
                .with_automatic_cleanup(true);
            Ok((Backend::Local { root: path.clone() }, Arc::new(store)))
        }
        BackendConfig::Memory => Ok((Backend::Memory, Arc::new(InMemory::new()))),
        BackendConfig::S3 {
            endpoint,
            region,
            bucket,
            path_style,
            credentials,
            connect_timeout,
            max_retries,
        } => {
            let mut builder = AmazonS3Builder::new()
                .with_region(region)
                .with_bucket_name(bucket)
                .with_virtual_hosted_style_request(!path_style)
                .with_retry(RetryConfig {
                    max_retries: *max_retries,
                    retry_timeout: Duration::from_secs(10),
                    ..RetryConfig::default()
                })
                .with_client_options(
                    ClientOptions::new()
                        .with_connect_timeout(*connect_timeout)
                        .with_allow_http(true),
                );
            if let Some(endpoint) = endpoint {
                builder = builder.with_endpoint(endpoint);
            }
            match credentials {
                Some(prefix) => {
                    let secret = |suffix: &str| {
                        secrets
                            .require(&format!("{prefix}.{suffix}"))
                            .map_err(|source| Error::Secret {
                                bucket: name.to_owned(),
                                source,
                            })
                    };
                    builder = builder
                        .with_access_key_id(secret("access_key_id")?.expose())
                        .with_secret_access_key(secret("secret_access_key")?.expose());
                }
                None => builder = builder.with_skip_signature(true),
            }
            let store = builder.build().map_err(|source| Error::BuildBackend {
                bucket: name.to_owned(),
                source,
            })?;
            let backend = Backend::S3 {
                endpoint: endpoint
                    .clone()
                    .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com")),
                bucket: bucket.clone(),
            };
            Ok((backend, Arc::new(store)))
        }
    }
}

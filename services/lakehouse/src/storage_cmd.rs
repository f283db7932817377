//! `lakehouse storage …`: the storage service from the shell, for people who
//! would rather not type grpcurl JSON. Uploads and downloads stream, so any
//! file size works.

use std::path::PathBuf;
use std::process::ExitCode;

use futures::StreamExt as _;
use lakehouse_client::GrpcObjectStore;
use lakehouse_proto::storage::v1 as pb;
use object_store::path::Path;
use object_store::{ObjectStore as _, ObjectStoreExt as _, WriteMultipart};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Client commands for the storage service.
#[derive(Debug, clap::Args)]
pub struct StorageArgs {
    /// Storage (or `serve all`) address.
    #[arg(
        long,
        env = "LAKEHOUSE_STORAGE_ADDR",
        default_value = "127.0.0.1:50051",
        global = true
    )]
    pub addr: String,

    /// Bucket; empty uses the server's default bucket.
    #[arg(long, default_value = "", global = true)]
    pub bucket: String,

    #[command(flatten)]
    pub auth: crate::cli::TokenArgs,

    #[command(subcommand)]
    pub command: StorageCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum StorageCommand {
    /// List the configured buckets.
    Buckets,
    /// Probe every bucket.
    Health,
    /// List keys under a prefix.
    Ls {
        /// Prefix to list.
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Upload a file.
    Put {
        /// Local file.
        file: PathBuf,
        /// Object key.
        key: String,
    },
    /// Download an object to a file, or to stdout with `-`.
    Get {
        /// Object key.
        key: String,
        /// Local file, or `-`.
        #[arg(default_value = "-")]
        file: String,
    },
    /// Delete an object.
    Rm {
        /// Object key.
        key: String,
    },
    /// Show the error journal.
    Errors {
        /// Only this service's failures.
        #[arg(long, default_value = "")]
        service: String,
    },
}

pub async fn run(args: StorageArgs) -> Result<ExitCode> {
    let channel = lakehouse_client::connect_with(&args.addr, args.auth.token.as_ref()).await?;
    let mut client = lakehouse_client::storage(channel);
    let store = GrpcObjectStore::new(client.clone(), args.bucket.clone());
    match args.command {
        StorageCommand::Buckets => {
            let buckets = client
                .list_buckets(pb::ListBucketsRequest {})
                .await?
                .into_inner()
                .buckets;
            for b in buckets {
                let default = if b.is_default { " (default)" } else { "" };
                let rescue = if b.rescue_bucket.is_empty() {
                    String::new()
                } else {
                    format!(" rescue={}", b.rescue_bucket)
                };
                println!(
                    "{}{default}\t{}\t{}{rescue}",
                    b.name,
                    b.backend().as_str_name(),
                    b.location
                );
            }
        }
        StorageCommand::Health => {
            let report = client
                .get_bucket_health(pb::GetBucketHealthRequest::default())
                .await?
                .into_inner()
                .buckets;
            let mut all_ok = true;
            for b in report {
                all_ok &= b.reachable;
                let state = if b.reachable {
                    "reachable"
                } else {
                    "UNREACHABLE"
                };
                println!("{}\t{state}\t{} µs\t{}", b.bucket, b.latency_us, b.error);
            }
            if !all_ok {
                return Ok(ExitCode::FAILURE);
            }
        }
        StorageCommand::Ls { prefix } => {
            let prefix = (!prefix.is_empty()).then(|| Path::from(prefix.as_str()));
            let mut listing = store.list(prefix.as_ref());
            while let Some(meta) = listing.next().await {
                let meta = meta?;
                println!(
                    "{}\t{}\t{}",
                    meta.size,
                    meta.last_modified.to_rfc3339(),
                    meta.location
                );
            }
        }
        StorageCommand::Put { file, key } => {
            let mut input = tokio::fs::File::open(&file)
                .await
                .map_err(|e| format!("cannot open {}: {e}", file.display()))?;
            let upload = store.put_multipart(&Path::from(key.as_str())).await?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, 8 << 20);
            let mut buffer = vec![0u8; 1 << 20];
            let mut total = 0u64;
            loop {
                let n = input.read(&mut buffer).await?;
                if n == 0 {
                    break;
                }
                total += n as u64;
                writer.wait_for_capacity(4).await?;
                writer.write(&buffer[..n]);
            }
            writer.finish().await?;
            eprintln!("uploaded {total} bytes to {key}");
        }
        StorageCommand::Get { key, file } => {
            let mut stream = store.get(&Path::from(key.as_str())).await?.into_stream();
            let mut output: Box<dyn tokio::io::AsyncWrite + Unpin> = if file == "-" {
                Box::new(tokio::io::stdout())
            } else {
                Box::new(
                    tokio::fs::File::create(&file)
                        .await
                        .map_err(|e| format!("cannot create {file}: {e}"))?,
                )
            };
            while let Some(chunk) = stream.next().await {
                output.write_all(&chunk?).await?;
            }
            output.flush().await?;
        }
        StorageCommand::Rm { key } => {
            store.delete(&Path::from(key.as_str())).await?;
        }
        StorageCommand::Errors { service } => {
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_errors(pb::ListErrorsRequest {
                        service: service.clone(),
                        bucket: args.bucket.clone(),
                        page_token,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                for e in page.errors {
                    let time = e
                        .time
                        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default();
                    println!(
                        "{time}\t{}\t{}\t{}\t{}\t{}",
                        e.service, e.operation, e.bucket, e.key, e.message
                    );
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

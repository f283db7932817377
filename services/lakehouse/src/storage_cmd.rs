//! `lakehouse buckets | objects | errors`: the storage service from the
//! shell, for people who would rather not type grpcurl JSON. Uploads and
//! downloads stream, so any file size works. `lakehouse storage …` is the
//! older spelling of the same commands, kept for scripts; both call the
//! functions below.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use futures::StreamExt as _;
use lakehouse_client::{GrpcObjectStore, StorageClient};
use lakehouse_proto::storage::v1 as pb;
use object_store::path::Path;
use object_store::{ObjectStore as _, ObjectStoreExt as _, WriteMultipart};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::cmd::{CliError, Output, Result, StorageTarget, Table, print, time_text};

/// `lakehouse buckets`: list the buckets, or probe them.
#[derive(Debug, clap::Args)]
pub struct BucketsArgs {
    #[command(flatten)]
    pub target: StorageTarget,
    #[command(subcommand)]
    pub command: Option<BucketsCommand>,
}

#[derive(Debug, clap::Subcommand)]
pub enum BucketsCommand {
    /// List the configured buckets (the default).
    Ls,
    /// Probe every bucket; exit 1 when one is unreachable.
    Health,
}

/// `lakehouse objects …`.
#[derive(Debug, clap::Args)]
pub struct ObjectsArgs {
    #[command(flatten)]
    pub target: StorageTarget,
    /// Bucket; empty uses the server's default bucket.
    #[arg(long, default_value = "", global = true)]
    pub bucket: String,
    #[command(subcommand)]
    pub command: ObjectsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ObjectsCommand {
    /// List keys under a prefix, with size and modification time.
    Ls {
        /// Prefix to list (a folder, such as `datasets/people`).
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Upload a local file (streamed in multipart chunks).
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
}

/// `lakehouse errors …`.
#[derive(Debug, clap::Args)]
pub struct ErrorsArgs {
    #[command(flatten)]
    pub target: StorageTarget,
    #[command(subcommand)]
    pub command: ErrorsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ErrorsCommand {
    /// Show the error journal (failed storage calls of every service),
    /// oldest first.
    Ls(ErrorFilter),
}

/// Which journal entries to show.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ErrorFilter {
    /// Only this service's failures (storage, catalog, ingest, vector).
    #[arg(long, default_value = "")]
    pub service: String,
    /// Only failures in this bucket.
    #[arg(long, default_value = "")]
    pub bucket: String,
    /// Only failures younger than this (such as 1h or 30m).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub since: Option<Duration>,
}

/// `lakehouse storage …`: the older spelling of buckets, objects and errors.
#[derive(Debug, clap::Args)]
pub struct StorageArgs {
    #[command(flatten)]
    pub target: StorageTarget,

    /// Bucket; empty uses the server's default bucket.
    #[arg(long, default_value = "", global = true)]
    pub bucket: String,

    #[command(subcommand)]
    pub command: StorageCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum StorageCommand {
    /// List the configured buckets (= `buckets`).
    Buckets,
    /// Probe every bucket (= `buckets health`).
    Health,
    /// List keys under a prefix (= `objects ls`).
    Ls {
        /// Prefix to list.
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Upload a file (= `objects put`).
    Put {
        /// Local file.
        file: PathBuf,
        /// Object key.
        key: String,
    },
    /// Download an object to a file, or to stdout with `-` (= `objects get`).
    Get {
        /// Object key.
        key: String,
        /// Local file, or `-`.
        #[arg(default_value = "-")]
        file: String,
    },
    /// Delete an object (= `objects rm`).
    Rm {
        /// Object key.
        key: String,
    },
    /// Show the error journal (= `errors ls`).
    Errors {
        /// Only this service's failures.
        #[arg(long, default_value = "")]
        service: String,
    },
}

async fn client(target: &StorageTarget) -> Result<StorageClient> {
    Ok(lakehouse_client::storage(target.channel().await?))
}

pub async fn buckets(args: BucketsArgs) -> Result<ExitCode> {
    let mut client = client(&args.target).await?;
    match args.command.unwrap_or(BucketsCommand::Ls) {
        BucketsCommand::Ls => list_buckets(&mut client, args.target.output).await,
        BucketsCommand::Health => bucket_health(&mut client, args.target.output).await,
    }
}

pub async fn objects(args: ObjectsArgs) -> Result<ExitCode> {
    let client = client(&args.target).await?;
    let store = GrpcObjectStore::new(client, args.bucket.clone());
    match args.command {
        ObjectsCommand::Ls { prefix } => list_objects(&store, &prefix, args.target.output).await,
        ObjectsCommand::Put { file, key } => put(&store, &file, &key, args.target.output).await,
        ObjectsCommand::Get { key, file } => get(&store, &key, &file).await,
        ObjectsCommand::Rm { key } => rm(&store, &key, args.target.output).await,
    }
}

pub async fn errors(args: ErrorsArgs) -> Result<ExitCode> {
    let mut client = client(&args.target).await?;
    match args.command {
        ErrorsCommand::Ls(filter) => list_errors(&mut client, &filter, args.target.output).await,
    }
}

pub async fn run(args: StorageArgs) -> Result<ExitCode> {
    let out = args.target.output;
    let mut client = client(&args.target).await?;
    let store = GrpcObjectStore::new(client.clone(), args.bucket.clone());
    match args.command {
        StorageCommand::Buckets => list_buckets(&mut client, out).await,
        StorageCommand::Health => bucket_health(&mut client, out).await,
        StorageCommand::Ls { prefix } => list_objects(&store, &prefix, out).await,
        StorageCommand::Put { file, key } => put(&store, &file, &key, out).await,
        StorageCommand::Get { key, file } => get(&store, &key, &file).await,
        StorageCommand::Rm { key } => rm(&store, &key, out).await,
        StorageCommand::Errors { service } => {
            let filter = ErrorFilter {
                service,
                bucket: args.bucket,
                since: None,
            };
            list_errors(&mut client, &filter, out).await
        }
    }
}

async fn list_buckets(client: &mut StorageClient, out: Output) -> Result<ExitCode> {
    let buckets = client
        .list_buckets(pb::ListBucketsRequest {})
        .await?
        .into_inner()
        .buckets;
    let mut table = Table::new(out, &["NAME", "DEFAULT", "BACKEND", "LOCATION", "RESCUE"]);
    for b in &buckets {
        let backend = b
            .backend()
            .as_str_name()
            .trim_start_matches("BACKEND_KIND_")
            .to_lowercase();
        let value = json!({
            "name": b.name, "default": b.is_default, "backend": backend,
            "location": b.location, "rescue_bucket": b.rescue_bucket,
        });
        table.row(&value, || {
            vec![
                b.name.clone(),
                if b.is_default { "default" } else { "" }.to_owned(),
                backend.clone(),
                b.location.clone(),
                b.rescue_bucket.clone(),
            ]
        });
    }
    table.finish();
    Ok(ExitCode::SUCCESS)
}

async fn bucket_health(client: &mut StorageClient, out: Output) -> Result<ExitCode> {
    let report = client
        .get_bucket_health(pb::GetBucketHealthRequest::default())
        .await?
        .into_inner()
        .buckets;
    let mut all_ok = true;
    let mut table = Table::new(out, &["BUCKET", "STATE", "LATENCY", "ERROR"]);
    for b in &report {
        all_ok &= b.reachable;
        let value = json!({
            "bucket": b.bucket, "reachable": b.reachable, "latency_us": b.latency_us,
            "error": b.error, "check_time": time_text(b.check_time.as_ref()),
        });
        table.row(&value, || {
            vec![
                b.bucket.clone(),
                if b.reachable {
                    "reachable"
                } else {
                    "UNREACHABLE"
                }
                .to_owned(),
                format!("{} µs", b.latency_us),
                b.error.clone(),
            ]
        });
    }
    table.finish();
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn list_objects(store: &GrpcObjectStore, prefix: &str, out: Output) -> Result<ExitCode> {
    let prefix = (!prefix.is_empty()).then(|| Path::from(prefix));
    let mut listing = store.list(prefix.as_ref());
    let mut table = Table::new(out, &["SIZE", "MODIFIED", "KEY"]);
    while let Some(meta) = listing.next().await {
        let meta = meta?;
        let modified = meta.last_modified.to_rfc3339();
        let value = json!({
            "key": meta.location.as_ref(), "size": meta.size,
            "last_modified": modified, "etag": meta.e_tag,
        });
        table.row(&value, || {
            vec![
                meta.size.to_string(),
                modified.clone(),
                meta.location.to_string(),
            ]
        });
    }
    table.finish();
    Ok(ExitCode::SUCCESS)
}

async fn put(
    store: &GrpcObjectStore,
    file: &std::path::Path,
    key: &str,
    out: Output,
) -> Result<ExitCode> {
    let read_error = |source| CliError::ReadFile {
        path: file.to_owned(),
        source,
    };
    let mut input = tokio::fs::File::open(file).await.map_err(read_error)?;
    let upload = store.put_multipart(&Path::from(key)).await?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, 8 << 20);
    let mut buffer = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = input.read(&mut buffer).await.map_err(read_error)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        writer.wait_for_capacity(4).await?;
        writer.write(&buffer[..n]);
    }
    writer.finish().await?;
    let value = json!({ "key": key, "size": total });
    print(out, &value, || format!("uploaded {total} bytes to {key}"));
    Ok(ExitCode::SUCCESS)
}

async fn get(store: &GrpcObjectStore, key: &str, file: &str) -> Result<ExitCode> {
    let mut stream = store.get(&Path::from(key)).await?.into_stream();
    let write_error = |source| CliError::WriteFile {
        path: PathBuf::from(file),
        source,
    };
    let mut output: Box<dyn tokio::io::AsyncWrite + Unpin> = if file == "-" {
        Box::new(tokio::io::stdout())
    } else {
        Box::new(tokio::fs::File::create(file).await.map_err(write_error)?)
    };
    while let Some(chunk) = stream.next().await {
        output.write_all(&chunk?).await.map_err(write_error)?;
    }
    output.flush().await.map_err(write_error)?;
    Ok(ExitCode::SUCCESS)
}

/// Deletes an object, saying whether it was there: DeleteObject succeeds
/// on a missing key (deletes are idempotent), which would let a typo pass
/// as a deletion, so a HeadObject first makes a missing key not found
/// (exit 3), as `get` and `datasets rm` are.
async fn rm(store: &GrpcObjectStore, key: &str, out: Output) -> Result<ExitCode> {
    let location = Path::from(key);
    let meta = store.head(&location).await?;
    store.delete(&location).await?;
    let value = json!({ "key": key, "size": meta.size, "removed": true });
    print(out, &value, || {
        format!("removed {key} ({} bytes)", meta.size)
    });
    Ok(ExitCode::SUCCESS)
}

async fn list_errors(
    client: &mut StorageClient,
    filter: &ErrorFilter,
    out: Output,
) -> Result<ExitCode> {
    let since = filter.since.map(|age| {
        let at = SystemTime::now()
            .checked_sub(age)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        prost_types::Timestamp::from(at)
    });
    let mut table = Table::new(
        out,
        &["TIME", "SERVICE", "OPERATION", "BUCKET", "KEY", "MESSAGE"],
    );
    let mut page_token = String::new();
    loop {
        let page = client
            .list_errors(pb::ListErrorsRequest {
                service: filter.service.clone(),
                bucket: filter.bucket.clone(),
                since,
                page_token,
                ..Default::default()
            })
            .await?
            .into_inner();
        for e in &page.errors {
            let time = time_text(e.time.as_ref());
            let value = json!({
                "time": time, "service": e.service, "operation": e.operation,
                "bucket": e.bucket, "key": e.key, "message": e.message,
                "rescue_bucket": e.rescue_bucket,
            });
            table.row(&value, || {
                vec![
                    time.clone(),
                    e.service.clone(),
                    e.operation.clone(),
                    e.bucket.clone(),
                    e.key.clone(),
                    e.message.clone(),
                ]
            });
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    table.finish();
    Ok(ExitCode::SUCCESS)
}

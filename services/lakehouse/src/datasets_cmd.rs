//! `lakehouse datasets …`: the catalog from the shell. `show` answers what a
//! person asks about a dataset first: its columns, how many files and rows,
//! which version, and where the data came from.

use std::process::ExitCode;

use lakehouse_client::CatalogClient;
use lakehouse_proto::catalog::v1 as pb;
use serde_json::{Value, json};

use crate::cmd::{CatalogTarget, Output, Result, Table, bytes_text, time_text};

/// `lakehouse datasets …`.
#[derive(Debug, clap::Args)]
pub struct DatasetsArgs {
    #[command(flatten)]
    pub target: CatalogTarget,
    #[command(subcommand)]
    pub command: DatasetsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum DatasetsCommand {
    /// List datasets with their rows, files, size and version.
    Ls {
        /// Only names starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Show one dataset: schema, files, rows, version and lineage.
    Show {
        /// Dataset name.
        name: String,
        /// Also list every file (key, rows, size).
        #[arg(long)]
        files: bool,
    },
    /// Every event that produced a version of a dataset, newest first:
    /// commits (with their source, query and ingest), resyncs and schema
    /// changes.
    Lineage {
        /// Dataset name.
        name: String,
    },
    /// Compare a dataset's manifest with its files in storage and repair
    /// it; without a name, every dataset whose files went missing.
    Resync {
        /// Dataset name; omit to check all datasets.
        name: Option<String>,
        /// Report what differs without changing anything.
        #[arg(long)]
        dry_run: bool,
        /// Accept dropping manifest files that vanished from storage, and
        /// their rows (refused otherwise; check with --dry-run first).
        #[arg(long)]
        allow_row_loss: bool,
    },
    /// Delete a dataset from the catalog (its files stay unless
    /// --delete-files).
    Rm {
        /// Dataset name.
        name: String,
        /// Also delete the dataset's files from storage.
        #[arg(long)]
        delete_files: bool,
        /// Refuse (exit 4) unless the dataset is at this version.
        #[arg(long)]
        expected_version: Option<u64>,
    },
}

pub async fn run(args: DatasetsArgs) -> Result<ExitCode> {
    let out = args.target.output;
    let mut client = lakehouse_client::catalog(args.target.channel().await?);
    match args.command {
        DatasetsCommand::Ls { prefix } => ls(&mut client, prefix, out).await?,
        DatasetsCommand::Show { name, files } => show(&mut client, name, files, out).await?,
        DatasetsCommand::Lineage { name } => lineage(&mut client, name, out).await?,
        DatasetsCommand::Resync {
            name,
            dry_run,
            allow_row_loss,
        } => resync(&mut client, name, dry_run, allow_row_loss, out).await?,
        DatasetsCommand::Rm {
            name,
            delete_files,
            expected_version,
        } => {
            let deleted = client
                .delete_dataset(pb::DeleteDatasetRequest {
                    name: name.clone(),
                    delete_files,
                    expected_version,
                })
                .await?
                .into_inner()
                .deleted_files;
            let value = json!({"name": name, "deleted": true, "deleted_files": deleted});
            crate::cmd::print(out, &value, || {
                format!("deleted {name} ({deleted} files removed from storage)")
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn ls(client: &mut CatalogClient, prefix: String, out: Output) -> Result<()> {
    let mut table = Table::new(
        out,
        &[
            "NAME", "ROWS", "FILES", "SIZE", "VERSION", "SOURCE", "UPDATED",
        ],
    );
    let mut page_token = String::new();
    loop {
        let page = client
            .list_datasets(pb::ListDatasetsRequest {
                name_prefix: prefix.clone(),
                page_token,
                view: pb::DatasetView::Basic as i32,
                ..Default::default()
            })
            .await?
            .into_inner();
        for d in &page.datasets {
            table.row(&dataset_json(d), || {
                vec![
                    d.name.clone(),
                    d.row_count.to_string(),
                    d.file_count.to_string(),
                    bytes_text(d.size_bytes),
                    d.version.to_string(),
                    d.lineage
                        .as_ref()
                        .map(|l| l.source.clone())
                        .unwrap_or_default(),
                    time_text(d.update_time.as_ref()),
                ]
            });
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    table.finish();
    Ok(())
}

async fn lineage(client: &mut CatalogClient, name: String, out: Output) -> Result<()> {
    let mut table = Table::new(
        out,
        &["VERSION", "KIND", "TIME", "SOURCE", "DETAIL", "INGEST"],
    );
    let mut page_token = String::new();
    loop {
        let page = client
            .list_lineage_events(pb::ListLineageEventsRequest {
                name: name.clone(),
                page_token,
                ..Default::default()
            })
            .await?
            .into_inner();
        for e in &page.events {
            let l = e.lineage.clone().unwrap_or_default();
            let detail = if e.added_columns.is_empty() {
                l.query.clone()
            } else {
                format!("added {}", e.added_columns.join(", "))
            };
            table.row(&event_json(e), || {
                vec![
                    e.dataset_version.to_string(),
                    event_kind(e),
                    time_text(e.time.as_ref()),
                    l.source.clone(),
                    detail,
                    l.ingest_id.clone(),
                ]
            });
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    table.finish();
    Ok(())
}

async fn show(client: &mut CatalogClient, name: String, files: bool, out: Output) -> Result<()> {
    let view = if files {
        pb::DatasetView::Full
    } else {
        pb::DatasetView::Basic
    };
    let mut d = client
        .get_dataset(pb::GetDatasetRequest {
            name: name.clone(),
            view: view as i32,
        })
        .await?
        .into_inner()
        .dataset
        .unwrap_or_default();
    if !files {
        // The BASIC view leaves the history out (the FULL view has it, with
        // every file): its first page, the same 100 newest events, so
        // `show` says the same with or without --files.
        d.lineage_history = client
            .list_lineage_events(pb::ListLineageEventsRequest {
                name,
                ..Default::default()
            })
            .await?
            .into_inner()
            .events;
    }
    if out == Output::Json {
        println!("{}", dataset_json(&d));
        return Ok(());
    }
    println!("name:        {}", d.name);
    if !d.description.is_empty() {
        println!("description: {}", d.description);
    }
    println!("bucket:      {}", d.bucket);
    println!("version:     {}", d.version);
    println!("rows:        {}", d.row_count);
    println!("files:       {}", d.file_count);
    println!("size:        {}", bytes_text(d.size_bytes));
    println!("created:     {}", time_text(d.create_time.as_ref()));
    println!("updated:     {}", time_text(d.update_time.as_ref()));
    if let Some(l) = &d.lineage {
        println!("lineage:");
        println!(
            "  source:    {} ({})",
            l.source,
            l.source_kind()
                .as_str_name()
                .trim_start_matches("SOURCE_KIND_")
                .to_lowercase()
        );
        if !l.query.is_empty() {
            println!("  query:     {}", l.query);
        }
        if !l.ingest_id.is_empty() {
            println!("  ingest:    {}", l.ingest_id);
        }
        println!("  finished:  {}", time_text(l.finish_time.as_ref()));
        if l.snapshot_time.is_some() {
            println!("  snapshot:  {}", time_text(l.snapshot_time.as_ref()));
        }
        println!("  rows read: {}", l.rows);
    }
    if !d.lineage_history.is_empty() {
        println!("history (newest first):");
        for e in &d.lineage_history {
            println!("  {}", event_text(e));
        }
    }
    println!("schema:");
    let columns = d
        .schema
        .as_ref()
        .map(|s| s.columns.as_slice())
        .unwrap_or(&[]);
    let width = columns
        .iter()
        .map(|c| c.name.chars().count())
        .max()
        .unwrap_or(0);
    for c in columns {
        let null = if c.nullable { "" } else { " not null" };
        println!("  {:<width$}  {}{null}", c.name, c.data_type);
    }
    if files {
        println!("files:");
        for f in &d.files {
            println!(
                "  {}\t{} rows\t{}",
                f.key,
                f.row_count,
                bytes_text(f.size_bytes)
            );
        }
    }
    Ok(())
}

async fn resync(
    client: &mut CatalogClient,
    name: Option<String>,
    dry_run: bool,
    allow_row_loss: bool,
    out: Output,
) -> Result<()> {
    let reports = match name {
        Some(name) => client
            .resync_dataset(pb::ResyncDatasetRequest {
                name,
                dry_run,
                allow_row_loss,
            })
            .await?
            .into_inner()
            .report
            .into_iter()
            .collect(),
        None => {
            let response = client
                .resync_missing(pb::ResyncMissingRequest {
                    dry_run,
                    allow_row_loss,
                })
                .await?
                .into_inner();
            eprintln!(
                "checked {} datasets, {} needed repair",
                response.datasets_checked,
                response.reports.len()
            );
            response.reports
        }
    };
    for r in &reports {
        crate::cmd::print(out, &report_json(r), || report_text(r));
    }
    Ok(())
}

/// An event's kind as people write it: `commit`, `resync`, `schema_change`.
fn event_kind(e: &pb::LineageEvent) -> String {
    e.kind()
        .as_str_name()
        .trim_start_matches("LINEAGE_EVENT_KIND_")
        .to_lowercase()
}

/// One lineage event on a line: version, kind, then what it carried.
fn event_text(e: &pb::LineageEvent) -> String {
    let kind = event_kind(e);
    let mut text = format!(
        "v{}\t{kind}\t{}",
        e.dataset_version,
        time_text(e.time.as_ref())
    );
    if !e.added_columns.is_empty() {
        text.push_str(&format!("\tadded {}", e.added_columns.join(", ")));
    }
    if let Some(l) = e.lineage.as_ref().filter(|l| !l.source.is_empty()) {
        text.push_str(&format!("\t{}", l.source));
        if !l.query.is_empty() {
            text.push_str(&format!("\t{}", l.query));
        }
        if !l.ingest_id.is_empty() {
            text.push_str(&format!("\tingest {}", l.ingest_id));
        }
    }
    text
}

fn report_text(r: &pb::ResyncReport) -> String {
    let state = match (r.drifted, r.applied, r.refused_row_loss) {
        (false, _, _) => "in sync",
        (true, true, _) => "repaired",
        (true, false, true) => "drifted (refused: would lose rows; see --allow-row-loss)",
        (true, false, false) => "drifted (not applied)",
    };
    let mut text = format!("{}\t{state}\tversion {}", r.dataset, r.version);
    if r.files_lost > 0 {
        text.push_str(&format!(
            "\n  rows lost: {} in {} file(s)",
            r.rows_lost, r.files_lost
        ));
    }
    for f in &r.field_changes {
        text.push_str(&format!("\n  {}: {} -> {}", f.field, f.before, f.after));
    }
    for f in &r.file_changes {
        let kind = f
            .kind()
            .as_str_name()
            .trim_start_matches("FILE_CHANGE_KIND_")
            .to_lowercase();
        text.push_str(&format!("\n  {kind} {}", f.key));
    }
    for p in &r.problems {
        text.push_str(&format!("\n  unreadable {}: {}", p.key, p.error));
    }
    for key in &r.uncommitted_keys {
        text.push_str(&format!("\n  uncommitted (not adopted) {key}"));
    }
    text
}

fn report_json(r: &pb::ResyncReport) -> Value {
    json!({
        "dataset": r.dataset, "drifted": r.drifted, "applied": r.applied,
        "version": r.version, "bytes_read": r.bytes_read,
        "rows_lost": r.rows_lost, "files_lost": r.files_lost,
        "refused_row_loss": r.refused_row_loss, "uncommitted_keys": r.uncommitted_keys,
        "field_changes": r.field_changes.iter()
            .map(|f| json!({"field": f.field, "before": f.before, "after": f.after}))
            .collect::<Vec<_>>(),
        "file_changes": r.file_changes.iter()
            .map(|f| json!({"key": f.key, "kind": f.kind().as_str_name()}))
            .collect::<Vec<_>>(),
        "problems": r.problems.iter()
            .map(|p| json!({"key": p.key, "error": p.error}))
            .collect::<Vec<_>>(),
    })
}

fn dataset_json(d: &pb::Dataset) -> Value {
    let columns: Vec<Value> = d
        .schema
        .as_ref()
        .map(|s| s.columns.as_slice())
        .unwrap_or(&[])
        .iter()
        .map(|c| json!({"name": c.name, "data_type": c.data_type, "nullable": c.nullable}))
        .collect();
    let lineage = d.lineage.as_ref().map(lineage_json);
    let history: Vec<Value> = d.lineage_history.iter().map(event_json).collect();
    let mut value = json!({
        "name": d.name, "bucket": d.bucket, "description": d.description,
        "version": d.version, "row_count": d.row_count, "file_count": d.file_count,
        "size_bytes": d.size_bytes, "schema": columns, "lineage": lineage,
        "lineage_history": history,
        "create_time": time_text(d.create_time.as_ref()),
        "update_time": time_text(d.update_time.as_ref()),
    });
    if !d.files.is_empty() {
        value["files"] = d
            .files
            .iter()
            .map(|f| {
                json!({"key": f.key, "size_bytes": f.size_bytes, "row_count": f.row_count,
                       "etag": f.etag})
            })
            .collect();
    }
    value
}

fn lineage_json(l: &pb::Lineage) -> Value {
    json!({
        "source_kind": l.source_kind().as_str_name(), "source": l.source,
        "query": l.query, "ingest_id": l.ingest_id,
        "start_time": time_text(l.start_time.as_ref()),
        "finish_time": time_text(l.finish_time.as_ref()),
        "snapshot_time": time_text(l.snapshot_time.as_ref()),
        "rows": l.rows, "bytes": l.bytes,
    })
}

fn event_json(e: &pb::LineageEvent) -> Value {
    json!({
        "dataset_version": e.dataset_version, "kind": e.kind().as_str_name(),
        "lineage": e.lineage.as_ref().map(lineage_json),
        "added_columns": e.added_columns,
        "time": time_text(e.time.as_ref()),
    })
}

//! `lakehouse search`: nearest neighbours of a vector or of a row (`--id`),
//! optionally among the rows a `--where` filter passes (parsed by
//! [`crate::where_clause`] into the API's typed filter).

use std::io::Read as _;
use std::process::ExitCode;

use lakehouse_proto::vector::v1 as pb;
use serde_json::json;

use crate::cmd::{CliError, Result, Table, VectorTarget};
use crate::vector_cmd::client;

/// `lakehouse search`.
#[derive(Debug, clap::Args)]
pub struct SearchArgs {
    #[command(flatten)]
    pub target: VectorTarget,
    /// Index name.
    #[arg(long)]
    pub index: String,
    /// The query vector as a JSON array; `-` (default) reads it from stdin.
    #[arg(long, default_value = "-")]
    pub vector: String,
    /// Neighbours.
    #[arg(long, default_value_t = 10)]
    pub k: u32,
    /// Candidate list override.
    #[arg(long)]
    pub ef_search: Option<u32>,
    /// Brute force instead of HNSW.
    #[arg(long)]
    pub exact: bool,
    /// Only rows passing this filter on payload columns, e.g.
    /// `city = "London" and rate < 60` (=, !=, <, <=, >, >=, in (…),
    /// is [not] null, and, or, not, parentheses).
    #[arg(long = "where", value_name = "FILTER")]
    pub where_clause: Option<String>,
    /// Search by id: the row's own vector is the query (the row itself is
    /// not a hit); replaces --vector.
    #[arg(long, conflicts_with = "vector")]
    pub id: Option<String>,
    /// Leave out hits farther than this distance.
    #[arg(long)]
    pub max_distance: Option<f32>,
    /// Payload columns to show with each hit (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub payload: Vec<String>,
}

pub async fn search(args: SearchArgs) -> Result<ExitCode> {
    let filter = args
        .where_clause
        .as_deref()
        .map(crate::where_clause::parse)
        .transpose()
        .map_err(CliError::BadWhere)?;
    let vector: Vec<f32> = if args.id.is_some() {
        Vec::new()
    } else {
        let text = if args.vector == "-" {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            text
        } else {
            args.vector.clone()
        };
        serde_json::from_str(text.trim()).map_err(|source| CliError::BadVector { source })?
    };
    let mut client = client(&args.target).await?;
    let response = client
        .search(pb::SearchRequest {
            index: args.index,
            vector,
            k: args.k,
            ef_search: args.ef_search,
            exact: args.exact,
            filter,
            id: args.id.unwrap_or_default(),
            max_distance: args.max_distance,
            payload_columns: args.payload.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    // The payload column only when payload was asked for: the plain table
    // and JSON stay as the README shows them.
    let with_payload = !args.payload.is_empty();
    let header: &[&str] = if with_payload {
        &["ID", "DISTANCE", "TEXT", "PAYLOAD"]
    } else {
        &["ID", "DISTANCE", "TEXT"]
    };
    let mut table = Table::new(args.target.output, header);
    for hit in &response.hits {
        let payload: serde_json::Map<String, serde_json::Value> = args
            .payload
            .iter()
            .filter_map(|name| {
                let value = hit.payload.get(name)?;
                Some((name.clone(), proto_value_json(value)))
            })
            .collect();
        let mut value = json!({"id": hit.id, "distance": hit.distance, "text": hit.text});
        if with_payload {
            value["payload"] = serde_json::Value::Object(payload.clone());
        }
        table.row(&value, || {
            let mut cells = vec![
                hit.id.clone(),
                format!("{:.6}", hit.distance),
                hit.text.clone(),
            ];
            if with_payload {
                cells.push(serde_json::Value::Object(payload.clone()).to_string());
            }
            cells
        });
    }
    table.finish();
    Ok(ExitCode::SUCCESS)
}

/// A payload value as JSON.
fn proto_value_json(value: &prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    match &value.kind {
        Some(Kind::BoolValue(b)) => json!(b),
        Some(Kind::NumberValue(n)) => json!(n),
        Some(Kind::StringValue(s)) => json!(s),
        _ => serde_json::Value::Null,
    }
}

//! Determines the shape of a source before any row is read: the SELECT to
//! run, each output column's name, type OID, type modifier (numeric
//! precision/scale, vector dimension) and, for table sources, NOT NULL. An
//! unsupported type fails here, naming the column and suggesting a cast, so
//! nothing is written for a source that cannot be ingested.
//!
//! Output columns come from preparing the SELECT (extended protocol), which
//! also proves the caller's filter or query is a single statement: the COPY
//! that later wraps it uses the simple protocol. Type modifiers are not in
//! sqlx's column metadata, so they are read from `pg_attribute` for columns
//! that come straight from a table or view; computed columns have none
//! (`numeric` then follows the unconstrained-numeric policy).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use sqlx::postgres::PgConnection;
use sqlx::{Column as _, Executor as _, Row as _, Statement as _, TypeInfo as _};

use crate::error::{Error, Result};
use crate::pg_types::{self, PgType, TypeRow};

/// What to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A table or view.
    Table {
        /// Schema; empty uses the search path.
        schema: String,
        /// Table name.
        table: String,
        /// Columns in order; empty reads all.
        columns: Vec<String>,
        /// Filter expression without WHERE; empty for none.
        filter: String,
    },
    /// A read-only query.
    Query(String),
}

impl Source {
    /// The SELECT for this source, with an extra predicate (a parallel
    /// reader's key range) ANDed in. Only table sources take a predicate.
    pub fn select(&self, extra: Option<&str>) -> String {
        match self {
            Source::Table {
                columns, filter, ..
            } => {
                let list = if columns.is_empty() {
                    "*".to_owned()
                } else {
                    columns
                        .iter()
                        .map(|c| quote_ident(c))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let mut predicates = Vec::new();
                if !filter.trim().is_empty() {
                    // Newlines keep a trailing `--` comment in the filter
                    // from swallowing what follows.
                    predicates.push(format!("(\n{}\n)", filter.trim()));
                }
                if let Some(extra) = extra {
                    predicates.push(format!("({extra})"));
                }
                let mut sql = format!("SELECT {list} FROM {}", self.relation());
                if !predicates.is_empty() {
                    sql.push_str(" WHERE ");
                    sql.push_str(&predicates.join(" AND "));
                }
                sql
            }
            Source::Query(query) => query.clone(),
        }
    }

    /// The qualified, quoted relation of a table source.
    pub fn relation(&self) -> String {
        match self {
            Source::Table { schema, table, .. } if schema.is_empty() => quote_ident(table),
            Source::Table { schema, table, .. } => {
                format!("{}.{}", quote_ident(schema), quote_ident(table))
            }
            Source::Query(_) => String::new(),
        }
    }

    /// What lineage records as the query: the SELECT that was run.
    pub fn description(&self) -> String {
        self.select(None)
    }
}

/// Quotes an identifier the way PostgreSQL's `quote_ident` does, always.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Normalises a caller's query: trims it and drops trailing semicolons,
/// which COPY (query) does not accept.
pub fn normalise_query(query: &str) -> String {
    query
        .trim()
        .trim_end_matches(|c: char| c == ';' || c.is_whitespace())
        .to_owned()
}

/// One output column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceColumn {
    /// Its name.
    pub name: String,
    /// Its type.
    pub pg_type: PgType,
    /// Whether it may be NULL.
    pub nullable: bool,
}

/// The shape of a source.
#[derive(Debug, Clone)]
pub struct SourcePlan {
    /// What to read.
    pub source: Source,
    /// The output columns.
    pub columns: Vec<SourceColumn>,
    /// Their Arrow schema.
    pub schema: SchemaRef,
}

impl SourcePlan {
    /// The column types, in order.
    pub fn types(&self) -> Vec<PgType> {
        self.columns.iter().map(|c| c.pg_type.clone()).collect()
    }
}

/// Describes `source` on `conn` (inside the snapshot transaction).
pub async fn describe(
    conn: &mut PgConnection,
    source: Source,
    sql_error: impl Fn(sqlx::Error) -> Error,
) -> Result<SourcePlan> {
    let sql = source.select(None);
    let statement = conn.prepare(sql.as_str()).await.map_err(&sql_error)?;
    struct Raw {
        name: String,
        type_oid: u32,
        relation: Option<(u32, i16)>,
        type_name: String,
    }
    let mut raw = Vec::new();
    for column in statement.columns() {
        let info = column.type_info();
        let Some(type_oid) = info.oid() else {
            return Err(Error::UnsupportedType {
                column: column.name().to_owned(),
                type_name: info.name().to_owned(),
                reason: ": its type could not be resolved".to_owned(),
                quoted: quote_ident(column.name()),
                cast: "::text",
            });
        };
        raw.push(Raw {
            name: column.name().to_owned(),
            type_oid: type_oid.0,
            relation: column
                .relation_id()
                .zip(column.relation_attribute_no())
                .map(|(rel, num)| (rel.0, num)),
            type_name: info.name().to_owned(),
        });
    }
    if raw.is_empty() {
        return Err(Error::InvalidRequest(
            "the source has no columns; select at least one".to_owned(),
        ));
    }
    let mut seen = HashSet::new();
    for column in &raw {
        if !seen.insert(column.name.as_str()) {
            return Err(Error::InvalidRequest(format!(
                "column name {:?} appears twice; give the columns distinct names (AS …)",
                column.name
            )));
        }
    }

    // Type modifiers and NOT NULL of the columns taken from relations.
    let (rels, nums): (Vec<i64>, Vec<i32>) = raw
        .iter()
        .filter_map(|c| c.relation)
        .map(|(rel, num)| (i64::from(rel), i32::from(num)))
        .unzip();
    let mut attributes: HashMap<(u32, i16), (i32, bool)> = HashMap::new();
    if !rels.is_empty() {
        let rows = sqlx::query(
            "SELECT a.attrelid::int8 AS rel, a.attnum::int4 AS num, a.atttypmod AS typmod, a.attnotnull AS notnull \
             FROM pg_catalog.pg_attribute a \
             JOIN unnest($1::int8[], $2::int4[]) AS k(rel, num) \
               ON a.attrelid::int8 = k.rel AND a.attnum::int4 = k.num",
        )
        .bind(&rels)
        .bind(&nums)
        .fetch_all(&mut *conn)
        .await
        .map_err(&sql_error)?;
        for row in rows {
            let rel: i64 = row.try_get("rel").map_err(&sql_error)?;
            let num: i32 = row.try_get("num").map_err(&sql_error)?;
            let typmod: i32 = row.try_get("typmod").map_err(&sql_error)?;
            let not_null: bool = row.try_get("notnull").map_err(&sql_error)?;
            if let (Ok(rel), Ok(num)) = (u32::try_from(rel), i16::try_from(num)) {
                attributes.insert((rel, num), (typmod, not_null));
            }
        }
    }

    let types = fetch_types(conn, raw.iter().map(|c| c.type_oid), &sql_error).await?;
    let table_source = matches!(source, Source::Table { .. });
    let mut columns = Vec::with_capacity(raw.len());
    for column in raw {
        let (typmod, not_null) = column
            .relation
            .and_then(|key| attributes.get(&key).copied())
            .unwrap_or((-1, false));
        let pg_type = pg_types::resolve(column.type_oid, typmod, &types).map_err(|u| {
            Error::UnsupportedType {
                quoted: quote_ident(&column.name),
                column: column.name.clone(),
                type_name: if u.type_name.starts_with("type oid") {
                    column.type_name.clone()
                } else {
                    u.type_name
                },
                reason: u.reason.map(|r| format!(": {r}")).unwrap_or_default(),
                cast: u.cast,
            }
        })?;
        columns.push(SourceColumn {
            name: column.name,
            pg_type,
            // NOT NULL holds only for plain table reads: a query's column
            // may come from the outer side of a join.
            nullable: !(table_source && not_null),
        });
    }
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| c.pg_type.field(&c.name, c.nullable))
            .collect::<Vec<_>>(),
    ));
    Ok(SourcePlan {
        source,
        columns,
        schema,
    })
}

/// Fetches the `pg_type` rows of `oids` and of their element and base types.
async fn fetch_types(
    conn: &mut PgConnection,
    oids: impl Iterator<Item = u32>,
    sql_error: &impl Fn(sqlx::Error) -> Error,
) -> Result<HashMap<u32, TypeRow>> {
    let mut types: HashMap<u32, TypeRow> = HashMap::new();
    let mut wanted: Vec<i64> = oids.map(i64::from).collect();
    for _ in 0..8 {
        wanted.retain(|oid| u32::try_from(*oid).is_ok_and(|o| !types.contains_key(&o)));
        wanted.sort_unstable();
        wanted.dedup();
        if wanted.is_empty() {
            break;
        }
        let rows = sqlx::query(
            "SELECT t.oid::int8 AS oid, pg_catalog.format_type(t.oid, NULL) AS name, \
                    t.typtype::text AS kind, t.typcategory::text AS category, \
                    t.typelem::int8 AS element, t.typbasetype::int8 AS base, \
                    t.typtypmod AS base_typmod, t.typreceive::text AS receive \
             FROM pg_catalog.pg_type t WHERE t.oid::int8 = ANY($1)",
        )
        .bind(&wanted)
        .fetch_all(&mut *conn)
        .await
        .map_err(sql_error)?;
        wanted.clear();
        for row in rows {
            let oid: i64 = row.try_get("oid").map_err(sql_error)?;
            let kind: String = row.try_get("kind").map_err(sql_error)?;
            let category: String = row.try_get("category").map_err(sql_error)?;
            let element: i64 = row.try_get("element").map_err(sql_error)?;
            let base: i64 = row.try_get("base").map_err(sql_error)?;
            let entry = TypeRow {
                name: row.try_get("name").map_err(sql_error)?,
                kind: kind.bytes().next().unwrap_or(b'?'),
                category: category.bytes().next().unwrap_or(b'?'),
                element: u32::try_from(element).unwrap_or(0),
                base: u32::try_from(base).unwrap_or(0),
                base_typmod: row.try_get("base_typmod").map_err(sql_error)?,
                receive: row.try_get("receive").map_err(sql_error)?,
            };
            if entry.element != 0 {
                wanted.push(element);
            }
            if entry.base != 0 {
                wanted.push(base);
            }
            if let Ok(oid) = u32::try_from(oid) {
                types.insert(oid, entry);
            }
        }
    }
    Ok(types)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_selects_quote_identifiers_and_isolate_the_filter() {
        let source = Source::Table {
            schema: "hr".to_owned(),
            table: "Staff \"x\"".to_owned(),
            columns: vec!["id".to_owned(), "Name".to_owned()],
            filter: "id > 3 -- trailing comment".to_owned(),
        };
        assert_eq!(
            source.select(Some("\"id\" >= 10")),
            "SELECT \"id\", \"Name\" FROM \"hr\".\"Staff \"\"x\"\"\" WHERE (\nid > 3 -- trailing comment\n) AND (\"id\" >= 10)"
        );
        let all = Source::Table {
            schema: String::new(),
            table: "t".to_owned(),
            columns: vec![],
            filter: String::new(),
        };
        assert_eq!(all.select(None), "SELECT * FROM \"t\"");
    }

    #[test]
    fn queries_lose_trailing_semicolons() {
        assert_eq!(normalise_query("  SELECT 1 ;; \n"), "SELECT 1");
    }
}

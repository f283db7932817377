//! The PostgreSQL → Arrow type mapping policy, in one place.
//!
//! The policy is faithful first: a declared `numeric(p,s)` stays
//! `Decimal128(p,s)`, `uuid` is 16 bytes with Parquet's UUID logical type,
//! json/jsonb are the exact text PostgreSQL prints (with Parquet's JSON
//! logical type), timestamptz is labelled "UTC", and NOT NULL columns become
//! required fields. Where a faithful Arrow type does not exist or cannot be
//! written to Parquet, the choice is documented here and in ADR 0006:
//!
//! - `numeric` without a declared precision: `Decimal128(38, 10)`; a value
//!   with more than 28 integer digits or a non-zero digit past the tenth
//!   fractional one fails the ingest (never rounds silently), and NaN or
//!   ±Infinity fail too. The error suggests a cast.
//! - `interval`: a struct `{months: Int32, days: Int32, microseconds: Int64}`,
//!   PostgreSQL's own three fields. Arrow's `Interval(MonthDayNano)` cannot be
//!   written to Parquet by arrow-rs, and Parquet's INTERVAL type holds
//!   unsigned milliseconds, which would lose sign and microseconds.
//! - pgvector `vector(n)`: `FixedSizeList<Float32>(n)`; `vector` without a
//!   dimension: `List<Float32>`.
//! - enums and domains: enums are their label text (Utf8); a domain maps as
//!   its base type.
//!
//! Everything else (geometric types, tsvector, ranges, composites, money,
//! multidimensional arrays, …) is refused before any data is read, with the
//! column, its type and a cast that works.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, TimeUnit};

/// The precision and scale used for `numeric` without a declared precision.
pub const UNCONSTRAINED_NUMERIC: (u8, i8) = (38, 10);

/// Arrow's canonical extension name for UUIDs; parquet maps it to the UUID
/// logical type.
const UUID_EXTENSION: &str = "arrow.uuid";
/// Arrow's canonical extension name for JSON text; parquet maps it to the
/// JSON logical type.
const JSON_EXTENSION: &str = "arrow.json";
const EXTENSION_NAME_KEY: &str = "ARROW:extension:name";
const EXTENSION_METADATA_KEY: &str = "ARROW:extension:metadata";

/// A source column type the ingest can decode from binary COPY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgType {
    /// `bool`.
    Bool,
    /// `int2`.
    Int2,
    /// `int4`.
    Int4,
    /// `int8`.
    Int8,
    /// `float4`.
    Float4,
    /// `float8`.
    Float8,
    /// `numeric`, with the precision and scale it maps to.
    Numeric {
        /// Decimal digits in all.
        precision: u8,
        /// Digits after the point.
        scale: i8,
        /// Whether the column declared them (else the documented default).
        declared: bool,
    },
    /// text, varchar, char(n), name, citext-like types and enum labels.
    Text,
    /// `json`: the text as stored.
    Json,
    /// `jsonb`: a version byte, then the text PostgreSQL prints.
    Jsonb,
    /// `bytea`.
    Bytea,
    /// `date`.
    Date,
    /// `time` (without time zone).
    Time,
    /// `timestamp` (without time zone).
    Timestamp,
    /// `timestamptz`, as UTC.
    Timestamptz,
    /// `interval`.
    Interval,
    /// `uuid`.
    Uuid,
    /// pgvector `vector`, with its dimension when declared.
    Vector {
        /// `vector(n)`: n.
        dimension: Option<i32>,
    },
    /// A one-dimensional array of the element type.
    Array(Box<PgType>),
}

/// Well-known type OIDs (stable across PostgreSQL versions).
pub mod oid {
    /// bool
    pub const BOOL: u32 = 16;
    /// bytea
    pub const BYTEA: u32 = 17;
    /// name
    pub const NAME: u32 = 19;
    /// int8
    pub const INT8: u32 = 20;
    /// int2
    pub const INT2: u32 = 21;
    /// int4
    pub const INT4: u32 = 23;
    /// text
    pub const TEXT: u32 = 25;
    /// json
    pub const JSON: u32 = 114;
    /// float4
    pub const FLOAT4: u32 = 700;
    /// float8
    pub const FLOAT8: u32 = 701;
    /// bpchar, i.e. char(n)
    pub const BPCHAR: u32 = 1042;
    /// varchar
    pub const VARCHAR: u32 = 1043;
    /// date
    pub const DATE: u32 = 1082;
    /// time
    pub const TIME: u32 = 1083;
    /// timestamp
    pub const TIMESTAMP: u32 = 1114;
    /// timestamptz
    pub const TIMESTAMPTZ: u32 = 1184;
    /// interval
    pub const INTERVAL: u32 = 1186;
    /// numeric
    pub const NUMERIC: u32 = 1700;
    /// uuid
    pub const UUID: u32 = 2950;
    /// jsonb
    pub const JSONB: u32 = 3802;
}

/// What the catalog says about one type OID (`pg_type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeRow {
    /// The type's name as PostgreSQL prints it (`format_type`).
    pub name: String,
    /// `typtype`: b(ase), d(omain), e(num), c(omposite), r(ange), p(seudo), m(ultirange).
    pub kind: u8,
    /// `typelem` for arrays (category A), else 0.
    pub element: u32,
    /// `typcategory`.
    pub category: u8,
    /// `typbasetype` for domains.
    pub base: u32,
    /// `typtypmod` for domains (the domain's own modifier).
    pub base_typmod: i32,
    /// The receive function's name, to recognise pgvector's `vector`.
    pub receive: String,
}

/// Why a type cannot be ingested; the caller adds the column name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    /// The type as PostgreSQL names it.
    pub type_name: String,
    /// Why, when more than "not supported" helps.
    pub reason: Option<String>,
    /// A cast that works, such as `::text`.
    pub cast: &'static str,
}

/// Resolves a column's type OID and modifier against the `pg_type` rows
/// fetched for it (and for its element or base types).
pub fn resolve(
    type_oid: u32,
    typmod: i32,
    types: &HashMap<u32, TypeRow>,
) -> Result<PgType, Unsupported> {
    resolve_inner(type_oid, typmod, types, 0)
}

fn resolve_inner(
    type_oid: u32,
    typmod: i32,
    types: &HashMap<u32, TypeRow>,
    depth: u8,
) -> Result<PgType, Unsupported> {
    let name = || {
        types
            .get(&type_oid)
            .map(|t| t.name.clone())
            .unwrap_or_else(|| format!("type oid {type_oid}"))
    };
    if depth > 8 {
        return Err(Unsupported {
            type_name: name(),
            reason: Some("domains nest too deeply".to_owned()),
            cast: "::text",
        });
    }
    let scalar = match type_oid {
        oid::BOOL => Some(PgType::Bool),
        oid::INT2 => Some(PgType::Int2),
        oid::INT4 => Some(PgType::Int4),
        oid::INT8 => Some(PgType::Int8),
        oid::FLOAT4 => Some(PgType::Float4),
        oid::FLOAT8 => Some(PgType::Float8),
        oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::NAME => Some(PgType::Text),
        oid::JSON => Some(PgType::Json),
        oid::JSONB => Some(PgType::Jsonb),
        oid::BYTEA => Some(PgType::Bytea),
        oid::DATE => Some(PgType::Date),
        oid::TIME => Some(PgType::Time),
        oid::TIMESTAMP => Some(PgType::Timestamp),
        oid::TIMESTAMPTZ => Some(PgType::Timestamptz),
        oid::INTERVAL => Some(PgType::Interval),
        oid::UUID => Some(PgType::Uuid),
        oid::NUMERIC => Some(numeric(typmod).map_err(|reason| Unsupported {
            type_name: name(),
            reason: Some(reason),
            cast: "::numeric(38,10) or ::text",
        })?),
        _ => None,
    };
    if let Some(scalar) = scalar {
        return Ok(scalar);
    }
    let Some(row) = types.get(&type_oid) else {
        return Err(Unsupported {
            type_name: name(),
            reason: None,
            cast: "::text",
        });
    };
    match (row.kind, row.category) {
        (b'd', _) => {
            // A domain's values travel as its base type; the domain's own
            // modifier applies (a column cannot add one to a domain).
            let modifier = if row.base_typmod >= 0 {
                row.base_typmod
            } else {
                typmod
            };
            resolve_inner(row.base, modifier, types, depth + 1)
        }
        (b'e', _) => Ok(PgType::Text),
        (b'b', b'A') if row.element != 0 => {
            let element =
                resolve_inner(row.element, typmod, types, depth + 1).map_err(|e| Unsupported {
                    type_name: row.name.clone(),
                    reason: e.reason.or_else(|| {
                        Some(format!("its element type {} is not supported", e.type_name))
                    }),
                    cast: "::text[]",
                })?;
            match element {
                PgType::Array(_) | PgType::Vector { .. } => Err(Unsupported {
                    type_name: row.name.clone(),
                    reason: Some("arrays of this element type are not supported".to_owned()),
                    cast: "::text[]",
                }),
                element => Ok(PgType::Array(Box::new(element))),
            }
        }
        (b'b', _) if row.receive == "vector_recv" => Ok(PgType::Vector {
            dimension: (typmod > 0).then_some(typmod),
        }),
        _ => Err(Unsupported {
            type_name: row.name.clone(),
            reason: None,
            cast: "::text",
        }),
    }
}

/// numeric's typmod is `((precision << 16) | (scale & 0x7ff)) + 4`, scale
/// an 11-bit signed number (PostgreSQL 15 allows negative scales).
fn numeric(typmod: i32) -> Result<PgType, String> {
    if typmod < 4 {
        let (precision, scale) = UNCONSTRAINED_NUMERIC;
        return Ok(PgType::Numeric {
            precision,
            scale,
            declared: false,
        });
    }
    let raw = typmod - 4;
    let precision = (raw >> 16) & 0xffff;
    let mut scale = raw & 0x7ff;
    if scale & 0x400 != 0 {
        scale -= 0x800;
    }
    let precision = u8::try_from(precision)
        .ok()
        .filter(|p| (1..=38).contains(p))
        .ok_or_else(|| {
            format!("precision {precision} exceeds the 38 digits Arrow's Decimal128 holds")
        })?;
    let scale = i8::try_from(scale)
        .map_err(|_| format!("scale {scale} is outside what Arrow's Decimal128 holds"))?;
    if i32::from(scale) > i32::from(precision) {
        return Err(format!(
            "scale {scale} is larger than precision {precision}, which Arrow's Decimal128 cannot hold"
        ));
    }
    Ok(PgType::Numeric {
        precision,
        scale,
        declared: true,
    })
}

impl PgType {
    /// The Arrow type of the column.
    pub fn data_type(&self) -> DataType {
        match self {
            PgType::Bool => DataType::Boolean,
            PgType::Int2 => DataType::Int16,
            PgType::Int4 => DataType::Int32,
            PgType::Int8 => DataType::Int64,
            PgType::Float4 => DataType::Float32,
            PgType::Float8 => DataType::Float64,
            PgType::Numeric {
                precision, scale, ..
            } => DataType::Decimal128(*precision, *scale),
            PgType::Text | PgType::Json | PgType::Jsonb => DataType::Utf8,
            PgType::Bytea => DataType::Binary,
            PgType::Date => DataType::Date32,
            PgType::Time => DataType::Time64(TimeUnit::Microsecond),
            PgType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            PgType::Timestamptz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            PgType::Interval => DataType::Struct(interval_fields()),
            PgType::Uuid => DataType::FixedSizeBinary(16),
            PgType::Vector { dimension } => {
                let item = Arc::new(Field::new("item", DataType::Float32, false));
                match dimension {
                    Some(n) => DataType::FixedSizeList(item, *n),
                    None => DataType::List(item),
                }
            }
            PgType::Array(element) => DataType::List(Arc::new(element.field("item", true))),
        }
    }

    /// The Arrow field of a column of this type, with the canonical
    /// extension metadata that makes parquet write the UUID and JSON
    /// logical types.
    pub fn field(&self, name: &str, nullable: bool) -> Field {
        let field = Field::new(name, self.data_type(), nullable);
        match self {
            PgType::Uuid => field.with_metadata(HashMap::from([(
                EXTENSION_NAME_KEY.to_owned(),
                UUID_EXTENSION.to_owned(),
            )])),
            PgType::Json | PgType::Jsonb => field.with_metadata(HashMap::from([
                (EXTENSION_NAME_KEY.to_owned(), JSON_EXTENSION.to_owned()),
                (EXTENSION_METADATA_KEY.to_owned(), "{}".to_owned()),
            ])),
            _ => field,
        }
    }
}

/// The struct fields `interval` maps to: PostgreSQL's own representation.
pub fn interval_fields() -> Fields {
    Fields::from(vec![
        Field::new("months", DataType::Int32, false),
        Field::new("days", DataType::Int32, false),
        Field::new("microseconds", DataType::Int64, false),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, kind: u8, category: u8) -> TypeRow {
        TypeRow {
            name: name.to_owned(),
            kind,
            element: 0,
            category,
            base: 0,
            base_typmod: -1,
            receive: String::new(),
        }
    }

    #[test]
    fn numeric_typmods_decode_to_precision_and_scale() {
        // numeric(10,2)
        let typmod = ((10 << 16) | 2) + 4;
        assert_eq!(
            resolve(oid::NUMERIC, typmod, &HashMap::new()),
            Ok(PgType::Numeric {
                precision: 10,
                scale: 2,
                declared: true
            })
        );
        // numeric(5,-2) (PostgreSQL 15)
        let typmod = ((5 << 16) | (-2i32 & 0x7ff)) + 4;
        assert_eq!(
            resolve(oid::NUMERIC, typmod, &HashMap::new()),
            Ok(PgType::Numeric {
                precision: 5,
                scale: -2,
                declared: true
            })
        );
        assert_eq!(
            resolve(oid::NUMERIC, -1, &HashMap::new()),
            Ok(PgType::Numeric {
                precision: 38,
                scale: 10,
                declared: false
            })
        );
        let too_wide = resolve(oid::NUMERIC, ((50 << 16) | 2) + 4, &HashMap::new())
            .expect_err("numeric(50,2) does not fit Decimal128");
        assert!(too_wide.reason.unwrap_or_default().contains("38"));
    }

    #[test]
    fn arrays_domains_enums_and_vectors_resolve() {
        let mut types = HashMap::new();
        let mut int_array = row("integer[]", b'b', b'A');
        int_array.element = oid::INT4;
        types.insert(1007, int_array);
        let mut domain = row("positive_int", b'd', b'N');
        domain.base = oid::INT4;
        types.insert(90_000, domain);
        types.insert(90_001, row("mood", b'e', b'E'));
        let mut vector = row("vector", b'b', b'U');
        vector.receive = "vector_recv".to_owned();
        types.insert(90_002, vector);
        types.insert(600, row("point", b'b', b'G'));

        assert_eq!(
            resolve(1007, -1, &types),
            Ok(PgType::Array(Box::new(PgType::Int4)))
        );
        assert_eq!(resolve(90_000, -1, &types), Ok(PgType::Int4));
        assert_eq!(resolve(90_001, -1, &types), Ok(PgType::Text));
        assert_eq!(
            resolve(90_002, 3, &types),
            Ok(PgType::Vector { dimension: Some(3) })
        );
        let point = resolve(600, -1, &types).expect_err("point is not supported");
        assert_eq!(point.type_name, "point");
        assert_eq!(point.cast, "::text");
    }

    #[test]
    fn uuid_and_json_fields_carry_canonical_extensions() {
        let uuid = PgType::Uuid.field("id", false);
        assert_eq!(
            uuid.metadata().get(EXTENSION_NAME_KEY).map(String::as_str),
            Some("arrow.uuid")
        );
        let json = PgType::Jsonb.field("doc", true);
        assert_eq!(
            json.metadata().get(EXTENSION_NAME_KEY).map(String::as_str),
            Some("arrow.json")
        );
        assert_eq!(
            PgType::Timestamptz.data_type(),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
    }
}

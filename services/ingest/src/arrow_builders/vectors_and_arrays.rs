//! Decoding of pgvector `vector` values and one-dimensional arrays, the
//! column types that become Arrow lists.

use super::{ColumnDecoder, ValueError, ValueResult};

pub(super) fn offset(len: usize) -> Result<i32, ValueError> {
    i32::try_from(len).map_err(|_| ValueError {
        reason: "a batch holds more than 2^31 list elements".to_owned(),
        hint: "lower --ingest-batch-rows",
    })
}

/// pgvector's send format: `int16` dimension, `int16` unused, then floats.
pub(super) fn decode_vector(
    bytes: &[u8],
    dimension: Option<i32>,
    values: &mut Vec<f32>,
) -> ValueResult {
    let header: [u8; 4] = bytes
        .get(..4)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| ValueError::malformed("vector"))?;
    let dim = u16::from_be_bytes([header[0], header[1]]);
    let body = &bytes[4..];
    if body.len() != usize::from(dim) * 4 {
        return Err(ValueError::malformed("vector"));
    }
    if let Some(expected) = dimension
        && i32::from(dim) != expected
    {
        return Err(ValueError {
            reason: format!("vector has {dim} dimensions, the column declares {expected}"),
            hint: "report this: the server sent a vector of another dimension",
        });
    }
    values.extend(
        body.chunks_exact(4)
            .map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]])),
    );
    Ok(())
}

/// array_send: `int32` ndim, `int32` has-nulls flag, element OID, then per
/// dimension `int32` size and lower bound, then the elements as COPY fields.
pub(super) fn decode_array(bytes: &[u8], child: &mut ColumnDecoder) -> ValueResult {
    let int = |at: usize| -> Result<i32, ValueError> {
        bytes
            .get(at..at + 4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| ValueError::malformed("array"))
    };
    let ndim = int(0)?;
    match ndim {
        0 => return Ok(()),
        1 => {}
        _ => {
            return Err(ValueError {
                reason: format!(
                    "array value has {ndim} dimensions; only one-dimensional arrays map to Arrow lists"
                ),
                hint: "flatten it in a query, e.g. ARRAY(SELECT unnest(col)), or cast it to text",
            });
        }
    }
    let count = usize::try_from(int(12)?).map_err(|_| ValueError::malformed("array"))?;
    let mut pos = 20;
    for _ in 0..count {
        let len = int(pos)?;
        pos += 4;
        if len == -1 {
            child.append(None)?;
            continue;
        }
        let len = usize::try_from(len).map_err(|_| ValueError::malformed("array"))?;
        let element = bytes
            .get(pos..pos + len)
            .ok_or_else(|| ValueError::malformed("array"))?;
        child.append(Some(element))?;
        pos += len;
    }
    if pos != bytes.len() {
        return Err(ValueError::malformed("array"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array as _, AsArray as _};
    use arrow::datatypes::Int32Type;

    use crate::arrow_builders::ColumnDecoder;
    use crate::pg_types::PgType;

    #[test]
    fn arrays_with_nulls_and_empty_arrays_build_lists() {
        let pg = PgType::Array(Box::new(PgType::Int4));
        let mut decoder = ColumnDecoder::new(&pg, 4);
        let mut array = Vec::new();
        array.extend_from_slice(&1i32.to_be_bytes()); // ndim
        array.extend_from_slice(&1i32.to_be_bytes()); // has nulls
        array.extend_from_slice(&23u32.to_be_bytes()); // int4
        array.extend_from_slice(&2i32.to_be_bytes()); // size
        array.extend_from_slice(&1i32.to_be_bytes()); // lower bound
        array.extend_from_slice(&4i32.to_be_bytes());
        array.extend_from_slice(&7i32.to_be_bytes());
        array.extend_from_slice(&(-1i32).to_be_bytes());
        decoder.append(Some(&array)).expect("array");
        decoder.append(None).expect("null");
        let mut empty = Vec::new();
        empty.extend_from_slice(&0i32.to_be_bytes());
        empty.extend_from_slice(&0i32.to_be_bytes());
        empty.extend_from_slice(&23u32.to_be_bytes());
        decoder.append(Some(&empty)).expect("empty");
        let built = decoder.finish().expect("finish");
        let list = built.as_list::<i32>();
        assert_eq!(list.len(), 3);
        assert!(list.is_null(1));
        assert_eq!(list.value(2).len(), 0);
        let first = list.value(0);
        let first = first.as_primitive::<Int32Type>();
        assert_eq!(first.value(0), 7);
        assert!(first.is_null(1));
    }

    #[test]
    fn vectors_check_their_dimension() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&2u16.to_be_bytes());
        bytes.extend_from_slice(&0u16.to_be_bytes());
        bytes.extend_from_slice(&1.5f32.to_be_bytes());
        bytes.extend_from_slice(&(-2.0f32).to_be_bytes());
        let mut fixed = ColumnDecoder::new(&PgType::Vector { dimension: Some(2) }, 2);
        fixed.append(Some(&bytes)).expect("vector");
        fixed.append(None).expect("null");
        let array = fixed.finish().expect("finish");
        let list = array.as_fixed_size_list();
        assert_eq!(
            list.value(0)
                .as_primitive::<arrow::datatypes::Float32Type>()
                .values()
                .to_vec(),
            vec![1.5, -2.0]
        );
        assert!(list.is_null(1));
        let mut wrong = ColumnDecoder::new(&PgType::Vector { dimension: Some(3) }, 1);
        assert!(wrong.append(Some(&bytes)).is_err());
    }
}

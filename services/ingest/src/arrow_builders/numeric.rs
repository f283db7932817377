//! Decoding of `numeric` values into exact Decimal128 values, refusing to
//! round or to overflow.

use super::ValueError;

const POW10: [i128; 39] = {
    let mut table = [1i128; 39];
    let mut i = 1;
    while i < 39 {
        table[i] = table[i - 1] * 10;
        i += 1;
    }
    table
};

/// numeric's send format: ndigits, weight, sign, dscale (`int16` each), then
/// `ndigits` base-10000 digits; value = Σ digit[i] · 10000^(weight − i).
/// Returns the value unscaled to `scale`, refusing to round.
pub(super) fn decode_numeric(bytes: &[u8], precision: u8, scale: i8) -> Result<i128, ValueError> {
    let word = |i: usize| -> Result<u16, ValueError> {
        bytes
            .get(i * 2..i * 2 + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| ValueError::malformed("numeric"))
    };
    let ndigits = usize::from(word(0)?);
    let weight = i32::from(word(1)? as i16);
    let sign = word(2)?;
    if bytes.len() != 8 + 2 * ndigits {
        return Err(ValueError::malformed("numeric"));
    }
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Err(special("NaN")),
        0xD000 => return Err(special("Infinity")),
        0xF000 => return Err(special("-Infinity")),
        _ => return Err(ValueError::malformed("numeric")),
    }
    let too_wide = || ValueError {
        reason: format!("numeric value does not fit Decimal128({precision}, {scale})"),
        hint: "cast it to a numeric(p,s) that fits, e.g. ::numeric(38,10), or to float8 or text",
    };
    let mut acc: i128 = 0;
    for i in 0..ndigits {
        let digit = word(4 + i)?;
        if digit >= 10_000 {
            return Err(ValueError::malformed("numeric"));
        }
        acc = acc
            .checked_mul(10_000)
            .and_then(|a| a.checked_add(i128::from(digit)))
            .ok_or_else(too_wide)?;
    }
    // value = acc · 10^(4·(weight − ndigits + 1)); unscaled = value · 10^scale.
    let ndigits = i32::try_from(ndigits).map_err(|_| ValueError::malformed("numeric"))?;
    let exponent = 4 * (weight - ndigits + 1) + i32::from(scale);
    let unscaled = if acc == 0 {
        0
    } else if exponent >= 0 {
        let factor = usize::try_from(exponent)
            .ok()
            .and_then(|e| POW10.get(e))
            .ok_or_else(too_wide)?;
        acc.checked_mul(*factor).ok_or_else(too_wide)?
    } else {
        let divisor = usize::try_from(-exponent)
            .ok()
            .and_then(|e| POW10.get(e))
            .copied();
        match divisor {
            Some(d) if acc % d == 0 => acc / d,
            _ => {
                return Err(ValueError {
                    reason: format!(
                        "numeric value has more than {scale} fractional digits, and the ingest never rounds"
                    ),
                    hint: "cast it in a query to the scale you want, e.g. ::numeric(38,16), or to float8",
                });
            }
        }
    };
    if unscaled >= POW10[usize::from(precision.min(38))] {
        return Err(too_wide());
    }
    Ok(if sign == 0x4000 { -unscaled } else { unscaled })
}

fn special(what: &str) -> ValueError {
    ValueError {
        reason: format!("numeric value is {what}, which Decimal128 cannot represent"),
        hint: "cast the column to float8, or filter the value out",
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{AsArray as _, Decimal128Array};
    use arrow::datatypes::Decimal128Type;

    use super::*;
    use crate::arrow_builders::ColumnDecoder;
    use crate::pg_types::PgType;

    fn numeric_bytes(ndigits: &[u16], weight: i16, negative: bool, dscale: u16) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(ndigits.len() as u16).to_be_bytes());
        out.extend_from_slice(&weight.to_be_bytes());
        out.extend_from_slice(&(if negative { 0x4000u16 } else { 0 }).to_be_bytes());
        out.extend_from_slice(&dscale.to_be_bytes());
        for d in ndigits {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out
    }

    #[test]
    fn numerics_decode_exactly_or_refuse() {
        // 12345.67 = [1, 2345, 6700], weight 1
        let value = numeric_bytes(&[1, 2345, 6700], 1, false, 2);
        assert_eq!(decode_numeric(&value, 10, 2), Ok(1_234_567));
        let value = numeric_bytes(&[1, 2345, 6700], 1, true, 2);
        assert_eq!(decode_numeric(&value, 10, 2), Ok(-1_234_567));
        // 0.0001 = [1], weight -1
        let value = numeric_bytes(&[1], -1, false, 4);
        assert_eq!(decode_numeric(&value, 38, 10), Ok(1_000_000));
        // 10000 = [1], weight 1
        let value = numeric_bytes(&[1], 1, false, 0);
        assert_eq!(decode_numeric(&value, 38, 10), Ok(10_000 * POW10[10]));
        // zero
        assert_eq!(
            decode_numeric(&numeric_bytes(&[], 0, false, 0), 10, 2),
            Ok(0)
        );
        // 1.00000000001 has 11 fractional digits: refused at scale 10.
        let value = numeric_bytes(&[1, 0, 0, 10], 0, false, 11);
        let error = decode_numeric(&value, 38, 10).expect_err("no rounding");
        assert!(error.reason.contains("fractional"), "{}", error.reason);
        // 10^30 does not fit Decimal128(38, 10).
        let value = numeric_bytes(&[1], 7, false, 0);
        assert!(decode_numeric(&value, 38, 10).is_err());
        // NaN
        let mut nan = numeric_bytes(&[], 0, false, 0);
        nan[4] = 0xC0;
        assert!(
            decode_numeric(&nan, 10, 2)
                .expect_err("NaN")
                .reason
                .contains("NaN")
        );
    }

    #[test]
    fn decimal_arrays_carry_precision_and_scale() {
        let mut decoder = ColumnDecoder::new(
            &PgType::Numeric {
                precision: 10,
                scale: 2,
                declared: true,
            },
            1,
        );
        decoder
            .append(Some(&numeric_bytes(&[1, 2345, 6700], 1, false, 2)))
            .expect("value");
        let array = decoder.finish().expect("finish");
        let decimals: &Decimal128Array = array.as_primitive::<Decimal128Type>();
        assert_eq!(decimals.precision(), 10);
        assert_eq!(decimals.scale(), 2);
        assert_eq!(decimals.value_as_string(0), "12345.67");
    }
}

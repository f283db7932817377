//! Conversions between `chrono` times and `google.protobuf.Timestamp`, so
//! every adapter converts the same way.

use chrono::{DateTime, Utc};

/// A protobuf timestamp of `time`.
pub fn to_proto(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        // Sub-second nanos are below 2e9 and always fit.
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// The time of a protobuf timestamp; `None` when it is out of range or has
/// negative nanos (a malformed request: callers answer INVALID_ARGUMENT).
pub fn from_proto(ts: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(ts.nanos).ok()?;
    DateTime::from_timestamp(ts.seconds, nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_malformed() {
        let now = Utc::now();
        assert_eq!(from_proto(&to_proto(now)), Some(now));
        let negative = prost_types::Timestamp {
            seconds: 1,
            nanos: -1,
        };
        assert_eq!(from_proto(&negative), None);
        let huge = prost_types::Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        };
        assert_eq!(from_proto(&huge), None);
    }
}

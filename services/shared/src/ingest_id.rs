//! The ingest id: one format, made by ingest and recognised by the catalog.
//!
//! An ingest writes its parts under `datasets/<dataset>/<ingest-id>/`, and
//! only its commit makes them part of the dataset. A resync must therefore
//! never adopt a file under an ingest-id folder that the manifest does not
//! already hold (it is the leftover of an ingest that never committed), and
//! the orphan sweeper removes such folders once their ingest is dead. Both
//! sides need the same answer to "is this folder an ingest's?", so the
//! format lives here once.

use chrono::{DateTime, NaiveDateTime, Utc};

/// Length of the time part, `YYYYMMDDTHHMMSSZ`.
const TIME_LEN: usize = 16;
/// Length of the random part (hex digits).
const RANDOM_LEN: usize = 12;

/// A new ingest id: UTC start time first, so ids (and part prefixes) sort by
/// start, then 12 random hex digits.
pub fn new_ingest_id() -> String {
    format!(
        "{}-{}",
        Utc::now().format("%Y%m%dT%H%M%SZ"),
        &uuid::Uuid::new_v4().simple().to_string()[..RANDOM_LEN]
    )
}

/// The start time encoded in an ingest id, or `None` when `segment` is not
/// an ingest id.
pub fn parse_ingest_id(segment: &str) -> Option<DateTime<Utc>> {
    let (time, random) = segment.split_once('-')?;
    if time.len() != TIME_LEN
        || random.len() != RANDOM_LEN
        || !random
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    NaiveDateTime::parse_from_str(time, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|t| t.and_utc())
}

/// Whether `segment` (one folder name of a key) is an ingest id.
pub fn is_ingest_id(segment: &str) -> bool {
    parse_ingest_id(segment).is_some()
}

/// The object-key prefix of one ingest's parts, with a trailing slash.
pub fn ingest_prefix(dataset: &str, ingest_id: &str) -> String {
    format!("datasets/{dataset}/{ingest_id}/")
}

/// The ingest id whose folder holds `key` (a key of dataset `dataset`), if
/// the key lies in an ingest's folder: `datasets/<dataset>/<ingest-id>/...`.
pub fn ingest_of_key<'k>(dataset: &str, key: &'k str) -> Option<&'k str> {
    let rest = key.strip_prefix("datasets/")?.strip_prefix(dataset)?;
    let rest = rest.strip_prefix('/')?;
    let (folder, file) = rest.split_once('/')?;
    (!file.is_empty() && is_ingest_id(folder)).then_some(folder)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::SubsecRound;

    #[test]
    fn new_ids_parse_and_carry_their_start_time() {
        let before = Utc::now() - chrono::Duration::seconds(1);
        let id = new_ingest_id();
        let start = parse_ingest_id(&id).expect("a new id parses");
        assert!(start >= before.trunc_subsecs(0));
        assert!(is_ingest_id(&id));
    }

    #[test]
    fn other_folder_names_are_not_ingest_ids() {
        for segment in [
            "",
            "part-00000.parquet",
            "2026",
            "20261126T031700Z",
            "20261126T031700Z-",
            "20261126T031700Z-abcdef12345",
            "20261126T031700Z-abcdef1234567",
            "20261126T031700Z-ABCDEF123456",
            "20261326T031700Z-abcdef123456",
            "year=2026",
        ] {
            assert!(!is_ingest_id(segment), "{segment:?}");
        }
        assert!(is_ingest_id("20261126T031700Z-abcdef123456"));
    }

    #[test]
    fn keys_in_an_ingest_folder_name_their_ingest() {
        let id = "20261126T031700Z-abcdef123456";
        let key = format!("{}part-00000.parquet", ingest_prefix("sales", id));
        assert_eq!(ingest_of_key("sales", &key), Some(id));
        assert_eq!(ingest_of_key("sale", &key), None);
        assert_eq!(
            ingest_of_key("sales", "datasets/sales/part-0.parquet"),
            None
        );
        assert_eq!(
            ingest_of_key("sales", "datasets/sales/year=2026/part-0.parquet"),
            None
        );
        assert_eq!(
            ingest_of_key("sales", &format!("datasets/sales/{id}/")),
            None
        );
    }
}

//! Object names and what they say: each name carries the time it was
//! written and the range of ordinals it holds, and [`plan`] turns a listing
//! of names into the objects a read needs (see the module docs of
//! [`super`]).

use std::ops::Range;

use object_store::ObjectMeta;

pub(super) fn object_name(nanos: &str, range: Range<u64>, kind: &str) -> String {
    format!(
        "{nanos}-{}-r{}_{}.{kind}.ndjson",
        random_suffix(),
        range.start,
        range.end - range.start
    )
}

/// Nanoseconds since the epoch, zero-padded so names sort by time.
pub(super) fn timestamp_key() -> String {
    let nanos = chrono::Utc::now()
        .timestamp_nanos_opt()
        .unwrap_or_default()
        .max(0);
    format!("{nanos:020}")
}

fn random_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// One listed log object and what its name says.
#[derive(Debug)]
pub(super) struct Listed {
    pub(super) meta: ObjectMeta,
    /// The last path segment.
    pub(super) name: String,
    /// The ordinals it holds, when its name carries them.
    pub(super) range: Option<Range<u64>>,
    /// A compaction's output.
    pub(super) merged: bool,
}

impl Listed {
    pub(super) fn parse(meta: ObjectMeta) -> Option<Self> {
        let name = meta.location.filename()?.to_owned();
        let (stem, merged) = if let Some(stem) = name.strip_suffix(".merged.ndjson") {
            (stem, true)
        } else {
            (name.strip_suffix(".part.ndjson")?, false)
        };
        let range = stem.split('-').nth(2).and_then(|r| {
            let (first, count) = r.strip_prefix('r')?.split_once('_')?;
            let first: u64 = first.parse().ok()?;
            Some(first..first.checked_add(count.parse().ok()?)?)
        });
        Some(Self {
            meta,
            name,
            range,
            merged,
        })
    }
}

/// The objects that hold the log, one per range of ordinals, in order.
pub(super) struct Plan<'a> {
    pub(super) segments: Vec<Segment<'a>>,
    /// Records in the log.
    pub(super) total: u64,
}

pub(super) struct Segment<'a> {
    pub(super) meta: &'a ObjectMeta,
    pub(super) range: Range<u64>,
}

/// Which objects to read for each range of ordinals: from 0 upwards, the
/// widest object starting where the previous ended (a merged object before
/// the parts it replaced). `None` when some name carries no range, or the
/// ranges do not tile (two writers): then only the read by name is safe.
pub(super) fn plan(listed: &[Listed]) -> Option<Plan<'_>> {
    let mut ranged: Vec<(&Listed, Range<u64>)> = Vec::with_capacity(listed.len());
    for object in listed {
        ranged.push((object, object.range.clone()?));
    }
    ranged.sort_by(|(_, a), (_, b)| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    let mut segments: Vec<Segment<'_>> = Vec::new();
    let mut merged: Vec<Range<u64>> = Vec::new();
    let mut cursor = 0u64;
    for (object, range) in ranged {
        if range.start < cursor {
            // Only a merged object may hold ordinals again: it replaced the
            // parts inside its range. Any other overlap means two writers.
            if merged
                .iter()
                .any(|m| m.start <= range.start && range.end <= m.end)
            {
                continue;
            }
            return None;
        }
        if range.start != cursor {
            return None;
        }
        if object.merged {
            merged.push(range.clone());
        }
        if range.is_empty() {
            continue;
        }
        cursor = range.end;
        segments.push(Segment {
            meta: &object.meta,
            range,
        });
    }
    Some(Plan {
        segments,
        total: cursor,
    })
}

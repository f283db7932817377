//! Reading the log: every record in order, or one page by position,
//! retrying when a concurrent compaction removes an object being read.

use std::collections::BTreeSet;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::AppendLog;
use super::layout::{Listed, Plan, Segment, plan};
use super::object_format::{INDEX_STRIDE, parse_records};
use crate::{Error, Result};

/// Objects up to this size are read whole; larger ones through their index.
pub(super) const READ_WHOLE_BYTES: u64 = 256 * 1024;
/// Reads that retry after a concurrent compaction removed what they listed.
const READ_ATTEMPTS: u32 = 3;

/// One page of a log read by position.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<R> {
    /// The records kept, in log order.
    pub records: Vec<R>,
    /// The ordinal to continue from, when another kept record follows.
    pub next: Option<u64>,
}

impl<R> AppendLog<R>
where
    R: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// Every durable record in order, followed by the buffered ones.
    pub async fn read_all(&self) -> Result<Vec<R>> {
        let mut records = self.read_durable().await?;
        records.extend(self.buffered());
        Ok(records)
    }

    /// Every flushed record, in order, each exactly once.
    pub async fn read_durable(&self) -> Result<Vec<R>> {
        let mut attempts = 0;
        loop {
            let listed = self.list_objects().await?;
            let result = match plan(&listed) {
                Some(plan) => self.read_plan(&plan).await,
                None => self.read_by_name(&listed).await,
            };
            match result {
                // A compaction deleted an object we listed: list again.
                Err(error) if is_not_found(&error) && attempts < READ_ATTEMPTS => attempts += 1,
                other => return other,
            }
        }
    }

    pub(super) async fn read_plan(&self, plan: &Plan<'_>) -> Result<Vec<R>> {
        let mut out = Vec::new();
        for segment in &plan.segments {
            out.extend(self.read_whole(segment.meta).await?.1);
        }
        Ok(out)
    }

    /// Up to `limit` records that `keep` accepts, starting at ordinal `from`
    /// (0 for the start; a page's `next` for the page after it), flushed and
    /// buffered alike. Reads only the objects that hold the page, so its cost
    /// follows the page, not the log (see the module docs).
    pub async fn read_page(
        &self,
        from: u64,
        limit: usize,
        keep: impl Fn(&R) -> bool,
    ) -> Result<Page<R>> {
        let mut attempts = 0;
        loop {
            // The buffer first: a flush that lands while we list moves
            // records to storage, and the flush count tells us to look again.
            let (buffered, flushes_before, durable_known) = {
                let state = self.lock_buffer();
                (state.0.clone(), state.1.flushes, state.1.durable)
            };
            let listed = self.list_objects().await?;
            if self.lock_buffer().1.flushes != flushes_before {
                continue;
            }
            let mut found: Vec<(u64, R)> = Vec::new();
            let durable = match plan(&listed) {
                Some(plan) => {
                    let mut read = Ok(());
                    for segment in plan.segments.iter().filter(|s| s.range.end > from) {
                        if found.len() > limit {
                            break;
                        }
                        read = self
                            .read_segment(segment, from, limit, &keep, &mut found)
                            .await;
                        if read.is_err() {
                            break;
                        }
                    }
                    match read {
                        // A compaction deleted an object we listed.
                        Err(error) if is_not_found(&error) && attempts < READ_ATTEMPTS => {
                            attempts += 1;
                            continue;
                        }
                        other => other?,
                    }
                    plan.total
                }
                None => {
                    let all = self.read_by_name(&listed).await?;
                    let total = all.len() as u64;
                    for (ordinal, record) in (0u64..).zip(all).skip(clamp(from)) {
                        if found.len() > limit {
                            break;
                        }
                        if keep(&record) {
                            found.push((ordinal, record));
                        }
                    }
                    total
                }
            };
            let base = durable_known.unwrap_or(durable);
            for (ordinal, record) in (base..).zip(buffered) {
                if found.len() > limit {
                    break;
                }
                if ordinal >= from.max(durable) && keep(&record) {
                    found.push((ordinal, record));
                }
            }
            let next = found.get(limit).map(|(ordinal, _)| *ordinal);
            found.truncate(limit);
            return Ok(Page {
                records: found.into_iter().map(|(_, r)| r).collect(),
                next,
            });
        }
    }

    /// Every record of every object in name order, skipping objects a merged
    /// object covers: the read for logs without (consistent) ordinals.
    pub(super) async fn read_by_name(&self, listed: &[Listed]) -> Result<Vec<R>> {
        let mut objects = Vec::with_capacity(listed.len());
        for object in listed {
            match self.read_whole(&object.meta).await {
                Ok((header, records)) => objects.push((object, header, records)),
                // Deleted by a concurrent compaction after we listed it: the
                // merged object we also listed (or will) holds its records.
                Err(Error::AppendLogStore {
                    source: object_store::Error::NotFound { .. },
                    ..
                }) => {}
                Err(error) => return Err(error),
            }
        }
        let covered: BTreeSet<String> = objects
            .iter()
            .flat_map(|(_, header, _)| header.covers.iter().cloned())
            .collect();
        let mut out = Vec::new();
        for (object, _, records) in objects {
            if !covered.contains(object.name.as_str()) {
                out.extend(records);
            }
        }
        Ok(out)
    }

    /// Appends to `found` the kept records of `segment` from ordinal `from`,
    /// stopping once `found` holds `limit + 1`.
    async fn read_segment(
        &self,
        segment: &Segment<'_>,
        from: u64,
        limit: usize,
        keep: &impl Fn(&R) -> bool,
        found: &mut Vec<(u64, R)>,
    ) -> Result<()> {
        let skip = from.saturating_sub(segment.range.start);
        let push = |ordinal: u64, record: R, found: &mut Vec<(u64, R)>| {
            if keep(&record) {
                found.push((ordinal, record));
            }
        };
        if segment.meta.size <= READ_WHOLE_BYTES {
            let (_, records) = self.read_whole(segment.meta).await?;
            for (ordinal, record) in (segment.range.start..).zip(records).skip(clamp(skip)) {
                if found.len() > limit {
                    break;
                }
                push(ordinal, record, found);
            }
            return Ok(());
        }
        // A large object: its header's index says where each stride of
        // records starts, so read stride by stride from the one holding
        // `from`.
        let (header, body_start) = self.read_header_at(segment.meta).await?;
        let mut stride = clamp(skip) / INDEX_STRIDE;
        while found.len() <= limit {
            let Some(&start) = header.index.get(stride) else {
                break;
            };
            let end = header
                .index
                .get(stride + 1)
                .map_or(segment.meta.size, |next| body_start + next);
            let bytes = self
                .get_range(segment.meta, body_start + start..end)
                .await?;
            let first = segment.range.start + (stride * INDEX_STRIDE) as u64;
            let records = parse_records::<R>(&segment.meta.location, &bytes)?;
            for (ordinal, record) in (first..).zip(records) {
                if found.len() > limit {
                    break;
                }
                if ordinal >= from {
                    push(ordinal, record, found);
                }
            }
            stride += 1;
        }
        Ok(())
    }
}

fn is_not_found(error: &Error) -> bool {
    matches!(
        error,
        Error::AppendLogStore {
            source: object_store::Error::NotFound { .. },
            ..
        }
    )
}

fn clamp(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

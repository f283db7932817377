//! Row-slice planning: a large row group is loaded as several row slices
//! at once, each its own task, so one big row group still uses all cores.

use std::ops::Range;

/// A row group of at least twice this many rows is decoded as several row
/// slices at once.
pub(super) const SLICE_MIN_ROWS: u64 = 16_384;

/// The row slices a row group of `rows` rows is decoded in: one when it is
/// small, else up to two per core, each of at least `SLICE_MIN_ROWS`.
pub(super) fn row_slices(rows: u64, cores: u64) -> Vec<Range<u64>> {
    let count = (rows / SLICE_MIN_ROWS).clamp(1, 2 * cores.max(1));
    let per = rows.div_ceil(count).max(1);
    (0..count)
        .map(|i| (i * per).min(rows)..((i + 1) * per).min(rows))
        .filter(|r| !r.is_empty())
        .collect()
}

/// Rows `rows` of row group `row_group` (`whole` when that is all of it).
#[derive(Debug, Clone)]
pub(super) struct RowGroupSlice {
    pub(super) row_group: usize,
    pub(super) rows: Range<u64>,
    pub(super) whole: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_row_groups_split_into_contiguous_slices() {
        assert_eq!(row_slices(10, 2), vec![0..10]);
        assert_eq!(row_slices(2 * SLICE_MIN_ROWS - 1, 2).len(), 1);
        let slices = row_slices(100_000, 2);
        assert_eq!(slices.len(), 4, "two per core");
        assert_eq!(slices.first().map(|r| r.start), Some(0));
        assert_eq!(slices.last().map(|r| r.end), Some(100_000));
        assert!(slices.windows(2).all(|w| w[0].end == w[1].start));
        assert!(row_slices(0, 2).is_empty());
    }
}

//! The plan of a TuneIndex run: successive halving over build parameters.
//! Every candidate is built on a small seeded sample of the vectors (with
//! its own exact ground truth), the best third moves on to a sample three
//! times larger, and so on until the survivors (at most `max_builds`) are
//! built on every vector. Each build's ef_search is swept up a ladder until
//! the recall target is met, so a candidate is judged at the cheapest
//! search that reaches it.

use crate::hnsw::HnswParams;

/// Survivors kept per rung: one in `ETA`.
pub const ETA: usize = 3;
/// Smallest sample worth building on: below it recall says little.
pub const MIN_SAMPLE: usize = 2000;
/// The ef_search values a sweep climbs, smallest first.
pub const EF_LADDER: &[u32] = &[
    10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024,
];
/// Default full-size builds.
pub const DEFAULT_MAX_BUILDS: usize = 4;
/// Default recall target.
pub const DEFAULT_MIN_RECALL: f64 = 0.95;

/// The built-in grid: M from sparse to dense, ef_construction from cheap to
/// thorough (15 candidates).
pub fn default_grid() -> Vec<HnswParams> {
    let mut grid = Vec::new();
    for m in [8, 12, 16, 24, 32] {
        for ef_construction in [64, 128, 256] {
            grid.push(HnswParams { m, ef_construction });
        }
    }
    grid
}

/// One rung: build `builds` candidates on `sample` vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rung {
    /// Vectors built on (the whole set on the last rung).
    pub sample: usize,
    /// Candidates built on this rung.
    pub builds: usize,
}

/// The rungs for `candidates` over `n` vectors with at most `max_builds`
/// full-size builds. A set too small to sample is built whole at once.
pub fn plan(n: usize, candidates: usize, max_builds: usize) -> Vec<Rung> {
    let max_builds = max_builds.max(1);
    let mut counts = vec![candidates.max(1)];
    while let Some(&last) = counts.last()
        && last > max_builds
    {
        counts.push(last.div_ceil(ETA));
    }
    let rungs = counts.len();
    let mut plan = Vec::with_capacity(rungs);
    for (i, &builds) in counts.iter().enumerate() {
        let shrink = ETA.pow((rungs - 1 - i) as u32);
        let sample = (n / shrink).max(MIN_SAMPLE.min(n));
        plan.push(Rung { sample, builds });
        if sample >= n {
            // Already full size: later rungs would rebuild the same graphs.
            if let Some(last) = plan.last_mut() {
                last.sample = n;
            }
            break;
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_sets_halve_down_to_the_build_budget() {
        let plan = plan(100_000, 15, 4);
        assert_eq!(
            plan,
            [
                Rung {
                    sample: 11_111,
                    builds: 15
                },
                Rung {
                    sample: 33_333,
                    builds: 5
                },
                Rung {
                    sample: 100_000,
                    builds: 2
                },
            ]
        );
    }

    #[test]
    fn small_sets_are_built_whole_at_once() {
        assert_eq!(
            plan(1500, 15, 4),
            [Rung {
                sample: 1500,
                builds: 15
            }]
        );
        assert_eq!(
            plan(9000, 15, 4),
            [
                Rung {
                    sample: 2000,
                    builds: 15
                },
                Rung {
                    sample: 3000,
                    builds: 5
                },
                Rung {
                    sample: 9000,
                    builds: 2
                },
            ]
        );
        assert_eq!(
            plan(10, 3, 4),
            [Rung {
                sample: 10,
                builds: 3
            }]
        );
    }
}

//! Distance metrics. Smaller is nearer under every metric, so one search
//! loop serves all three.

use serde::{Deserialize, Serialize};

use crate::simd;

/// How distance between two vectors is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// `1 - cos(a, b)`, in [0, 2]. Vectors are normalised when loaded, so
    /// this is `1 - a.b` on unit vectors.
    Cosine,
    /// Squared Euclidean distance (no square root: same order, less work).
    L2,
    /// `-(a.b)`: negative for similar vectors.
    Dot,
}

impl Metric {
    /// The distance between `a` and `b` (already normalised for cosine).
    #[inline]
    pub fn distance(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Self::Cosine => 1.0 - simd::dot(a, b),
            Self::L2 => simd::l2_squared(a, b),
            Self::Dot => -simd::dot(a, b),
        }
    }

    /// Whether vectors are stored normalised to unit length.
    pub fn normalizes(self) -> bool {
        self == Self::Cosine
    }

    /// Euclidean length of `v`, with the SIMD kernel: stored vectors and
    /// queries are normalised by this one function, so a query equal to a
    /// stored row normalises to the same bits.
    pub fn norm(v: &[f32]) -> f32 {
        simd::dot(v, v).sqrt()
    }

    /// Lowercase name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cosine => "cosine",
            Self::L2 => "l2",
            Self::Dot => "dot",
        }
    }
}

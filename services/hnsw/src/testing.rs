//! Test data for the engine's tests, the vector service's tests and the
//! benchmark (feature `testing`, enabled only in dev-dependencies).

/// Seeded clustered vectors, like real embeddings: a Gaussian mixture on a
/// low-dimensional subspace, plus a little noise, normalised. For tests and
/// the benchmark.
pub fn clustered_vectors(n: usize, dim: usize, clusters: usize, seed: u64) -> Vec<f32> {
    let mut state = seed | 1;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let mut gauss = move || {
        let (u, v) = (uniform(), uniform());
        ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
    };
    let subspace = 8.min(dim);
    let basis: Vec<f32> = (0..subspace * dim).map(|_| gauss()).collect();
    let centers: Vec<f32> = (0..clusters * subspace).map(|_| gauss() * 3.0).collect();
    let mut out = Vec::with_capacity(n * dim);
    crate::simd::advise_huge_pages(out.spare_capacity_mut());
    for i in 0..n {
        let c = i % clusters.max(1);
        let coords: Vec<f32> = (0..subspace)
            .map(|j| centers[c * subspace + j] + gauss())
            .collect();
        let mut row: Vec<f32> = (0..dim)
            .map(|d| {
                coords
                    .iter()
                    .enumerate()
                    .map(|(j, x)| x * basis[j * dim + d])
                    .sum::<f32>()
                    + 0.1 * gauss()
            })
            .collect();
        let norm = row
            .iter()
            .map(|v| v * v)
            .sum::<f32>()
            .sqrt()
            .max(f32::MIN_POSITIVE);
        row.iter_mut().for_each(|v| *v /= norm);
        out.extend_from_slice(&row);
    }
    out
}

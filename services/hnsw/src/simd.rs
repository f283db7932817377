//! Distance kernels and memory hints: the one module of the workspace that
//! uses `unsafe` (ADR 0008, ADR 0015). The kernels use AVX2 + FMA when the CPU has
//! them, checked at run time, and otherwise a portable loop written so that
//! LLVM vectorises it with SSE. Each kernel is tested against the scalar
//! definition.
//!
//! Safety, for every `unsafe` block below: the `target_feature` functions are
//! only called after `is_x86_feature_detected!` confirmed the features, and
//! they read `a` and `b` only below `n = min(a.len(), b.len())` (loads of 8
//! lanes only while `i + 8 <= n`). Prefetching an address is a hint that
//! never faults, whatever the address. `madvise` only advises the kernel on
//! pages that the slice owns; it never changes their contents.
#![allow(unsafe_code)]

/// Inner product over the common length of `a` and `b`.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len(), "dot of vectors of different lengths");
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: features checked just above; see the module comment.
        return unsafe { x86::dot(a, b) };
    }
    portable::dot(a, b)
}

/// Squared Euclidean distance over the common length of `a` and `b`.
#[inline]
pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len(), "distance of vectors of different lengths");
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: features checked just above; see the module comment.
        return unsafe { x86::l2_squared(a, b) };
    }
    portable::l2_squared(a, b)
}

/// Asks the CPU to start loading the cache lines of `data` (at most the
/// first 4 lines: enough to hide the latency of the rest, as hnswlib does).
#[inline]
pub fn prefetch(data: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let lines = data.len().div_ceil(16).min(4);
        for line in 0..lines {
            // SAFETY: a prefetch never faults; `wrapping_add` keeps the
            // pointer arithmetic defined even past the slice.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(data.as_ptr().wrapping_add(line * 16).cast::<i8>());
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

/// Prefetches one `u32` slot (a visited mark).
#[inline]
pub fn prefetch_u32(data: &[u32], index: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: as above: a prefetch never faults.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(data.as_ptr().wrapping_add(index).cast::<i8>());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (data, index);
}

/// Asks Linux to back `memory` with 2 MiB transparent huge pages
/// (`MADV_HUGEPAGE`); says whether the kernel took the advice. Call it on a
/// fresh allocation before writing it (`Vec::spare_capacity_mut`): the
/// pages are then faulted in huge, at no extra cost, where advising written
/// memory would need a synchronous copy (`MADV_COLLAPSE`, ~0.7 s for
/// 300 MiB here). A search touches a few hundred vectors scattered over
/// hundreds of MiB: with 4 KiB pages nearly every one is a TLB miss, and on
/// a virtual machine a miss walks two page tables (ADR 0008 has the
/// figures). Only a hint: with THP off
/// (`/sys/kernel/mm/transparent_hugepage/enabled` = never) or elsewhere than
/// Linux nothing changes. Buffers under 4 MiB are left alone.
pub fn advise_huge_pages<T>(memory: &[T]) -> bool {
    const HUGE: usize = 2 << 20;
    let bytes = std::mem::size_of_val(memory);
    if bytes < 2 * HUGE {
        return false;
    }
    #[cfg(target_os = "linux")]
    {
        // Whole huge pages inside the slice only: advising a page the slice
        // shares with another allocation would change memory we do not own.
        let start = memory.as_ptr() as usize;
        let first = start.next_multiple_of(HUGE);
        let end = (start + bytes) / HUGE * HUGE;
        if end <= first {
            return false;
        }
        // SAFETY: [first, end) lies inside `memory`, which this call
        // borrows, and MADV_HUGEPAGE keeps the contents as they are (see the
        // module comment). An error (THP compiled out) is reported, not fatal.
        unsafe { libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    false
}

/// A zeroed buffer of `len` values, advised onto huge pages before the
/// zeros fault its pages in (see [`advise_huge_pages`]).
pub fn huge_zeroed<T: bytemuck::Zeroable + Clone>(len: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(len);
    advise_huge_pages(out.spare_capacity_mut());
    out.resize(len, T::zeroed());
    out
}

/// Whether the AVX2 + FMA kernels run on this CPU (std caches the answer).
#[inline]
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let sum = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
        let sum = _mm_add_ss(sum, _mm_shuffle_ps::<0b01>(sum, sum));
        _mm_cvtss_f32(sum)
    }

    /// Inner product with AVX2 + FMA, four accumulators.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA (checked by the caller with
    /// [`super::has_avx2_fma`]). Reads stay below `min(a.len(), b.len())`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY (all loads): i + 32 <= n or i + 8 <= n before each load.
        unsafe {
            while i + 32 <= n {
                for (lane, acc) in acc.iter_mut().enumerate() {
                    let off = i + lane * 8;
                    *acc = _mm256_fmadd_ps(
                        _mm256_loadu_ps(pa.add(off)),
                        _mm256_loadu_ps(pb.add(off)),
                        *acc,
                    );
                }
                i += 32;
            }
            while i + 8 <= n {
                acc[0] = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i)),
                    _mm256_loadu_ps(pb.add(i)),
                    acc[0],
                );
                i += 8;
            }
        }
        let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut total = hsum(sum);
        for j in i..n {
            total += a[j] * b[j];
        }
        total
    }

    /// Squared Euclidean distance with AVX2 + FMA, four accumulators.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA (checked by the caller with
    /// [`super::has_avx2_fma`]). Reads stay below `min(a.len(), b.len())`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY (all loads): i + 32 <= n or i + 8 <= n before each load.
        unsafe {
            while i + 32 <= n {
                for (lane, acc) in acc.iter_mut().enumerate() {
                    let off = i + lane * 8;
                    let d =
                        _mm256_sub_ps(_mm256_loadu_ps(pa.add(off)), _mm256_loadu_ps(pb.add(off)));
                    *acc = _mm256_fmadd_ps(d, d, *acc);
                }
                i += 32;
            }
            while i + 8 <= n {
                let d = _mm256_sub_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)));
                acc[0] = _mm256_fmadd_ps(d, d, acc[0]);
                i += 8;
            }
        }
        let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut total = hsum(sum);
        for j in i..n {
            let d = a[j] - b[j];
            total += d * d;
        }
        total
    }
}

/// Portable kernels: eight independent accumulators, which LLVM turns into
/// vector registers without `-ffast-math`.
mod portable {
    pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [0f32; 8];
        let mut ca = a.chunks_exact(8);
        let mut cb = b.chunks_exact(8);
        for (x, y) in ca.by_ref().zip(cb.by_ref()) {
            for l in 0..8 {
                acc[l] += x[l] * y[l];
            }
        }
        let tail: f32 = ca
            .remainder()
            .iter()
            .zip(cb.remainder())
            .map(|(x, y)| x * y)
            .sum();
        acc.iter().sum::<f32>() + tail
    }

    pub(super) fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [0f32; 8];
        let mut ca = a.chunks_exact(8);
        let mut cb = b.chunks_exact(8);
        for (x, y) in ca.by_ref().zip(cb.by_ref()) {
            for l in 0..8 {
                let d = x[l] - y[l];
                acc[l] += d * d;
            }
        }
        let tail: f32 = ca
            .remainder()
            .iter()
            .zip(cb.remainder())
            .map(|(x, y)| (x - y) * (x - y))
            .sum();
        acc.iter().sum::<f32>() + tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar_dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum()
    }

    fn scalar_l2(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
            .sum()
    }

    #[test]
    fn huge_zeroed_buffers_are_zeroed_and_on_huge_pages_where_linux_allows() {
        assert!(
            !advise_huge_pages(&[0u8; 4096]),
            "small buffers are left alone"
        );
        let buffer = huge_zeroed::<f32>(4 << 20);
        assert_eq!(buffer.len(), 4 << 20);
        assert!(buffer.iter().all(|&v| v == 0.0));
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .unwrap_or_default();
        if !cfg!(target_os = "linux") || thp.is_empty() || thp.contains("[never]") {
            eprintln!("SKIP huge-page check: transparent huge pages are off here ({thp:?})");
            return;
        }
        // The mapping that holds the buffer's first whole huge page, in this
        // process's smaps (the advice splits the buffer's mapping there).
        let at = (buffer.as_ptr() as usize).next_multiple_of(2 << 20);
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("read smaps");
        let mut inside = false;
        let mut huge_kib = None;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ')
                && let Some((lo, hi)) = range.split_once('-')
                && let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                inside = (lo..hi).contains(&at);
                continue;
            }
            if inside && let Some(kib) = line.strip_prefix("AnonHugePages:") {
                huge_kib = kib
                    .trim()
                    .trim_end_matches(" kB")
                    .trim()
                    .parse::<u64>()
                    .ok();
                break;
            }
        }
        let huge_kib = huge_kib.expect("the buffer's mapping is in smaps");
        assert!(
            huge_kib >= 2048,
            "16 MiB advised before first touch should sit on huge pages, smaps says {huge_kib} kB"
        );
    }

    #[test]
    fn kernels_match_the_scalar_definition_at_every_length() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % 2001) as f32 / 1000.0 - 1.0
        };
        for len in (0..70).chain([127, 128, 129, 384, 768, 1536]) {
            let a: Vec<f32> = (0..len).map(|_| next()).collect();
            let b: Vec<f32> = (0..len).map(|_| next()).collect();
            let tolerance = 1e-4 * (len as f64).max(1.0);
            for (got, want) in [
                (dot(&a, &b), scalar_dot(&a, &b)),
                (portable::dot(&a, &b), scalar_dot(&a, &b)),
                (l2_squared(&a, &b), scalar_l2(&a, &b)),
                (portable::l2_squared(&a, &b), scalar_l2(&a, &b)),
            ] {
                assert!(
                    (f64::from(got) - want).abs() <= tolerance,
                    "len {len}: {got} vs {want}"
                );
            }
            prefetch(&a);
        }
        eprintln!("avx2+fma kernels in use: {}", has_avx2_fma());
    }
}

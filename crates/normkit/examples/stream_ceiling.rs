//! What one core can stream, and what the arithmetic and the access order of
//! an elementwise pass cost it: `memcpy` (`copy_from_slice`) against
//! `y = a·x + b` over 128 MiB of `f32`, written out with 64-byte
//! non-temporal stores, in several forms:
//!
//! - `f32` / `f64`: the way normkit's kernels stream: each chunk of 256
//!   values computed into an L1 buffer (in `f32`, or in `f64` as BatchNorm's
//!   eval pass does), the input prefetched 4 KiB ahead, chunk after chunk;
//! - `staged4`: as `f32`, but four quarters of `x` at once, a chunk of each
//!   first copied into L1 a cache line of each quarter in turn;
//! - `pages4`: from registers, blocks of four 4 KiB pages, one line of each
//!   page in turn (glibc's pattern for large copies);
//! - `reads4` / `writes4`: as `pages4`, but only the reads (or only the
//!   writes) go four pages at a time, the other side in order;
//! - `2in1out`: as `f32`, but `y = a·x + b·z` from two inputs, as a backward
//!   pass reads `x` and `dy` (its GB/s count both reads and the write).
//!
//! Rounds alternate the forms, so a busy host slows them alike; read the
//! quiet rounds.
//!
//! Run: `cargo run --release -p normkit --example stream_ceiling` (x86_64 with
//! AVX-512F; elsewhere it says so and exits).

const LEN: usize = 32 << 20;
const CHUNK: usize = 256;

#[path = "support/timing.rs"]
mod timing;

/// Median GB/s of 11 calls of `f`, which move `bytes` (read plus written).
fn gbps_of(bytes: usize, f: impl FnMut()) -> f64 {
    bytes as f64 / timing::median_secs(11, f) / 1e9
}

/// `gbps_of` for one `f32` array of LEN in and one out.
fn gbps(f: impl FnMut()) -> f64 {
    gbps_of(LEN * 8, f)
}

#[cfg(target_arch = "x86_64")]
mod stream {
    use super::CHUNK;
    use std::arch::x86_64::*;

    #[repr(C, align(64))]
    struct Line([f32; CHUNK]);

    /// Writes `buf` to `y` (CHUNK values, 64-byte aligned) with non-temporal
    /// stores.
    #[target_feature(enable = "avx512f")]
    fn stream_out(y: &mut [f32], buf: &Line) {
        assert!(y.len() >= CHUNK && y.as_ptr().align_offset(64) == 0);
        for i in (0..CHUNK).step_by(16) {
            // SAFETY: `i + 16 <= CHUNK <= y.len()`, `y` and `buf` 64-byte
            // aligned (asserted; `Line` is `align(64)`).
            unsafe { _mm512_stream_ps(y.as_mut_ptr().add(i), _mm512_load_ps(buf.0.as_ptr().add(i))) };
        }
    }

    /// `y = f(x)` chunk by chunk through an L1 buffer, non-temporal stores.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `y` starts on a 64-byte boundary; both hold a
    /// multiple of `CHUNK` values, `y` at least as many as `x`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn map(x: &[f32], y: &mut [f32], f: impl Fn(f32) -> f32) {
        let mut buf = Line([0.0; CHUNK]);
        for (xc, yc) in x.chunks_exact(CHUNK).zip(y.chunks_exact_mut(CHUNK)) {
            let ahead = xc.as_ptr().cast::<u8>().wrapping_add(4096);
            for line in 0..CHUNK * 4 / 64 {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line * 64).cast());
            }
            for (o, &v) in buf.0.iter_mut().zip(xc) {
                *o = f(v);
            }
            stream_out(yc, &buf);
        }
        _mm_sfence();
    }

    /// `y = f(x, z)`, two inputs (as a backward pass reads `x` and `dy`), the
    /// way `map` streams one.
    ///
    /// # Safety
    /// As `map`; `z` as long as `x`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn map2(x: &[f32], z: &[f32], y: &mut [f32], f: impl Fn(f32, f32) -> f32) {
        let mut buf = Line([0.0; CHUNK]);
        for ((xc, zc), yc) in x.chunks_exact(CHUNK).zip(z.chunks_exact(CHUNK)).zip(y.chunks_exact_mut(CHUNK)) {
            let (xa, za) = (xc.as_ptr().cast::<u8>().wrapping_add(4096), zc.as_ptr().cast::<u8>().wrapping_add(4096));
            for line in 0..CHUNK * 4 / 64 {
                _mm_prefetch::<_MM_HINT_T0>(xa.wrapping_add(line * 64).cast());
                _mm_prefetch::<_MM_HINT_T0>(za.wrapping_add(line * 64).cast());
            }
            for ((o, &v), &w) in buf.0.iter_mut().zip(xc).zip(zc) {
                *o = f(v, w);
            }
            stream_out(yc, &buf);
        }
        _mm_sfence();
    }

    /// As `map`, but a chunk of each quarter of `x` at once, first copied
    /// into L1 a line of each quarter in turn.
    ///
    /// # Safety
    /// As `map`; lengths a multiple of `4 * CHUNK`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn staged4(x: &[f32], y: &mut [f32], f: impl Fn(f32) -> f32) {
        let mut staged = [Line([0.0; CHUNK]), Line([0.0; CHUNK]), Line([0.0; CHUNK]), Line([0.0; CHUNK])];
        let mut buf = Line([0.0; CHUNK]);
        let q = x.len() / 4;
        for c in (0..q).step_by(CHUNK) {
            for l in (0..CHUNK).step_by(16) {
                for (s, b) in staged.iter_mut().enumerate() {
                    let src: &[f32; 16] = x[s * q + c + l..][..16].try_into().unwrap();
                    let dst: &mut [f32; 16] = (&mut b.0[l..l + 16]).try_into().unwrap();
                    *dst = *src;
                }
            }
            for (s, b) in staged.iter().enumerate() {
                for (o, &v) in buf.0.iter_mut().zip(&b.0) {
                    *o = f(v);
                }
                stream_out(&mut y[s * q + c..], &buf);
            }
        }
        _mm_sfence();
    }

    /// `y = a·x + b` from registers over blocks of four 4 KiB pages: the
    /// `k`-th read goes to line `k / 4` of page `k % 4` when `reads4`
    /// (else to line `k` of the block), and the same for writes.
    ///
    /// # Safety
    /// As `map`; lengths a multiple of 4096 values.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn pages4(x: &[f32], y: &mut [f32], a: f32, b: f32, reads4: bool, writes4: bool) {
        const P: usize = 1024; // f32 per page
        let (va, vb) = (_mm512_set1_ps(a), _mm512_set1_ps(b));
        for (xc, yc) in x.chunks_exact(4 * P).zip(y.chunks_exact_mut(4 * P)) {
            for k in 0..4 * P / 16 {
                let paged = (k % 4) * P + (k / 4) * 16;
                let (r, w) = (if reads4 { paged } else { k * 16 }, if writes4 { paged } else { k * 16 });
                // SAFETY: `r + 16` and `w + 16` are at most `4 * P`, the
                // length of both blocks; `yc` is 64-byte aligned (`y` is,
                // and blocks are 16 KiB).
                unsafe {
                    let v = _mm512_loadu_ps(xc.as_ptr().add(r));
                    _mm512_stream_ps(yc.as_mut_ptr().add(w), _mm512_fmadd_ps(v, va, vb));
                }
            }
        }
        _mm_sfence();
    }
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        let x: Vec<f32> = (0..LEN).map(|i| (i % 1000) as f32 * 1e-3).collect();
        let mut out = vec![0f32; LEN + 16];
        let lead = out.as_ptr().align_offset(64);
        let y = &mut out[lead..lead + LEN];
        let (a32, b32) = (1.5f32, 0.25f32);
        let (m, s, b) = (0.5f64, 1.5f64, 0.25f64);
        println!("GB/s, median of 11, one thread, 128 MiB of f32 in and out");
        let z: Vec<f32> = (0..LEN).map(|i| (i % 777) as f32 * 1e-3).collect();
        println!("round  memcpy     f32     f64  staged4  pages4  reads4 writes4  2in1out");
        for round in 1..=6 {
            let copy = gbps(|| y.copy_from_slice(&x));
            // SAFETY (all below): AVX-512F detected above; `y` starts on a
            // line; LEN is a multiple of 4096.
            let f32_pass = gbps(|| unsafe { stream::map(&x, y, |v| v.mul_add(a32, b32)) });
            let f64_pass = gbps(|| unsafe { stream::map(&x, y, |v| ((f64::from(v) - m) * s + b) as f32) });
            let staged = gbps(|| unsafe { stream::staged4(&x, y, |v| v.mul_add(a32, b32)) });
            let pages = gbps(|| unsafe { stream::pages4(&x, y, a32, b32, true, true) });
            let reads = gbps(|| unsafe { stream::pages4(&x, y, a32, b32, true, false) });
            let writes = gbps(|| unsafe { stream::pages4(&x, y, a32, b32, false, true) });
            let two_in = gbps_of(LEN * 12, || unsafe { stream::map2(&x, &z, y, |v, w| v.mul_add(a32, w * b32)) });
            println!(
                "{round:>5} {copy:>7.1} {f32_pass:>7.1} {f64_pass:>7.1} {staged:>8.1} {pages:>7.1} {reads:>7.1} {writes:>7.1} {two_in:>8.1}"
            );
        }
        return;
    }
    println!("stream_ceiling needs x86_64 with AVX-512F");
}

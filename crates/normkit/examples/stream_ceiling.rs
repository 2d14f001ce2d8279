//! What one core can stream, and what the arithmetic of an elementwise pass
//! costs it: `memcpy` (`copy_from_slice`) against `y = a·x + b` over 128 MiB
//! of `f32`, computed in `f32` or in `f64` (as BatchNorm's eval pass does),
//! each chunk of 256 values computed into an L1 buffer and written out with
//! 64-byte non-temporal stores, the input prefetched 4 KiB ahead: the way
//! normkit's kernels stream. Rounds alternate the three, so a busy host
//! slows them alike; read the quiet rounds.
//!
//! Run: `cargo run --release -p normkit --example stream_ceiling` (x86_64 with
//! AVX-512F; elsewhere it says so and exits).

use std::time::Instant;

const LEN: usize = 32 << 20;
const CHUNK: usize = 256;

/// Median and best GB/s (bytes read plus written) of 11 calls of `f`.
fn gbps(mut f: impl FnMut()) -> (f64, f64) {
    let mut t: Vec<f64> = (0..11)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    let bytes = (LEN * 8) as f64;
    (bytes / t[5] / 1e9, bytes / t[0] / 1e9)
}

#[cfg(target_arch = "x86_64")]
mod stream {
    use super::CHUNK;
    use std::arch::x86_64::*;

    #[repr(C, align(64))]
    struct Line([f32; CHUNK]);

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
            for i in (0..CHUNK).step_by(16) {
                // SAFETY: `i + 16 <= CHUNK` values of both; `yc` is 64-byte
                // aligned by the caller's contract and CHUNK·4 bytes a chunk.
                unsafe { _mm512_stream_ps(yc.as_mut_ptr().add(i), _mm512_load_ps(buf.0.as_ptr().add(i))) };
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
        println!("GB/s, median (best) of 11, one thread, 128 MiB of f32 in and out");
        for round in 1..=6 {
            let copy = gbps(|| y.copy_from_slice(&x));
            // SAFETY: AVX-512F detected above; `y` starts on a line; LEN is a
            // multiple of CHUNK.
            let f32_pass = gbps(|| unsafe { stream::map(&x, y, |v| v.mul_add(a32, b32)) });
            let f64_pass = gbps(|| unsafe { stream::map(&x, y, |v| ((f64::from(v) - m) * s + b) as f32) });
            println!(
                "round {round}: memcpy {:.1} ({:.1})  f32 a·x+b {:.1} ({:.1})  f64 (x-m)·s+b {:.1} ({:.1})",
                copy.0, copy.1, f32_pass.0, f32_pass.1, f64_pass.0, f64_pass.1
            );
        }
        return;
    }
    println!("stream_ceiling needs x86_64 with AVX-512F");
}

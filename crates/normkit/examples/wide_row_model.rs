//! A model of the wide-row LayerNorm backward (`[256, 65536]` `f32`, one
//! thread): the memory traffic of `row_backward::backward_wide_rows` with
//! almost none of its arithmetic, to tell what the traffic alone costs in
//! each order of the work. Per row of `N` values:
//!
//! ```text
//! sweep 1 (from memory):  s_g += dy·w,  s_gx += dy·w·x          (two sums)
//! sweep 2 (from cache):   dx = 0.3·x + 0.7·dy·w   (non-temporal stores)
//!                         sdw_j += dy_j·x_j,  sdb_j += dy_j     (row-long sums)
//! ```
//!
//! The forms (each prints ns per element; 12 bytes move per element):
//! - `rows`: sweep 1 of a row, then its sweep 2;
//! - `interleaved`: sweep 1 of the next row a chunk at a time between the
//!   chunks of this row's sweep 2 (the kernel's order);
//! - `interleaved_rev`: as `interleaved`, but sweep 2 walks the row's chunks
//!   from its end, where sweep 1 left off;
//! - `no_sums`: `rows` without the row-long sums (wrong results: the floor
//!   of the two sweeps);
//! - `l1_sums`: `rows` with the row-long sums replaced by an 8 KiB stand-in
//!   that stays in L1 (wrong results: what the sums' traffic costs);
//! - `sums_in_sweep1`: the row-long sums added in sweep 1 instead;
//! - `groups4`: sweep 1 over four rows, then their sweep 2 column tile by
//!   column tile (1024 values), so that a tile's sums stay in L1 while the
//!   four rows add to them;
//! - `sweep1_only`: sweep 1 alone (what reading `x` and `dy` costs).
//!
//! and `memcpy` of 128 MiB for the machine's copy bandwidth; the issue's bar
//! is 0.7 of it. `x`, `dy` and `dx` come from `ops::zeroed_buffer` (2 MiB
//! pages where the OS gives them), as in `normkit bench`. Rounds alternate
//! the forms, so a busy host slows them alike.
//!
//! Run: `cargo run --release -p normkit --example wide_row_model` (x86_64 with
//! AVX-512F; elsewhere it says so and exits).

#[cfg(target_arch = "x86_64")]
#[path = "support/timing.rs"]
mod timing;

#[cfg(target_arch = "x86_64")]
mod model {
    use std::arch::x86_64::*;

    pub const N: usize = 65536;
    pub const ROWS: usize = 256;
    const CHUNK: usize = 256;
    const TILE: usize = 1024;

    /// The arrays of one call, each 64-byte aligned.
    pub struct Arrays {
        pub x: *const f32,
        pub dy: *const f32,
        pub w: *const f32,
        pub sdw: *mut f32,
        pub sdb: *mut f32,
        pub dx: *mut f32,
    }

    // The chunk functions below take pointers to `CHUNK` values each (past
    // which `sweep1`'s prefetches may point: a prefetch never faults), 64-byte
    // aligned, in arrays that `backward`'s caller guarantees.

    /// Sweep 1 over one chunk, the next 4 KiB of `x` and `dy` prefetched.
    #[inline(always)]
    unsafe fn sweep1(x: *const f32, dy: *const f32, w: *const f32, acc: &mut [__m512; 2]) {
        for line in (0..CHUNK * 4).step_by(64) {
            _mm_prefetch::<_MM_HINT_T0>(x.cast::<i8>().wrapping_add(4096 + line));
            _mm_prefetch::<_MM_HINT_T0>(dy.cast::<i8>().wrapping_add(4096 + line));
        }
        for k in (0..CHUNK).step_by(16) {
            let g = _mm512_mul_ps(_mm512_load_ps(dy.add(k)), _mm512_load_ps(w.add(k)));
            acc[0] = _mm512_add_ps(acc[0], g);
            acc[1] = _mm512_fmadd_ps(g, _mm512_load_ps(x.add(k)), acc[1]);
        }
    }

    /// The row-long sums over one chunk.
    #[inline(always)]
    unsafe fn sums(x: *const f32, dy: *const f32, sdw: *mut f32, sdb: *mut f32) {
        for k in (0..CHUNK).step_by(16) {
            let (xv, dyv) = (_mm512_load_ps(x.add(k)), _mm512_load_ps(dy.add(k)));
            _mm512_store_ps(sdw.add(k), _mm512_fmadd_ps(dyv, xv, _mm512_load_ps(sdw.add(k))));
            _mm512_store_ps(sdb.add(k), _mm512_add_ps(dyv, _mm512_load_ps(sdb.add(k))));
        }
    }

    /// Sweep 2 over one chunk: `dx`, and the sums when `sdw` is given.
    #[inline(always)]
    unsafe fn sweep2(x: *const f32, dy: *const f32, w: *const f32, dx: *mut f32, s: Option<(*mut f32, *mut f32)>) {
        let (a, b) = (_mm512_set1_ps(0.3), _mm512_set1_ps(0.7));
        for k in (0..CHUNK).step_by(16) {
            let (xv, dyv) = (_mm512_load_ps(x.add(k)), _mm512_load_ps(dy.add(k)));
            let g = _mm512_mul_ps(dyv, _mm512_load_ps(w.add(k)));
            _mm512_stream_ps(dx.add(k), _mm512_fmadd_ps(xv, a, _mm512_mul_ps(g, b)));
        }
        if let Some((sdw, sdb)) = s {
            sums(x, dy, sdw, sdb);
        }
    }

    /// One pass over `ROWS` rows in the form `form` (see the module docs).
    ///
    /// # Safety
    /// The CPU has AVX-512F; `x`, `dy`, `dx` hold `ROWS · N` values and `w`,
    /// `sdw`, `sdb` hold `N`, all 64-byte aligned.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn backward(a: &Arrays, form: &str) -> f32 {
        let mut acc = [_mm512_setzero_ps(); 2];
        let row = |r: usize| (a.x.add(r * N), a.dy.add(r * N), a.dx.add(r * N));
        let full = |c: usize| Some((a.sdw.add(c), a.sdb.add(c)));
        let l1 = |c: usize| Some((a.sdw.add(c % (8 * CHUNK)), a.sdb.add(c % (8 * CHUNK))));
        match form {
            "interleaved" | "interleaved_rev" => {
                for c in (0..N).step_by(CHUNK) {
                    sweep1(a.x.add(c), a.dy.add(c), a.w.add(c), &mut acc);
                }
                for r in 0..ROWS {
                    let (x, dy, dx) = row(r);
                    for c in (0..N).step_by(CHUNK) {
                        // Sweep 2's chunk: the same as sweep 1's, or its mirror.
                        let c2 = if form == "interleaved" { c } else { N - CHUNK - c };
                        sweep2(x.add(c2), dy.add(c2), a.w.add(c2), dx.add(c2), full(c2));
                        if r + 1 < ROWS {
                            sweep1(x.add(N + c), dy.add(N + c), a.w.add(c), &mut acc);
                        }
                    }
                }
            }
            "groups4" => {
                for r0 in (0..ROWS).step_by(4) {
                    for r in r0..r0 + 4 {
                        let (x, dy, _) = row(r);
                        for c in (0..N).step_by(CHUNK) {
                            sweep1(x.add(c), dy.add(c), a.w.add(c), &mut acc);
                        }
                    }
                    for t in (0..N).step_by(TILE) {
                        for r in r0..r0 + 4 {
                            let (x, dy, dx) = row(r);
                            for c in (t..t + TILE).step_by(CHUNK) {
                                sweep2(x.add(c), dy.add(c), a.w.add(c), dx.add(c), full(c));
                            }
                        }
                    }
                }
            }
            _ => {
                for r in 0..ROWS {
                    let (x, dy, dx) = row(r);
                    for c in (0..N).step_by(CHUNK) {
                        sweep1(x.add(c), dy.add(c), a.w.add(c), &mut acc);
                        if form == "sums_in_sweep1" {
                            sums(x.add(c), dy.add(c), a.sdw.add(c), a.sdb.add(c));
                        }
                    }
                    if form == "sweep1_only" {
                        continue;
                    }
                    for c in (0..N).step_by(CHUNK) {
                        let s = match form {
                            "rows" => full(c),
                            "l1_sums" => l1(c),
                            _ => None,
                        };
                        sweep2(x.add(c), dy.add(c), a.w.add(c), dx.add(c), s);
                    }
                }
            }
        }
        _mm_sfence();
        _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]))
    }
}

#[cfg(target_arch = "x86_64")]
fn main() {
    use model::{Arrays, N, ROWS};
    use timing::median_secs;
    if !std::arch::is_x86_feature_detected!("avx512f") {
        println!("wide_row_model needs x86_64 with AVX-512F");
        return;
    }
    /// A 64-byte aligned run of 16 values.
    #[repr(C, align(64))]
    #[derive(Clone, Copy)]
    struct Line([f32; 16]);
    let lines = |len: usize, v: f32| vec![Line([v; 16]); len / 16];
    // A tensor of `ROWS · N` values as the bench allocates it, from its first
    // 64-byte boundary on.
    let tensor = |v: f32| {
        let mut t: Vec<f32> = normkit::ops::zeroed_buffer(ROWS * N + 16);
        t.fill(v);
        t
    };
    let aligned = |t: &[f32]| t.as_ptr().align_offset(64);
    let (x, dy, mut dx) = (tensor(0.5), tensor(0.25), tensor(0.0));
    let (w, mut sdw, mut sdb) = (lines(N, 1.5), lines(N, 0.0), lines(N, 0.0));
    let arrays = Arrays {
        x: x[aligned(&x)..].as_ptr(),
        dy: dy[aligned(&dy)..].as_ptr(),
        w: w.as_ptr().cast(),
        sdw: sdw.as_mut_ptr().cast(),
        sdb: sdb.as_mut_ptr().cast(),
        dx: {
            let lead = aligned(&dx);
            dx[lead..].as_mut_ptr()
        },
    };
    // memcpy's buffers on 2 MiB pages too, as `normkit bench` measures it.
    const COPY_LEN: usize = 32 << 20;
    let (mut src, mut dst) = (normkit::ops::zeroed_buffer::<f32>(COPY_LEN), normkit::ops::zeroed_buffer(COPY_LEN));
    src.fill(1.0);
    let forms =
        ["rows", "interleaved", "interleaved_rev", "no_sums", "l1_sums", "sums_in_sweep1", "groups4", "sweep1_only"];
    println!("[{ROWS}, {N}] f32, one thread: ns per element, median of 7 (the bar, 0.7 of memcpy, in the last column)");
    println!("round {}   memcpy GB/s   bar ns", forms.map(|f| format!("{f:>16}")).join(""));
    for round in 1..=4 {
        let copy_bytes = 2 * COPY_LEN * std::mem::size_of::<f32>(); // read plus written
        let copy_gbps = copy_bytes as f64 / median_secs(7, || dst.copy_from_slice(&src)) / 1e9;
        let times = forms.map(|form| {
            // SAFETY: AVX-512F detected above; the arrays start on 64-byte
            // boundaries (`Line`, or `aligned` into a tensor 16 values
            // longer than it needs) and hold the sizes `backward` needs.
            let t = median_secs(7, || {
                std::hint::black_box(unsafe { model::backward(&arrays, form) });
            });
            format!("{:>16.3}", t / (ROWS * N) as f64 * 1e9)
        });
        let bar_ns = 12.0 / (0.7 * copy_gbps);
        println!("{round:>5} {} {copy_gbps:>13.1} {bar_ns:>8.3}", times.join(""));
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    println!("wide_row_model needs x86_64 with AVX-512F");
}

//! Time per element of the row kernels on data that stays in cache, with one
//! thread: the compute cost that the memory-bound benchmark (`normkit bench`)
//! hides behind memory. Each figure is the fastest of many timed batches, so a
//! busy machine inflates it less than a median would.
//!
//! Run: `cargo run --release -p normkit --example kernel_probe [n [ln_fwd|rms_fwd|ln_bwd|rms_bwd|gn_fwd|bn_train_fwd|bn_train_nhwc_fwd|bn_eval|bn_stats|bn_sums|bn_dx (and each with _nhwc)|copy]]`

use normkit::kernels::{self, Affine, Grads};
use std::hint::black_box;
use std::time::Instant;

/// The fastest of 200 batches of `reps` calls, in ns per element; NaN when a
/// second argument names another kernel (to profile one alone).
fn best_ns(name: &str, elems: usize, reps: usize, mut f: impl FnMut()) -> f64 {
    if std::env::args().nth(2).is_some_and(|only| only != name) {
        return f64::NAN;
    }
    let mut best = f64::INFINITY;
    for _ in 0..if std::env::var_os("MEM").is_some() { 9 } else { 200 } {
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        best = best.min(t.elapsed().as_secs_f64() / (reps * elems) as f64 * 1e9);
    }
    best
}

fn main() -> Result<(), normkit::Error> {
    // One thread: the kernels would otherwise split inputs this size over rayon.
    rayon::ThreadPoolBuilder::new().num_threads(1).build_global().ok();
    let n: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(4096);
    // About 256 KiB of x (at least 16 rows, so that the backward passes' blocks
    // of rows are as on large inputs): in L2 with y, dy and dx. With `MEM=1` in
    // the environment, 128 MiB instead: from memory, as `normkit bench` (but the
    // fastest of 200 calls rather than a median).
    let from_memory = std::env::var_os("MEM").is_some();
    let rows = if from_memory { (32 << 20) / n } else { (65536 / n).max(16) };
    let len = rows * n;
    // Allocated as `normkit bench` allocates (2 MiB pages for 4 MiB and more,
    // where the OS gives them): 4 KiB pages cost the wide-row backward a
    // tenth of its time from memory.
    let filled = |f: fn(usize) -> f32| {
        let mut v: Vec<f32> = normkit::ops::zeroed_buffer(len);
        v.iter_mut().enumerate().for_each(|(i, v)| *v = f(i));
        v
    };
    let x = filled(|i| ((i * 7919) % 1000) as f32 * 1e-3 + 3.0);
    let dy = filled(|i| ((i * 104729) % 997) as f32 * 1e-3 - 0.5);
    let (w, b) = (vec![1.5f32; n], vec![0.25f32; n]);
    let (mut y, mut mean, mut rstd) = (normkit::ops::zeroed_buffer(len), vec![0f32; rows], vec![0f32; rows]);
    let (mut dw, mut db) = (vec![0f32; n], vec![0f32; n]);
    let reps = (1 << 20) / len + 1;
    let place = if from_memory { "from memory" } else { "in cache" };
    println!("f32, {rows} rows of {n}, {place}, one thread: ns per element (best of 200 batches)");

    let ln_f = best_ns("ln_fwd", len, reps, || {
        let r = kernels::layer_norm_forward(&x, n, Affine::new(&w, &b), 1e-5, &mut y, &mut mean, &mut rstd);
        black_box(r).ok();
    });
    println!("layer_norm fwd  {ln_f:.3}");
    let rms_f = best_ns("rms_fwd", len, reps, || {
        let r = kernels::rms_norm_forward(&x, n, Some(&w), 1e-5, &mut y, &mut rstd);
        black_box(r).ok();
    });
    println!("rms_norm   fwd  {rms_f:.3}");
    kernels::layer_norm_forward(&x, n, Affine::new(&w, &b), 1e-5, &mut y, &mut mean, &mut rstd)?;
    let ln_b = best_ns("ln_bwd", len, reps, || {
        let g = Grads { dx: &mut y, dweight: Some(&mut dw), dbias: Some(&mut db) };
        black_box(kernels::layer_norm_backward(&dy, &x, n, &mean, &rstd, Some(&w), g)).ok();
    });
    println!("layer_norm bwd  {ln_b:.3}");
    let rms_b = best_ns("rms_bwd", len, reps, || {
        let r = kernels::rms_norm_backward(&dy, &x, n, &rstd, Some(&w), &mut y, Some(&mut dw));
        black_box(r).ok();
    });
    println!("rms_norm   bwd  {rms_b:.3}");
    // GroupNorm (32 groups) and BatchNorm training over [2, 64, h·w] with the
    // same number of elements, NCHW and channels-last.
    // `GN_SPATIAL=3136` in the environment: [len / (64·3136), 64, 3136], groups
    // of 2·3136 values as GroupNorm over [32,64,56,56] (GroupNorm only).
    let c = 64;
    let gn_spatial: usize = std::env::var("GN_SPATIAL").ok().and_then(|v| v.parse().ok()).unwrap_or(len / 128);
    let (batch, spatial) = ((len / (c * gn_spatial)).max(1), len / 128);
    let (wc, bc) = (vec![1.5f32; c], vec![0.25f32; c]);
    let layout = kernels::GroupLayout::new(batch, c, gn_spatial, 32)?;
    let (mut gm, mut gr) = (vec![0f32; 32 * batch], vec![0f32; 32 * batch]);
    let gn_f = best_ns("gn_fwd", len, reps, || {
        let (x, y) = (&x[..batch * c * gn_spatial], &mut y[..batch * c * gn_spatial]);
        let r = kernels::group_norm_forward(x, layout, Affine::new(&wc, &bc), 1e-5, y, &mut gm, &mut gr);
        black_box(r).ok();
    });
    println!("group_norm fwd  {gn_f:.3}");
    let (mut sm, mut sr) = (vec![0f32; c], vec![0f32; c]);
    let mut moments = vec![normkit::Moments::new(); c];
    for (name, layout) in [
        ("bn_train_fwd", kernels::ChannelLayout::of_shape(&[2, c, spatial], 1)?),
        ("bn_train_nhwc_fwd", kernels::ChannelLayout::of_shape(&[2, spatial, c], 2)?),
    ] {
        let t = best_ns(name, len, reps, || {
            let aff = Affine::new(&wc, &bc);
            let r = kernels::batch_norm_forward_train(&x, layout, aff, 1e-5, &mut y, &mut sm, &mut sr, &mut moments);
            black_box(r).ok();
        });
        println!("{name:<16}{t:.3}");
    }
    // BatchNorm's other passes, NCHW and channels-last: eval forward (the
    // elementwise pass alone), the backward sums, the training-mode dx.
    let (mean_c, rstd_c) = (vec![3.5f32; c], vec![2.0f32; c]);
    let (mut s, mut sx) = (vec![0f64; c], vec![0f64; c]);
    for (tag, layout) in [
        ("", kernels::ChannelLayout::of_shape(&[2, c, spatial], 1)?),
        ("_nhwc", kernels::ChannelLayout::of_shape(&[2, spatial, c], 2)?),
    ] {
        let t = best_ns(&format!("bn_eval{tag}"), len, reps, || {
            let r = kernels::batch_norm_forward_eval(&x, layout, &mean_c, &rstd_c, Affine::new(&wc, &bc), 1e-5, &mut y);
            black_box(r).ok();
        });
        println!("{:<16}{t:.3}", format!("bn_eval{tag}"));
        let t = best_ns(&format!("bn_stats{tag}"), len, reps, || {
            black_box(kernels::batch_norm_channel_moments(&x, layout, &mut moments)).ok();
        });
        println!("{:<16}{t:.3}", format!("bn_stats{tag}"));
        let t = best_ns(&format!("bn_sums{tag}"), len, reps, || {
            let r = kernels::batch_norm_backward_reduce(&dy, &x, layout, &mean_c, &rstd_c, &mut s, &mut sx);
            black_box(r).ok();
        });
        println!("{:<16}{t:.3}", format!("bn_sums{tag}"));
        let t = best_ns(&format!("bn_dx{tag}"), len, reps, || {
            let sums = Some((s.as_slice(), sx.as_slice()));
            let r = kernels::batch_norm_backward_dx(&dy, &x, layout, &mean_c, &rstd_c, Some(&wc), sums, &mut y);
            black_box(r).ok();
        });
        println!("{:<16}{t:.3}", format!("bn_dx{tag}"));
    }
    // The floor: `copy_from_slice` (memcpy: non-temporal stores from memory,
    // at sizes past the cache) moves the 8 bytes per element a forward pass
    // must; a backward pass moves 12.
    let copy = best_ns("copy", len, reps, || {
        y.copy_from_slice(&x);
        black_box(&mut y);
    });
    let gbps = 8.0 / copy;
    println!("copy            {copy:.3}  ({gbps:.1} GB/s; floor fwd {copy:.3}, bwd {:.3})", 1.5 * copy);
    Ok(())
}

//! How the time of a streaming kernel depends on where its call sits on the
//! stack and where its tensors sit in their pages: BatchNorm training forward
//! `[32,64,56,56]` (or, with `OP=ln`, LayerNorm forward `[8192,784]`), `f32`,
//! on one thread of a rayon pool (whose stack, unlike the main thread's, is at
//! the same place in every process), called 0 to 31 frames of 128 bytes
//! deeper (every `STEP`-th); the median of 24 calls over three rotating sets
//! of buffers per depth, in ms. `OFF=1024` starts the tensors 1 KiB further
//! into their pages.
//!
//! With the staging buffers unaligned, BatchNorm took 1.5x to 1.7x as long at
//! depths 5, 6, 13, 14, 22, 23, 30 and 31 as at the others; see
//! `simd::StagingBuffer` and "The per-process effect" in
//! `docs/performance-history.md`.
//!
//! Run: `cargo run --release -p normkit --example stack_probe`.

use normkit::kernels::{self, Affine, ChannelLayout};
use std::time::Instant;

/// Calls `f` `depth` frames of at least 128 bytes further down the stack.
#[inline(never)]
fn deeper(depth: usize, f: &mut dyn FnMut()) {
    let pad = [0u8; 128];
    std::hint::black_box(&pad);
    if depth == 0 {
        f()
    } else {
        deeper(depth - 1, f)
    }
    std::hint::black_box(&pad);
}

fn main() -> Result<(), normkit::Error> {
    let layout = ChannelLayout { outer: 32, channels: 64, inner: 56 * 56 };
    let len = layout.len()?;
    let off = std::env::var("OFF").ok().and_then(|v| v.parse::<usize>().ok()).unwrap_or(0) / 4;
    let sets = 3;
    let mut xs: Vec<Vec<f32>> = Vec::new();
    let mut ys: Vec<Vec<f32>> = Vec::new();
    for k in 0..sets {
        let mut x: Vec<f32> = normkit::ops::zeroed_buffer(len + 1024);
        x.iter_mut().enumerate().for_each(|(i, v)| *v = ((i * 7 + k) % 13) as f32 * 0.1);
        xs.push(x);
        ys.push(vec![1.0; len + 1024]);
    }
    let (w, b) = (vec![1.5f32; 64], vec![0.5f32; 64]);
    let (mut mean, mut rstd) = (vec![0.0f32; 64], vec![0.0f32; 64]);
    let mut moments = vec![normkit::Moments::new(); 64];
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a rayon pool");
    let ln = std::env::var("OP").is_ok_and(|v| v == "ln");
    let step = std::env::var("STEP").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    for depth in (0..32).step_by(step) {
        let mut times = Vec::new();
        for call in 0..8 * sets {
            let k = call % sets;
            let mut run = || {
                let (x, y) = (&xs[k][off..off + len], &mut ys[k][off..off + len]);
                let t0 = Instant::now();
                let r = if ln {
                    let (mut m, mut r) = (vec![0.0f32; len / 784], vec![0.0f32; len / 784]);
                    let (w, b) = (vec![1.5f32; 784], vec![0.5f32; 784]);
                    kernels::layer_norm_forward(x, 784, Affine::new(&w, &b), 1e-5, y, &mut m, &mut r)
                } else {
                    kernels::batch_norm_forward_train(
                        x,
                        layout,
                        Affine::new(&w, &b),
                        1e-5,
                        y,
                        &mut mean,
                        &mut rstd,
                        &mut moments,
                    )
                };
                times.push(t0.elapsed().as_secs_f64() * 1e3);
                r.expect("valid arguments");
            };
            pool.install(|| deeper(depth, &mut run));
        }
        times.sort_by(f64::total_cmp);
        print!("{depth}:{:.2} ", times[times.len() / 2]);
    }
    println!();
    Ok(())
}

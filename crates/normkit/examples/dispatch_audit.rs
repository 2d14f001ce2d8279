//! Calls every SIMD kernel once, for `f32` and `f64`, so that
//! `scripts/check_dispatch.sh` can inspect how they were compiled.
//!
//! A kernel's body runs inside a function compiled for the CPU's best
//! instruction set (`simd::vectorized`); anything the compiler leaves out of
//! line in that body (a closure called twice, say) is compiled for the
//! baseline instead, and its `mul_add`s become calls to libm's `fma`. That
//! happened once (GroupNorm backward, 5x slower). Such code shows up as a
//! symbol of a closure nested inside a kernel's closure, which the script
//! looks for in this binary's release build.
//!
//! Run: `cargo run --release -p normkit --example dispatch_audit`.

use normkit::kernels::{self, Affine, ChannelLayout, Grads, GroupLayout};
use normkit::{Float, Moments};

fn run<T: Float>() -> Result<(), normkit::Error> {
    let (rows, n) = (4, 96);
    let x: Vec<T> = (0..rows * n).map(|i| T::from_f64((i % 17) as f64 * 0.25)).collect();
    let ones = vec![T::from_f64(1.0); n];
    let (mut y, mut dx) = (vec![T::default(); x.len()], vec![T::default(); x.len()]);
    let (mut dw, mut db) = (vec![T::default(); n], vec![T::default(); n]);
    let (mut mean, mut rstd) = (vec![T::default(); rows], vec![T::default(); rows]);
    let affine = Affine::new(&ones, &ones);
    kernels::layer_norm_forward(&x, n, affine, 1e-5, &mut y, &mut mean, &mut rstd)?;
    let grads = Grads { dx: &mut dx, dweight: Some(&mut dw), dbias: Some(&mut db) };
    kernels::layer_norm_backward(&x, &x, n, &mean, &rstd, Some(&ones), grads)?;
    kernels::rms_norm_forward(&x, n, Some(&ones), 1e-5, &mut y, &mut rstd)?;
    kernels::rms_norm_backward(&x, &x, n, &rstd, Some(&ones), &mut dx, Some(&mut dw))?;

    // GroupNorm (2 samples, 8 channels of 24, 4 groups); InstanceNorm is its
    // one-channel-per-group case.
    let (channels, spatial) = (8, 24);
    let g = GroupLayout { batch: 2, channels, spatial, groups: 4 };
    let (mut gm, mut gr) = (vec![T::default(); 8], vec![T::default(); 8]);
    let cw = &ones[..channels];
    kernels::group_norm_forward(&x, g, Affine::new(cw, cw), 1e-5, &mut y, &mut gm, &mut gr)?;
    let grads = Grads { dx: &mut dx, dweight: Some(&mut dw[..channels]), dbias: Some(&mut db[..channels]) };
    kernels::group_norm_backward(&x, &x, g, &gm, &gr, Some(cw), grads)?;

    // BatchNorm over runs (NCHW) and over columns (channels-last).
    for layout in
        [ChannelLayout { outer: 2, channels, inner: spatial }, ChannelLayout { outer: 48, channels, inner: 1 }]
    {
        let (mut sm, mut sr) = (vec![T::default(); channels], vec![T::default(); channels]);
        let mut moments = vec![Moments::new(); channels];
        kernels::batch_norm_forward_train(
            &x,
            layout,
            Affine::new(cw, cw),
            1e-5,
            &mut y,
            &mut sm,
            &mut sr,
            &mut moments,
        )?;
        kernels::batch_norm_forward_eval(&x, layout, &sm, cw, Affine::new(cw, cw), 1e-5, &mut y)?;
        for training in [true, false] {
            let grads = Grads { dx: &mut dx, dweight: Some(&mut dw[..channels]), dbias: Some(&mut db[..channels]) };
            kernels::batch_norm_backward(&x, &x, layout, &sm, &sr, Some(cw), training, grads)?;
        }
        kernels::lp_normalize_forward(&x, layout, 2, 1e-12, &mut y)?;
        kernels::lp_normalize_backward(&x, &x, layout, 2, 1e-12, &mut dx)?;
    }
    std::hint::black_box((&y, &dx, &dw, &db));
    Ok(())
}

fn main() -> Result<(), normkit::Error> {
    run::<f32>()?;
    run::<f64>()?;
    println!("every kernel ran");
    Ok(())
}

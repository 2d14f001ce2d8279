//! The output cache (`ops::release_output_cache`): a dropped large output leaves
//! its buffer for the next op that needs one of that length, and every
//! allocating op overwrites such a reused buffer whole. One test function, so
//! that nothing else in this process touches the cache meanwhile.

use normkit::{ops, Tensor};

mod layers_support;
use layers_support::random_vec;

/// Runs `op` on fresh buffers, poisons its outputs with NaN and drops them, runs
/// it again, and checks that the second run reused every poisoned buffer and
/// still gave bitwise the same outputs.
fn reuses_poisoned_buffers(name: &str, op: impl Fn() -> Vec<Tensor<f32>>) {
    ops::release_output_cache();
    let fresh = op();
    let want: Vec<Vec<u32>> = fresh.iter().map(|t| t.data().iter().map(|v| v.to_bits()).collect()).collect();
    let mut poisoned = Vec::new();
    for mut t in fresh {
        t.data_mut().fill(f32::NAN);
        poisoned.push(t.data().as_ptr() as usize);
    }
    let again = op();
    for (k, (t, want)) in again.iter().zip(&want).enumerate() {
        assert!(poisoned.contains(&(t.data().as_ptr() as usize)), "{name}: output {k} did not reuse a cached buffer");
        let got: Vec<u32> = t.data().iter().map(|v| v.to_bits()).collect();
        assert!(got == *want, "{name}: output {k} differs after reusing a poisoned buffer");
    }
}

fn t32(shape: &[usize], seed: u64, offset: f64) -> Tensor<f32> {
    let n = shape.iter().product();
    Tensor::new(shape, random_vec(n, seed, offset, 1.0).iter().map(|&v| v as f32).collect()).unwrap()
}

#[test]
fn every_allocating_op_overwrites_a_reused_buffer_whole() {
    let seed = rand::random::<u32>() as u64;
    // 2^20 f32 values: 4 MiB, the smallest output the cache keeps.
    let (rows, n) = (1024, 1024);
    let nchw = [4, 16, 128, 128];
    let c = nchw[1];
    let (x, dy) = (t32(&[rows, n], seed, 3.0), t32(&[rows, n], seed + 1, 0.0));
    let (w, b) = (t32(&[n], seed + 2, 1.0), t32(&[n], seed + 3, 0.0));
    let (xc, dyc) = (t32(&nchw, seed + 4, -2.0), t32(&nchw, seed + 5, 0.0));
    let (wc, bc) = (t32(&[c], seed + 6, 1.0), t32(&[c], seed + 7, 0.0));
    let var = Tensor::new(&[c], vec![0.5f32; c]).unwrap();

    let ln = ops::layer_norm(x.view(), &[n], Some(w.view()), Some(b.view()), 1e-5).unwrap();
    reuses_poisoned_buffers("layer_norm", || {
        vec![ops::layer_norm(x.view(), &[n], Some(w.view()), Some(b.view()), 1e-5).unwrap().y]
    });
    reuses_poisoned_buffers("layer_norm_backward", || {
        let saved = (ln.mean.view(), ln.rstd.view());
        vec![ops::layer_norm_backward(dy.view(), x.view(), &[n], saved, Some(w.view()), true).unwrap().dx]
    });
    let rms = ops::rms_norm(x.view(), &[n], Some(w.view()), 1e-5).unwrap();
    reuses_poisoned_buffers("rms_norm", || vec![ops::rms_norm(x.view(), &[n], Some(w.view()), 1e-5).unwrap().y]);
    reuses_poisoned_buffers("rms_norm_backward", || {
        vec![ops::rms_norm_backward(dy.view(), x.view(), &[n], rms.rstd.view(), Some(w.view())).unwrap().dx]
    });
    // Channels first and channels last.
    let (nhwc, cl) = ([4, 128, 128, 16], -1);
    let (xl, dyl) = (t32(&nhwc, seed + 8, 1.0), t32(&nhwc, seed + 9, 0.0));
    for (x, dy, axis) in [(&xc, &dyc, 1), (&xl, &dyl, cl)] {
        let bn = ops::batch_norm_train(x.view(), axis, Some(wc.view()), Some(bc.view()), 1e-5).unwrap();
        reuses_poisoned_buffers("batch_norm_train", || {
            vec![ops::batch_norm_train(x.view(), axis, Some(wc.view()), Some(bc.view()), 1e-5).unwrap().y]
        });
        reuses_poisoned_buffers("batch_norm_backward", || {
            let (m, r) = (bn.save_mean.view(), bn.save_rstd.view());
            vec![ops::batch_norm_backward(dy.view(), x.view(), axis, m, r, Some(wc.view()), true).unwrap().dx]
        });
    }
    reuses_poisoned_buffers("batch_norm_eval", || {
        let (m, v) = (bc.view(), var.view());
        vec![ops::batch_norm_eval(xl.view(), cl, m, v, Some(wc.view()), Some(bc.view()), 1e-5).unwrap()]
    });
    reuses_poisoned_buffers("batch_norm_folded", || {
        vec![ops::batch_norm_folded(xc.view(), 1, wc.view(), bc.view()).unwrap()]
    });
    reuses_poisoned_buffers("batch_norm_eval_backward", || {
        let (m, v) = (bc.view(), var.view());
        vec![ops::batch_norm_eval_backward(dyc.view(), xc.view(), 1, m, v, Some(wc.view()), true, 1e-5).unwrap().dx]
    });
    let gn = ops::group_norm(xc.view(), 4, Some(wc.view()), Some(bc.view()), 1e-5).unwrap();
    reuses_poisoned_buffers("group_norm", || {
        vec![ops::group_norm(xc.view(), 4, Some(wc.view()), Some(bc.view()), 1e-5).unwrap().y]
    });
    reuses_poisoned_buffers("group_norm_backward", || {
        let saved = (gn.mean.view(), gn.rstd.view());
        vec![ops::group_norm_backward(dyc.view(), xc.view(), 4, saved, Some(wc.view()), true).unwrap().dx]
    });
    let inorm = ops::instance_norm(xc.view(), None, None, 1e-5).unwrap();
    reuses_poisoned_buffers("instance_norm", || vec![ops::instance_norm(xc.view(), None, None, 1e-5).unwrap().y]);
    reuses_poisoned_buffers("instance_norm_backward", || {
        let saved = (inorm.mean.view(), inorm.rstd.view());
        vec![ops::instance_norm_backward(dyc.view(), xc.view(), saved, None, false).unwrap().dx]
    });
    reuses_poisoned_buffers("lp_normalize", || vec![ops::lp_normalize(x.view(), 2, -1, 1e-12).unwrap()]);
    reuses_poisoned_buffers("lp_normalize_backward", || {
        vec![ops::lp_normalize_backward(dy.view(), x.view(), 1, -1, 1e-12).unwrap()]
    });

    // Each call's dropped output serves the next call. (Whether
    // `release_output_cache` frees is checked by the cache's unit test: the
    // allocator may hand a freed address straight back, so it cannot be told
    // from here.)
    ops::release_output_cache();
    let ptrs: Vec<usize> =
        (0..3).map(|_| ops::rms_norm(x.view(), &[n], None, 1e-5).unwrap().y.data().as_ptr() as usize).collect();
    assert!(ptrs.iter().all(|&p| p == ptrs[0]), "dropped outputs are reused: {ptrs:?}");
}

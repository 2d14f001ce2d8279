//! Gradients of normkit-candle's ops: against central finite differences (f64)
//! and against candle's composed implementation (same function, candle's
//! autograd), on random inputs with fresh seeds.

use candle_core::{DType, Device, Result, Tensor, Var};
use normkit_candle::ops;
use rand::{Rng, SeedableRng};

fn rng() -> rand::rngs::StdRng {
    // A failure prints its seed; `NORMKIT_TEST_SEED=<seed>` reruns it.
    let seed: u64 = match std::env::var("NORMKIT_TEST_SEED") {
        Ok(s) => s.parse().expect("NORMKIT_TEST_SEED must be an unsigned integer"),
        Err(_) => rand::rng().random(),
    };
    eprintln!("seed {seed}");
    rand::rngs::StdRng::seed_from_u64(seed)
}

fn randn(rng: &mut impl Rng, dims: &[usize], scale: f64, offset: f64) -> Result<Tensor> {
    let n: usize = dims.iter().product();
    let v: Vec<f64> = (0..n).map(|_| offset + scale * (rng.random::<f64>() * 2.0 - 1.0)).collect();
    Tensor::from_vec(v, dims, &Device::Cpu)
}

fn values(t: &Tensor) -> Result<Vec<f64>> {
    t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()
}

fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs() / (1.0 + w.abs());
        assert!(err <= tol, "{what}[{i}]: got {g}, want {w} (error {err:e} > {tol:e})");
    }
}

/// `f(inputs)` for a scalar loss `Σ f(x) · r` and its gradient by the op's backward.
type Op = dyn Fn(&[Tensor]) -> Result<Tensor>;

/// Checks the backward of `f` with respect to every input against central finite
/// differences of `L = Σ f(inputs) · r`, in f64.
fn check_finite_differences(name: &str, f: &Op, inputs: &[Tensor], rng: &mut impl Rng) -> Result<()> {
    let vars: Vec<Var> = inputs.iter().map(Var::from_tensor).collect::<Result<_>>()?;
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&tensors)?;
    let r = randn(rng, y.dims(), 1.0, 0.0)?;
    let loss = |ts: &[Tensor]| -> Result<f64> { (f(ts)? * &r)?.sum_all()?.to_scalar::<f64>() };
    let grads = (&y * &r)?.sum_all()?.backward()?;
    let h = 1e-6;
    for (k, t) in tensors.iter().enumerate() {
        let Some(g) = grads.get(t) else { panic!("{name}: no gradient for input {k}") };
        let g = values(g)?;
        let base = values(t)?;
        let mut numeric = Vec::with_capacity(base.len());
        for i in 0..base.len() {
            let at = |d: f64| -> Result<f64> {
                let mut v = base.clone();
                v[i] += d;
                let mut ts = tensors.iter().map(|t| t.detach()).collect::<Vec<_>>();
                ts[k] = Tensor::from_vec(v, t.dims(), &Device::Cpu)?;
                loss(&ts)
            };
            numeric.push((at(h)? - at(-h)?) / (2.0 * h));
        }
        assert_close(&format!("{name} d(input {k})"), &g, &numeric, 1e-6);
    }
    Ok(())
}

/// Checks forward values and gradients of `fast` (kernel path) against `slow`
/// (candle's composed ops) in dtype `dtype`.
fn check_against_composed(name: &str, fast: &Op, slow: &Op, inputs: &[Tensor], dtype: DType, tol: f64) -> Result<()> {
    let inputs: Vec<Tensor> = inputs.iter().map(|t| t.to_dtype(dtype)).collect::<Result<_>>()?;
    let mut rng = rng();
    let mut outs = Vec::new();
    for f in [fast, slow] {
        let vars: Vec<Var> = inputs.iter().map(Var::from_tensor).collect::<Result<_>>()?;
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let y = f(&ts)?;
        outs.push((y, ts));
    }
    let r = randn(&mut rng, outs[0].0.dims(), 1.0, 0.0)?.to_dtype(dtype)?;
    let mut results = Vec::new();
    for (y, ts) in &outs {
        let grads = (y * &r)?.sum_all()?.backward()?;
        let mut gs = vec![values(y)?];
        for (k, t) in ts.iter().enumerate() {
            let Some(g) = grads.get(t) else { panic!("{name}: no gradient for input {k}") };
            gs.push(values(g)?);
        }
        results.push(gs);
    }
    for (k, (got, want)) in results[0].iter().zip(&results[1]).enumerate() {
        let what = if k == 0 { "y".to_string() } else { format!("d(input {})", k - 1) };
        assert_close(&format!("{name} {dtype:?} {what}"), got, want, tol);
    }
    Ok(())
}

fn ln(ts: &[Tensor]) -> Result<Tensor> {
    ops::layer_norm(&ts[0], Some(&ts[1]), Some(&ts[2]), 1e-5)
}
fn ln_composed(ts: &[Tensor]) -> Result<Tensor> {
    ops::layer_norm_composed(&ts[0], Some(&ts[1]), Some(&ts[2]), 1e-5)
}
fn rms(ts: &[Tensor]) -> Result<Tensor> {
    ops::rms_norm(&ts[0], Some(&ts[1]), 1e-6)
}
fn rms_composed(ts: &[Tensor]) -> Result<Tensor> {
    ops::rms_norm_composed(&ts[0], Some(&ts[1]), 1e-6)
}
/// RMSNorm over the last axis of a 3-d input, weight of the channel axis unused.
fn rms3(ts: &[Tensor]) -> Result<Tensor> {
    ops::rms_norm(&ts[0], None, 1e-6)
}
fn bn(ts: &[Tensor]) -> Result<Tensor> {
    Ok(ops::batch_norm_train(&ts[0], Some(&ts[1]), Some(&ts[2]), 1e-5)?.0)
}
fn bn_composed(ts: &[Tensor]) -> Result<Tensor> {
    Ok(ops::batch_norm_train_composed(&ts[0], Some(&ts[1]), Some(&ts[2]), 1e-5)?.0)
}
/// Eval mode with fixed running statistics (the 4th and 5th inputs are taken as
/// constants: their gradient is not checked, they receive none).
fn bn_eval(ts: &[Tensor]) -> Result<Tensor> {
    let c = ts[0].dims()[1];
    let (rm, rv) = running_stats(c, ts[0].dtype())?;
    ops::batch_norm_eval(&ts[0], &rm, &rv, Some(&ts[1]), Some(&ts[2]), 1e-5)
}
fn bn_eval_composed(ts: &[Tensor]) -> Result<Tensor> {
    let c = ts[0].dims()[1];
    let (rm, rv) = running_stats(c, ts[0].dtype())?;
    ops::batch_norm_eval_composed(&ts[0], &rm, &rv, Some(&ts[1]), Some(&ts[2]), 1e-5)
}
/// Eval-mode BatchNorm written from the formula `(x - rm) / sqrt(rv + eps) · w + b`.
fn bn_eval_reference(ts: &[Tensor]) -> Result<Tensor> {
    let (x, w, b) = (&ts[0], &ts[1], &ts[2]);
    let c = x.dims()[1];
    let (rm, rv) = running_stats(c, x.dtype())?;
    let mut shape = vec![1; x.rank()];
    shape[1] = c;
    let s = shape.as_slice();
    let y = x.broadcast_sub(&rm.reshape(s)?)?.broadcast_div(&(rv + 1e-5)?.sqrt()?.reshape(s)?)?;
    y.broadcast_mul(&w.reshape(s)?)?.broadcast_add(&b.reshape(s)?)
}
/// Fixed running statistics for `c` channels: means in [-1, 1], variances in [0.5, 2.5].
fn running_stats(c: usize, dtype: DType) -> Result<(Tensor, Tensor)> {
    let rm: Vec<f64> = (0..c).map(|i| ((i * 7 % 11) as f64 / 5.0) - 1.0).collect();
    let rv: Vec<f64> = (0..c).map(|i| 0.5 + (i * 3 % 5) as f64 / 2.0).collect();
    let dev = &Device::Cpu;
    Ok((Tensor::new(rm, dev)?.to_dtype(dtype)?, Tensor::new(rv, dev)?.to_dtype(dtype)?))
}
fn gn(ts: &[Tensor]) -> Result<Tensor> {
    ops::group_norm(&ts[0], 2, Some(&ts[1]), Some(&ts[2]), 1e-5)
}
fn gn_composed(ts: &[Tensor]) -> Result<Tensor> {
    ops::group_norm_composed(&ts[0], 2, Some(&ts[1]), Some(&ts[2]), 1e-5)
}
fn inorm(ts: &[Tensor]) -> Result<Tensor> {
    ops::instance_norm(&ts[0], Some(&ts[1]), Some(&ts[2]), 1e-5)
}
fn inorm_composed(ts: &[Tensor]) -> Result<Tensor> {
    ops::instance_norm_composed(&ts[0], Some(&ts[1]), Some(&ts[2]), 1e-5)
}

/// BatchNorm composed of candle ops, written from the formula.
fn bn_reference(ts: &[Tensor]) -> Result<Tensor> {
    let (x, w, b) = (&ts[0], &ts[1], &ts[2]);
    let mut shape = vec![1; x.rank()];
    shape[1] = x.dims()[1];
    let mut axes: Vec<usize> = (0..x.rank()).collect();
    axes.remove(1);
    let mean = x.mean_keepdim(axes.as_slice())?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(axes.as_slice())?;
    let y = xc.broadcast_div(&(var + 1e-5)?.sqrt()?)?;
    y.broadcast_mul(&w.reshape(shape.as_slice())?)?.broadcast_add(&b.reshape(shape.as_slice())?)
}

#[test]
fn layer_norm_and_rms_norm_match_finite_differences() -> Result<()> {
    let mut rng = rng();
    for &(rows, n) in &[(1, 1), (3, 5), (4, 7), (2, 13)] {
        let x = randn(&mut rng, &[rows, n], 2.0, 0.5)?;
        let w = randn(&mut rng, &[n], 1.0, 1.0)?;
        let b = randn(&mut rng, &[n], 1.0, 0.0)?;
        check_finite_differences("layer_norm", &ln, &[x.clone(), w.clone(), b], &mut rng)?;
        check_finite_differences("rms_norm", &rms, &[x, w], &mut rng)?;
    }
    // A 3-d input normalizes its last dimension.
    let x = randn(&mut rng, &[2, 3, 4], 1.0, -3.0)?;
    let w = randn(&mut rng, &[4], 1.0, 1.0)?;
    let b = randn(&mut rng, &[4], 1.0, 0.0)?;
    check_finite_differences("layer_norm 3-d", &ln, &[x, w, b], &mut rng)
}

#[test]
fn channel_norms_match_finite_differences() -> Result<()> {
    let mut rng = rng();
    for dims in [&[5, 3][..], &[3, 4, 5], &[2, 4, 3, 2]] {
        let c = dims[1];
        let x = randn(&mut rng, dims, 2.0, 1.0)?;
        let w = randn(&mut rng, &[c], 1.0, 1.0)?;
        let b = randn(&mut rng, &[c], 1.0, 0.0)?;
        check_finite_differences("batch_norm", &bn, &[x.clone(), w.clone(), b.clone()], &mut rng)?;
        check_finite_differences("batch_norm eval", &bn_eval, &[x.clone(), w.clone(), b.clone()], &mut rng)?;
        if dims.len() > 2 {
            check_finite_differences("group_norm", &gn, &[x.clone(), w.clone(), b.clone()], &mut rng)?;
            check_finite_differences("instance_norm", &inorm, &[x, w, b], &mut rng)?;
        }
    }
    Ok(())
}

/// The composed paths (what other devices and dtypes run) have correct
/// gradients too: their backward is candle's autograd, checked here in f64.
#[test]
fn composed_fallbacks_match_finite_differences() -> Result<()> {
    let mut rng = rng();
    let x = randn(&mut rng, &[3, 7], 2.0, 0.5)?;
    let w = randn(&mut rng, &[7], 1.0, 1.0)?;
    let b = randn(&mut rng, &[7], 1.0, 0.0)?;
    check_finite_differences("layer_norm_composed", &ln_composed, &[x.clone(), w.clone(), b], &mut rng)?;
    check_finite_differences("rms_norm_composed", &rms_composed, &[x, w], &mut rng)?;
    let x = randn(&mut rng, &[3, 4, 5], 2.0, 1.0)?;
    let w = randn(&mut rng, &[4], 1.0, 1.0)?;
    let b = randn(&mut rng, &[4], 1.0, 0.0)?;
    check_finite_differences("batch_norm_train_composed", &bn_composed, &[x.clone(), w.clone(), b.clone()], &mut rng)?;
    check_finite_differences("group_norm_composed", &gn_composed, &[x.clone(), w.clone(), b.clone()], &mut rng)?;
    check_finite_differences(
        "batch_norm_eval_composed",
        &bn_eval_composed,
        &[x.clone(), w.clone(), b.clone()],
        &mut rng,
    )?;
    check_finite_differences("instance_norm_composed", &inorm_composed, &[x, w, b], &mut rng)
}

#[test]
fn kernel_path_matches_candle_composed_ops() -> Result<()> {
    let mut rng = rng();
    for &(dtype, tol) in &[(DType::F64, 1e-12), (DType::F32, 2e-5)] {
        let x = randn(&mut rng, &[6, 31], 3.0, 2.0)?;
        let w = randn(&mut rng, &[31], 1.0, 1.0)?;
        let b = randn(&mut rng, &[31], 1.0, 0.0)?;
        check_against_composed("layer_norm", &ln, &ln_composed, &[x.clone(), w.clone(), b], dtype, tol)?;
        check_against_composed("rms_norm", &rms, &rms_composed, &[x, w], dtype, tol)?;

        let x = randn(&mut rng, &[7, 4, 3, 3], 2.0, -1.0)?;
        let w = randn(&mut rng, &[4], 1.0, 1.0)?;
        let b = randn(&mut rng, &[4], 1.0, 0.0)?;
        check_against_composed("group_norm", &gn, &gn_composed, &[x.clone(), w.clone(), b.clone()], dtype, tol)?;
        check_against_composed("batch_norm", &bn, &bn_reference, &[x.clone(), w.clone(), b.clone()], dtype, tol)?;
        check_against_composed("batch_norm", &bn, &bn_composed, &[x.clone(), w.clone(), b.clone()], dtype, tol)?;
        check_against_composed(
            "batch_norm eval",
            &bn_eval,
            &bn_eval_reference,
            &[x.clone(), w.clone(), b.clone()],
            dtype,
            tol,
        )?;
        check_against_composed(
            "batch_norm eval composed",
            &bn_eval,
            &bn_eval_composed,
            &[x.clone(), w.clone(), b.clone()],
            dtype,
            tol,
        )?;
        check_against_composed("instance_norm", &inorm, &inorm_composed, &[x.clone(), w, b], dtype, tol)?;

        // The batch statistics BatchNorm returns for its running statistics.
        let xd = x.to_dtype(dtype)?;
        let (_, fast) = ops::batch_norm_train(&xd, None, None, 1e-5)?;
        let (_, slow) = ops::batch_norm_train_composed(&xd, None, None, 1e-5)?;
        assert_eq!((fast.count, slow.count), (7 * 9, 7 * 9));
        assert_close(&format!("batch mean {dtype:?}"), &values(&fast.mean)?, &values(&slow.mean)?, tol);
        assert_close(&format!("batch var {dtype:?}"), &values(&fast.var)?, &values(&slow.var)?, tol);
    }
    Ok(())
}

#[test]
fn non_contiguous_inputs_are_handled() -> Result<()> {
    let mut rng = rng();
    let x = randn(&mut rng, &[5, 6], 1.0, 0.0)?;
    let xt = x.t()?; // [6, 5], strided
    let want = ops::layer_norm_composed(&xt, None, None, 1e-5)?;
    let got = ops::layer_norm(&xt, None, None, 1e-5)?;
    assert_close("layer_norm of a transposed input", &values(&got)?, &values(&want)?, 1e-12);
    // An input that starts at an offset in its storage.
    let tail = x.narrow(0, 2, 3)?;
    let want = ops::rms_norm_composed(&tail, None, 1e-6)?;
    let got = ops::rms_norm(&tail, None, 1e-6)?;
    assert_close("rms_norm of a narrowed input", &values(&got)?, &values(&want)?, 1e-12);
    Ok(())
}

#[test]
fn other_dtypes_fall_back_to_composed_ops_with_a_gradient() -> Result<()> {
    let mut rng = rng();
    let x = Var::from_tensor(&randn(&mut rng, &[3, 8], 1.0, 0.0)?.to_dtype(DType::BF16)?)?;
    let w = Var::from_tensor(&Tensor::ones(8, DType::BF16, &Device::Cpu)?)?;
    let b = Var::from_tensor(&Tensor::zeros(8, DType::BF16, &Device::Cpu)?)?;
    let y = ops::layer_norm(x.as_tensor(), Some(w.as_tensor()), Some(b.as_tensor()), 1e-5)?;
    let grads = y.to_dtype(DType::F32)?.sqr()?.sum_all()?.backward()?;
    for (name, t) in [("x", &x), ("weight", &w), ("bias", &b)] {
        assert!(grads.get(t.as_tensor()).is_some(), "bf16 layer_norm: no gradient for {name}");
    }
    // BatchNorm, GroupNorm, InstanceNorm and RMSNorm in bf16: a gradient, close to
    // the f64 kernel's on the same (bf16) inputs. What remains is the rounding of
    // `g = r · w` to bf16 in the backward (and of `dx` itself); `dx` is linear in
    // `g` with coefficients of size `rstd · |x̂|²`, so its error is bounded by a few
    // bf16 roundings of `rstd · max |g|` over the element's group. That scale is
    // large when a group's values are close together (three values within 0.1 of
    // each other make `rstd` about 25), which is why it is computed, not assumed.
    let [x64, w64, b64] =
        [randn(&mut rng, &[6, 4, 3], 1.0, 0.0)?, randn(&mut rng, &[4], 0.5, 1.0)?, randn(&mut rng, &[4], 0.5, 0.0)?]
            .map(|t| t.to_dtype(DType::BF16)?.to_dtype(DType::F64));
    let (x64, w64, b64) = (x64?, w64?, b64?);
    let fns: [(&str, &Op); 4] =
        [("batch_norm", &bn), ("group_norm", &gn), ("instance_norm", &inorm), ("rms_norm", &rms3)];
    let r = randn(&mut rng, &[6, 4, 3], 1.0, 0.0)?.to_dtype(DType::BF16)?.to_dtype(DType::F32)?;
    for (name, f) in fns {
        let grad_of = |dtype: DType| -> Result<Vec<f64>> {
            let x = Var::from_tensor(&x64.to_dtype(dtype)?)?;
            let ts = [x.as_tensor().clone(), w64.to_dtype(dtype)?, b64.to_dtype(dtype)?];
            let y = f(&ts)?.to_dtype(DType::F32)?;
            let grads = (y * &r)?.sum_all()?.backward()?;
            let Some(g) = grads.get(x.as_tensor()) else { panic!("bf16 {name}: no gradient for x") };
            values(g)
        };
        let (got, want) = (grad_of(DType::BF16)?, grad_of(DType::F64)?);
        let scales = group_scales(name, &values(&x64)?, &values(&w64)?, &values(&r)?);
        let u = 2f64.powi(-8); // bf16's unit roundoff
        for (i, ((g, w), s)) in got.iter().zip(&want).zip(&scales).enumerate() {
            let bound = 16.0 * u * s + u * w.abs();
            assert!((g - w).abs() <= bound, "bf16 {name} dx[{i}]: got {g}, want {w} (bound {bound:e})");
        }
    }
    Ok(())
}

/// For each element of `x: [6, 4, 3]`, `rstd · max |g|` over the values normalized
/// together with it (`g = r · weight_c`; RMSNorm has no weight here), the scale of
/// the rounding error in its bf16 gradient (see the test above).
fn group_scales(name: &str, x: &[f64], w: &[f64], r: &[f64]) -> Vec<f64> {
    let group = |i: usize| -> usize {
        let (n, c) = (i / 12, i / 3 % 4);
        match name {
            "batch_norm" => c,
            "group_norm" => n * 2 + c / 2, // 2 groups of 2 channels
            _ => n * 4 + c,                // instance_norm and rms_norm: rows of 3
        }
    };
    let members = |k: usize| (0..x.len()).filter(move |&j| group(j) == k);
    (0..x.len())
        .map(|i| {
            let k = group(i);
            let len = members(k).count() as f64;
            let mean = if name == "rms_norm" { 0.0 } else { members(k).map(|j| x[j]).sum::<f64>() / len };
            let var = members(k).map(|j| (x[j] - mean).powi(2)).sum::<f64>() / len;
            let eps = if name == "rms_norm" { 1e-6 } else { 1e-5 };
            let weight = |j: usize| if name == "rms_norm" { 1.0 } else { w[j / 3 % 4] };
            let max_g = members(k).map(|j| (r[j] * weight(j)).abs()).fold(0.0, f64::max);
            max_g / (var + eps).sqrt()
        })
        .collect()
}

#[test]
fn bad_arguments_are_errors() -> Result<()> {
    let x = Tensor::zeros((2, 3), DType::F32, &Device::Cpu)?;
    let w4 = Tensor::ones(4, DType::F32, &Device::Cpu)?;
    let w3_f64 = Tensor::ones(3, DType::F64, &Device::Cpu)?;
    assert!(ops::layer_norm(&x, Some(&w4), None, 1e-5).is_err());
    assert!(ops::layer_norm(&x, Some(&w3_f64), None, 1e-5).is_err());
    assert!(ops::layer_norm(&x, None, None, -1.0).is_err());
    assert!(ops::rms_norm(&x, Some(&w4), 1e-5).is_err());
    let img = Tensor::zeros((2, 3, 4), DType::F32, &Device::Cpu)?;
    assert!(ops::group_norm(&img, 2, None, None, 1e-5).is_err());
    assert!(ops::group_norm(&img, 0, None, None, 1e-5).is_err());
    assert!(ops::instance_norm(&x, None, None, 1e-5).is_err());
    let empty = Tensor::zeros((2, 0), DType::F32, &Device::Cpu)?;
    assert!(ops::layer_norm(&empty, None, None, 1e-5).is_err());
    // BatchNorm refuses a bad eps on the kernel path, the composed path and in
    // eval mode alike (eval used to return NaN for a negative one), and a
    // parameter of the wrong length; the instance and group checks hold on the
    // composed paths too.
    let (rm, rv, w2) = (
        Tensor::zeros(3, DType::F32, &Device::Cpu)?,
        Tensor::ones(3, DType::F32, &Device::Cpu)?,
        Tensor::ones(2, DType::F32, &Device::Cpu)?,
    );
    for eps in [-1.0, f64::NAN, f64::INFINITY] {
        assert!(ops::batch_norm_train(&img, None, None, eps).is_err(), "train, eps {eps}");
        assert!(ops::batch_norm_train_composed(&img, None, None, eps).is_err(), "composed, eps {eps}");
        assert!(ops::batch_norm_eval(&img, &rm, &rv, None, None, eps).is_err(), "eval, eps {eps}");
    }
    assert!(ops::batch_norm_train(&img, Some(&w2), None, 1e-5).is_err());
    assert!(ops::batch_norm_train_composed(&img, None, Some(&w2), 1e-5).is_err());
    assert!(ops::batch_norm_eval(&img, &w2, &rv, None, None, 1e-5).is_err());
    assert!(ops::group_norm_composed(&img, 2, None, None, 1e-5).is_err());
    assert!(ops::instance_norm_composed(&x, None, None, 1e-5).is_err());
    assert!(ops::instance_norm_composed(&img, Some(&w2), None, 1e-5).is_err());
    // A BatchNorm module given an input of another dtype than its statistics
    // says so (it was candle's bare "dtype mismatch in add").
    let bn = normkit_candle::BatchNorm::new(3, rm.clone(), rv.clone(), None, 1e-5, 0.1)?;
    for train in [true, false] {
        let Err(err) = candle_nn::ModuleT::forward_t(&bn, &img.to_dtype(DType::F64)?, train) else {
            panic!("an f64 input to an f32 BatchNorm was accepted")
        };
        assert!(err.to_string().contains("input has dtype F64 but the module's statistics are F32"), "{err}");
    }
    Ok(())
}

/// Eval-mode BatchNorm subtracts the running mean before it scales, on the
/// kernel path and the composed one: the folded form `x · scale + shift` it
/// used lost `|x| · scale` to rounding (f32, mean 500, variance 0.01: errors of
/// 3e-4 on outputs of 3.5; f16, mean 1000, variance 1e-4: the shift overflowed
/// and every output was NaN). Found by an outside review.
#[test]
fn batch_norm_eval_is_accurate_far_from_zero() -> Result<()> {
    let dev = &Device::Cpu;
    // (dtype, running mean, running variance, x - mean, unit roundoff of dtype)
    let cases = [
        (DType::F32, 500.0, 0.01, 0.1, 2f64.powi(-24)),
        (DType::F64, 500.0, 0.01, 0.1, 2f64.powi(-53)),
        (DType::F16, 1000.0, 1e-4, 0.5, 2f64.powi(-11)),
        (DType::BF16, 1000.0, 1e-4, 4.0, 2f64.powi(-8)),
    ];
    for (dtype, mean, var, step, u) in cases {
        let xs: Vec<f64> = (0..8).map(|k| mean + step * (k as f64 - 3.5)).collect();
        let x = Tensor::from_vec(xs, (8, 1), dev)?.to_dtype(dtype)?;
        let (rm, rv) = (Tensor::new(&[mean], dev)?.to_dtype(dtype)?, Tensor::new(&[var], dev)?.to_dtype(dtype)?);
        // The exact result for the inputs and statistics as rounded to `dtype`.
        let (m, v) = (values(&rm)?[0], values(&rv)?[0]);
        let want: Vec<f64> = values(&x)?.iter().map(|x| (x - m) / (v + 1e-5).sqrt()).collect();
        let paths: [(&str, &Op); 2] = [
            ("batch_norm_eval", &|ts: &[Tensor]| ops::batch_norm_eval(&ts[0], &ts[1], &ts[2], None, None, 1e-5)),
            ("batch_norm_eval_composed", &|ts: &[Tensor]| {
                ops::batch_norm_eval_composed(&ts[0], &ts[1], &ts[2], None, None, 1e-5)
            }),
        ];
        for (name, f) in paths {
            let got = values(&f(&[x.clone(), rm.clone(), rv.clone()])?)?;
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                // A few roundings of the result (rstd, the product, the output).
                let bound = 4.0 * u * w.abs() + 1e-300;
                assert!((g - w).abs() <= bound, "{name} {dtype:?} y[{i}]: got {g}, want {w} (bound {bound:e})");
            }
        }
    }
    Ok(())
}

/// The composed paths of half-precision inputs apply the weight and bias in
/// `f32` too, so candle's sums of their gradients over the batch run in `f32`:
/// in bf16 they summed 4096 ones to 256. Found by an outside review.
#[test]
fn half_precision_parameter_gradients_are_summed_in_f32() -> Result<()> {
    let dev = &Device::Cpu;
    for dtype in [DType::BF16, DType::F16] {
        let mut rng = rng();
        let vars = |c: usize| -> Result<(Var, Var)> { Ok((Var::ones(c, dtype, dev)?, Var::zeros(c, dtype, dev)?)) };
        // LayerNorm over rows of 8, BatchNorm over 3 channels, GroupNorm over 2
        // groups, InstanceNorm: `L = Σ y`, so `dbias` is the count of values
        // each bias entry is added to (exact in both dtypes).
        let cases: [(&str, Vec<usize>, usize, f64); 4] = [
            ("layer_norm", vec![4096, 8], 8, 4096.0),
            ("batch_norm", vec![2048, 3], 3, 2048.0),
            ("group_norm", vec![512, 4, 4], 4, 2048.0),
            ("instance_norm", vec![512, 4, 4], 4, 2048.0),
        ];
        for (name, dims, c, count) in cases {
            let x = randn(&mut rng, &dims, 1.0, 0.0)?.to_dtype(dtype)?;
            let (w, b) = vars(c)?;
            let (wt, bt) = (Some(w.as_tensor()), Some(b.as_tensor()));
            let y = match name {
                "layer_norm" => ops::layer_norm(&x, wt, bt, 1e-5)?,
                "batch_norm" => ops::batch_norm_train(&x, wt, bt, 1e-5)?.0,
                "group_norm" => ops::group_norm(&x, 2, wt, bt, 1e-5)?,
                _ => ops::instance_norm(&x, wt, bt, 1e-5)?,
            };
            let grads = y.to_dtype(DType::F32)?.sum_all()?.backward()?;
            let Some(db) = grads.get(b.as_tensor()) else { panic!("{name} {dtype:?}: no gradient for bias") };
            for (i, g) in values(db)?.iter().enumerate() {
                assert_eq!(*g, count, "{name} {dtype:?} dbias[{i}]");
            }
        }
    }
    Ok(())
}

/// Inputs that are not floating-point, and inputs that PyTorch and normkit's
/// core refuse (InstanceNorm over one spatial value, BatchNorm training over
/// one value per channel), are errors on every path: integer inputs panicked in
/// candle's `sqrt`, and the others returned zeros. Found by an outside review.
#[test]
fn inputs_the_ops_cannot_normalize_are_errors() -> Result<()> {
    let dev = &Device::Cpu;
    for dtype in [DType::I64, DType::U32, DType::U8] {
        let x = Tensor::zeros((2, 3, 4), dtype, dev)?;
        let (rm, rv) = (Tensor::zeros(3, dtype, dev)?, Tensor::ones(3, dtype, dev)?);
        let results = [
            ("layer_norm", ops::layer_norm(&x, None, None, 1e-5).err()),
            ("layer_norm_composed", ops::layer_norm_composed(&x, None, None, 1e-5).err()),
            ("rms_norm", ops::rms_norm(&x, None, 1e-5).err()),
            ("rms_norm_composed", ops::rms_norm_composed(&x, None, 1e-5).err()),
            ("batch_norm_train", ops::batch_norm_train(&x, None, None, 1e-5).err()),
            ("batch_norm_eval", ops::batch_norm_eval(&x, &rm, &rv, None, None, 1e-5).err()),
            ("group_norm", ops::group_norm(&x, 3, None, None, 1e-5).err()),
            ("instance_norm", ops::instance_norm(&x, None, None, 1e-5).err()),
        ];
        for (name, err) in results {
            let Some(err) = err else { panic!("{name} accepted a {dtype:?} input") };
            assert!(err.to_string().contains("needs f16, bf16, f32 or f64"), "{name} {dtype:?}: {err}");
        }
    }
    for dtype in [DType::F32, DType::BF16] {
        let one_spatial = Tensor::zeros((2, 3, 1), dtype, dev)?;
        assert!(ops::instance_norm(&one_spatial, None, None, 1e-5).is_err(), "{dtype:?}");
        assert!(ops::instance_norm_composed(&one_spatial, None, None, 1e-5).is_err(), "{dtype:?}");
        let one_per_channel = Tensor::zeros((1, 3), dtype, dev)?;
        assert!(ops::batch_norm_train(&one_per_channel, None, None, 1e-5).is_err(), "{dtype:?}");
        assert!(ops::batch_norm_train_composed(&one_per_channel, None, None, 1e-5).is_err(), "{dtype:?}");
        // The module refuses it too, its running statistics unchanged.
        let (rm, rv) = (Tensor::zeros(3, dtype, dev)?, Tensor::ones(3, dtype, dev)?);
        let bn = normkit_candle::BatchNorm::new(3, rm, rv, None, 1e-5, 0.1)?;
        let Err(err) = bn.forward_train(&one_per_channel) else { panic!("{dtype:?}: the module trained on [1, 3]") };
        assert!(err.to_string().contains("more than 1 value per channel"), "{err}");
        assert_eq!(values(bn.running_var())?, [1.0; 3]);
    }
    Ok(())
}

/// The eval op reshapes to `[N, C, S]` for normkit's kernel, so inputs of any
/// rank (normkit's BatchNorm takes 2 to 5) give the composed path's result.
#[test]
fn batch_norm_eval_takes_any_rank() -> Result<()> {
    let mut rng = rng();
    let x = randn(&mut rng, &[2, 3, 2, 1, 2, 2, 2], 2.0, 1.0)?;
    let (rm, rv) = running_stats(3, DType::F64)?;
    let w = randn(&mut rng, &[3], 1.0, 1.0)?;
    let got = ops::batch_norm_eval(&x, &rm, &rv, Some(&w), None, 1e-5)?;
    let want = ops::batch_norm_eval_composed(&x, &rm, &rv, Some(&w), None, 1e-5)?;
    assert_eq!(got.dims(), x.dims());
    assert_close("batch_norm_eval rank 7", &values(&got)?, &values(&want)?, 1e-14);
    Ok(())
}

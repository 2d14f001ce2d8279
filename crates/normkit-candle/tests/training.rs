//! normkit-candle's modules inside real candle training loops: no parameter is
//! cut off from the gradient, and BatchNorm's running statistics (kept in the
//! `VarMap`) follow normkit's own `BatchNorm` module step for step and survive a
//! safetensors round trip.

use candle_core::{DType, Device, Module, ModuleT, Result, Tensor, Var};
use candle_nn::{Optimizer, VarBuilder, VarMap, SGD};
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

fn randn(rng: &mut impl Rng, dims: &[usize], dtype: DType) -> Result<Tensor> {
    let n: usize = dims.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.random::<f64>() * 2.0 - 1.0).collect();
    Tensor::from_vec(v, dims, &Device::Cpu)?.to_dtype(dtype)
}

fn labels(rng: &mut impl Rng, n: usize, classes: u32) -> Result<Tensor> {
    let v: Vec<u32> = (0..n).map(|_| rng.random_range(0..classes)).collect();
    Tensor::new(v, &Device::Cpu)
}

fn values(t: &Tensor) -> Result<Vec<f64>> {
    t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()
}

/// Every variable of a `VarMap` by name, as f64 values.
type Snapshot = Vec<(String, Vec<f64>)>;

/// Every variable of `varmap` by name, as f64 values.
fn snapshot(varmap: &VarMap) -> Result<Snapshot> {
    let data = varmap.data().lock().map_err(|_| candle_core::Error::Msg("poisoned".into()))?;
    let mut out: Vec<(String, Vec<f64>)> =
        data.iter().map(|(k, v)| Ok((k.clone(), values(v.as_tensor())?))).collect::<Result<_>>()?;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The elements of each variable that are exactly equal before and after.
fn unchanged(before: &Snapshot, after: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    for ((name, b), (_, a)) in before.iter().zip(after) {
        let same = b.iter().zip(a).filter(|(x, y)| x == y).count();
        if same > 0 {
            out.push(format!("{name}: {same} of {} elements unchanged", b.len()));
        }
    }
    out
}

/// A 12-16-16-5 MLP whose hidden layers are `tanh(norm(W·h + b))`, trained for a
/// few SGD steps on random data; returns the variables before and after.
type Norm = dyn Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>;

fn train_mlp(norm: &Norm, dtype: DType, rng: &mut impl Rng) -> Result<(Snapshot, Snapshot)> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, dtype, &Device::Cpu);
    let l1 = candle_nn::linear(12, 16, vb.pp("l1"))?;
    let n1 = normkit_candle::layer_norm(16, 1e-5, vb.pp("n1"))?;
    let l2 = candle_nn::linear(16, 16, vb.pp("l2"))?;
    let n2 = normkit_candle::layer_norm(16, 1e-5, vb.pp("n2"))?;
    let out = candle_nn::linear(16, 5, vb.pp("out"))?;
    let before = snapshot(&varmap)?;
    let mut sgd = SGD::new(varmap.all_vars(), 0.1)?;
    for _ in 0..3 {
        let x = randn(rng, &[10, 12], dtype)?;
        let y = labels(rng, 10, 5)?;
        let mut h = x;
        for (l, n) in [(&l1, &n1), (&l2, &n2)] {
            let z = l.forward(&h)?;
            // The modules' own parameters, passed to the normalization under test.
            let bias = n.bias().cloned().unwrap_or(Tensor::zeros(16, dtype, &Device::Cpu)?);
            h = norm(&z, n.weight(), &bias)?.tanh()?;
        }
        let loss = candle_nn::loss::cross_entropy(&out.forward(&h)?.to_dtype(DType::F32)?, &y)?;
        sgd.backward_step(&loss)?;
    }
    Ok((before, snapshot(&varmap)?))
}

#[test]
fn training_with_layer_norm_changes_every_parameter() -> Result<()> {
    let mut rng = rng();
    for dtype in [DType::F32, DType::F64] {
        let nk: &Norm = &|z, w, b| normkit_candle::ops::layer_norm(z, Some(w), Some(b), 1e-5);
        let (before, after) = train_mlp(nk, dtype, &mut rng)?;
        assert_eq!(before.len(), 10, "5 layers, each with a weight and a bias");
        let stuck = unchanged(&before, &after);
        assert!(stuck.is_empty(), "{dtype:?}: parameters that training did not change: {stuck:?}");
    }
    // The same check catches candle's own fused LayerNorm, whose gradient is cut:
    // its weight and bias, and everything before it, never move.
    let fused: &Norm = &|z, w, b| candle_nn::ops::layer_norm(z, w, b, 1e-5);
    let (before, after) = train_mlp(fused, DType::F32, &mut rng)?;
    let stuck = unchanged(&before, &after);
    assert!(
        stuck.iter().any(|s| s.starts_with("n2.weight")),
        "candle's fused layer_norm trained its weight: {stuck:?}"
    );
    Ok(())
}

/// Trains `Linear(d → c·s)`, reshaped to `[n, c, s]` (or `[n, c]` when `s` is
/// 0), through a normkit-candle BatchNorm for `k` SGD steps; feeds every batch's
/// BatchNorm input to normkit's own `BatchNorm` module too, and compares the
/// running statistics after each step, then the eval-mode outputs, then a
/// safetensors round trip of the `VarMap`.
fn batch_norm_follows_normkit(dtype: DType, c: usize, s: usize, k: usize, tol: f64) -> Result<()> {
    let mut rng = rng();
    let (n, d) = (9, 7);
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, dtype, &Device::Cpu);
    let lin = candle_nn::linear(d, c * s.max(1), vb.pp("lin"))?;
    let cfg = candle_nn::BatchNormConfig { eps: 1e-5, remove_mean: true, affine: true, momentum: 0.1 };
    let bn = normkit_candle::batch_norm(c, cfg, vb.pp("bn"))?;
    let shape: Vec<usize> = if s == 0 { vec![n, c] } else { vec![n, c, s] };
    let mut reference = normkit::BatchNorm::<f64>::new(c);
    let mut sgd = SGD::new(varmap.all_vars(), 0.05)?;
    for step in 1..=k {
        let x = randn(&mut rng, &[n, d], dtype)?;
        let z = lin.forward(&x)?.reshape(shape.as_slice())?;
        let y = bn.forward_t(&z, true)?;
        // Normkit's module sees the same batch (in f64).
        let zt = normkit::Tensor::new(&shape, values(&z)?).map_err(candle_core::Error::wrap)?;
        let (y_ref, _) = reference.forward(zt.view()).map_err(candle_core::Error::wrap)?;
        // Train the affine parameters and the linear map so the BatchNorm's
        // input moves between steps (the reference's weight and bias follow).
        let loss = (y.sqr()? * &randn(&mut rng, &shape, dtype)?)?.sum_all()?;
        sgd.backward_step(&loss)?;
        if let Some((w, b)) = bn.weight_and_bias() {
            reference.weight = Some(normkit::Tensor::new(&[c], values(w)?).map_err(candle_core::Error::wrap)?);
            reference.bias = Some(normkit::Tensor::new(&[c], values(b)?).map_err(candle_core::Error::wrap)?);
        }
        let close = |what: &str, got: &[f64], want: &[f64]| {
            for (i, (g, w)) in got.iter().zip(want).enumerate() {
                let err = (g - w).abs() / (1.0 + w.abs());
                assert!(err <= tol, "{dtype:?} step {step} {what}[{i}]: got {g}, want {w} (error {err:e})");
            }
        };
        close("y", &values(&y)?, y_ref.data());
        let (rm, rv) = (reference.running_mean.as_ref(), reference.running_var.as_ref());
        let (Some(rm), Some(rv)) = (rm, rv) else { panic!("normkit's BatchNorm lost its running statistics") };
        close("running_mean", &values(bn.running_mean())?, rm.data());
        close("running_var", &values(bn.running_var())?, rv.data());
    }
    assert_eq!(reference.num_batches_tracked, k as u64);

    // Eval mode normalizes with the running statistics, as normkit's does.
    let x = randn(&mut rng, &[n, d], dtype)?;
    let z = lin.forward(&x)?.reshape(shape.as_slice())?;
    let y_eval = bn.forward_t(&z, false)?;
    reference.eval();
    let zt = normkit::Tensor::new(&shape, values(&z)?).map_err(candle_core::Error::wrap)?;
    let (y_ref, _) = reference.forward(zt.view()).map_err(candle_core::Error::wrap)?;
    for (i, (g, w)) in values(&y_eval)?.iter().zip(y_ref.data()).enumerate() {
        assert!((g - w).abs() / (1.0 + w.abs()) <= tol, "{dtype:?} eval y[{i}]: got {g}, want {w}");
    }

    // The running statistics live in the VarMap: they save and load with the model.
    let dir = std::env::temp_dir().join(format!("normkit-candle-bn-{}-{dtype:?}-{c}-{s}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("model.safetensors");
    varmap.save(&file)?;
    let mut loaded = VarMap::new();
    let vb2 = VarBuilder::from_varmap(&loaded, dtype, &Device::Cpu);
    let bn2 = normkit_candle::batch_norm(c, cfg, vb2.pp("bn"))?;
    assert_ne!(values(bn2.running_var())?, values(bn.running_var())?, "a fresh BatchNorm starts at 1");
    loaded.load(&file)?;
    std::fs::remove_dir_all(&dir)?;
    assert_eq!(values(bn2.running_mean())?, values(bn.running_mean())?);
    assert_eq!(values(bn2.running_var())?, values(bn.running_var())?);
    assert_eq!(values(&bn2.forward_t(&z, false)?)?, values(&y_eval)?);
    Ok(())
}

#[test]
fn batch_norm_running_stats_match_normkit_module() -> Result<()> {
    // f64 agrees to rounding; f32 computes in f32 (the reference in f64).
    batch_norm_follows_normkit(DType::F64, 5, 0, 6, 1e-12)?;
    batch_norm_follows_normkit(DType::F64, 3, 4, 6, 1e-12)?;
    batch_norm_follows_normkit(DType::F32, 4, 0, 6, 1e-5)?;
    batch_norm_follows_normkit(DType::F32, 2, 3, 6, 1e-5)
}

#[test]
fn batch_norm_running_stats_receive_no_gradient() -> Result<()> {
    let mut rng = rng();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
    let bn = normkit_candle::batch_norm(3, 1e-5, vb.pp("bn"))?;
    let x = Var::from_tensor(&randn(&mut rng, &[6, 3], DType::F64)?)?;
    let loss = bn.forward_t(x.as_tensor(), true)?.sqr()?.sum_all()?;
    let grads = loss.backward()?;
    assert!(grads.get(x.as_tensor()).is_some());
    assert!(grads.get(bn.running_mean()).is_none() && grads.get(bn.running_var()).is_none());
    let eval = bn.forward_t(x.as_tensor(), false)?.sqr()?.sum_all()?.backward()?;
    assert!(eval.get(bn.running_mean()).is_none() && eval.get(bn.running_var()).is_none());
    Ok(())
}

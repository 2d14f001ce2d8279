//! The training loop: minibatch SGD or Adam on cross-entropy, evaluation every
//! `eval_every` steps.

use super::config::{Config, Optimizer};
use super::data::{Dataset, Split};
use super::model::Model;
use candle_core::{Device, Result, Tensor};
use candle_nn::{AdamW, Optimizer as _, ParamsAdamW, SGD};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Instant;

/// One evaluation.
#[derive(Clone, Debug)]
pub struct Eval {
    /// Training steps done.
    pub step: usize,
    /// Mean minibatch loss over the steps since the previous evaluation (at step
    /// 0: the initial model's loss over the whole training set).
    pub train_loss: f64,
    /// Fraction of the test set classified correctly.
    pub test_accuracy: f64,
    /// 15th, 50th and 85th percentiles over the test set of the input to the
    /// first unit's nonlinearity in the last hidden layer (Ioffe & Szegedy,
    /// Figure 1(b, c)).
    pub probe: [f64; 3],
}

/// A finished run.
#[derive(Clone, Debug)]
pub struct RunResult {
    /// What distinguishes this run in a comparison (`norm=batch`), or empty.
    pub label: String,
    /// Every evaluation, in step order.
    pub evals: Vec<Eval>,
    /// Seconds the run took, evaluations included.
    pub wall_s: f64,
}

impl RunResult {
    /// The last evaluation's test accuracy.
    pub fn final_test_accuracy(&self) -> f64 {
        self.evals.last().map_or(0.0, |e| e.test_accuracy)
    }
}

/// Samples `batch` as an `[n, pixels]` tensor and its labels.
fn tensors(split: &Split, idx: &[usize], pixels: usize) -> Result<(Tensor, Tensor)> {
    let mut x = Vec::with_capacity(idx.len() * pixels);
    let mut y = Vec::with_capacity(idx.len());
    for &i in idx {
        x.extend_from_slice(&split.images[i * pixels..(i + 1) * pixels]);
        y.push(split.labels[i]);
    }
    Ok((Tensor::from_vec(x, (idx.len(), pixels), &Device::Cpu)?, Tensor::new(y, &Device::Cpu)?))
}

/// Fisher–Yates shuffle with the run's generator.
fn shuffle(order: &mut [usize], rng: &mut StdRng) {
    for i in (1..order.len()).rev() {
        let j = rng.random_range(0..=i);
        order.swap(i, j);
    }
}

/// The `q`-th quantile (0..1) of sorted values, linear between order statistics
/// (NumPy's default).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    let t = pos - lo as f64;
    sorted[lo] * (1.0 - t) + sorted[hi.min(sorted.len() - 1)] * t
}

/// Evaluation-mode pass over a split: (mean loss, accuracy, probe values).
fn evaluate(model: &Model, split: &Split, pixels: usize, rows: usize) -> Result<(f64, f64, Vec<f64>)> {
    let (mut loss_sum, mut correct, mut probe) = (0.0, 0usize, Vec::with_capacity(split.len()));
    let all: Vec<usize> = (0..split.len()).collect();
    for chunk in all.chunks(500) {
        let (x, y) = tensors(split, chunk, pixels)?;
        let (logits, p) = model.forward(&x, false, None, rows)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &y)?.to_scalar::<f32>()?;
        loss_sum += f64::from(loss) * chunk.len() as f64;
        let pred = logits.argmax(1)?.to_vec1::<u32>()?;
        correct += pred.iter().zip(&split.labels[chunk[0]..]).filter(|(p, l)| p == l).count();
        probe.extend(p.to_vec1::<f32>()?.into_iter().map(f64::from));
    }
    let n = split.len().max(1) as f64;
    Ok((loss_sum / n, correct as f64 / n, probe))
}

fn eval_point(model: &Model, data: &Dataset, step: usize, train_loss: Option<f64>) -> Result<Eval> {
    let pixels = data.rows * data.cols;
    let (_, test_accuracy, mut probe) = evaluate(model, &data.test, pixels, data.rows)?;
    let train_loss = match train_loss {
        Some(l) => l,
        None => evaluate(model, &data.train, pixels, data.rows)?.0,
    };
    probe.sort_by(f64::total_cmp);
    let probe = [quantile(&probe, 0.15), quantile(&probe, 0.5), quantile(&probe, 0.85)];
    Ok(Eval { step, train_loss, test_accuracy, probe })
}

/// One optimizer step: backpropagate a loss and update the parameters.
type StepFn = dyn FnMut(&Tensor) -> Result<()>;

/// Trains the model of `cfg` on `data`, evaluating at step 0, every
/// `eval_every` steps and at the end. `on_eval` sees each evaluation as it comes
/// and returns whether to go on (false: stop after it, e.g. when the output was
/// closed); `on_step` sees each step (for a progress bar). Returns the run and
/// the model.
pub fn train(
    cfg: &Config,
    data: &Dataset,
    label: &str,
    mut on_eval: impl FnMut(&Eval) -> bool,
    mut on_step: impl FnMut(usize, f64),
) -> Result<(RunResult, Model)> {
    let start = Instant::now();
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let model = Model::new(cfg, data.rows, data.cols, data.classes, &mut rng)?;
    let params = model.trainable();
    let mut opt: Box<StepFn> = match cfg.optimizer {
        Optimizer::Sgd => {
            let mut sgd = SGD::new(params, cfg.lr)?;
            Box::new(move |loss| sgd.backward_step(loss))
        }
        Optimizer::Adam => {
            let p = ParamsAdamW { lr: cfg.lr, weight_decay: 0.0, ..Default::default() };
            let mut adam = AdamW::new(params, p)?;
            Box::new(move |loss| adam.backward_step(loss))
        }
    };
    let pixels = data.rows * data.cols;
    let n = data.train.len();
    let bs = cfg.batch_size.min(n);
    let mut order: Vec<usize> = (0..n).collect();
    shuffle(&mut order, &mut rng);
    let mut pos = 0;

    let mut evals = vec![eval_point(&model, data, 0, None)?];
    let mut go_on = on_eval(&evals[0]);
    let (mut loss_sum, mut loss_count) = (0.0, 0usize);
    for step in 1..=cfg.steps {
        if !go_on {
            break;
        }
        if pos + bs > n {
            shuffle(&mut order, &mut rng);
            pos = 0;
        }
        let (x, y) = tensors(&data.train, &order[pos..pos + bs], pixels)?;
        pos += bs;
        let (logits, _) = model.forward(&x, true, Some(&mut rng), data.rows)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
        opt(&loss)?;
        let l = f64::from(loss.to_scalar::<f32>()?);
        if !l.is_finite() {
            let prefix = if label.is_empty() { String::new() } else { format!("{label} ") };
            candle_core::bail!("{prefix}the training loss is {l} at step {step} (diverged: try a lower --lr)");
        }
        loss_sum += l;
        loss_count += 1;
        on_step(step, l);
        if step % cfg.eval_every == 0 || step == cfg.steps {
            let e = eval_point(&model, data, step, Some(loss_sum / loss_count as f64))?;
            go_on = on_eval(&e);
            evals.push(e);
            (loss_sum, loss_count) = (0.0, 0);
        }
    }
    let result = RunResult { label: label.to_string(), evals, wall_s: start.elapsed().as_secs_f64() };
    Ok((result, model))
}

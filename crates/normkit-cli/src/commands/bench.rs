//! `normkit bench`: effective memory bandwidth of each op beside the machine's
//! copy bandwidth, and beside peers measured by `bench/peers.py`.
//!
//! Every figure is a median over repeated calls. Inputs rotate among enough
//! buffer sets that together they exceed twice the last-level cache, so a call
//! never finds its input in cache: the figures measure memory, not cache.
//! "Effective" bandwidth counts the minimal bytes an op must move (each input
//! read once, each output written once) over its time; `fraction` divides it by
//! `copy_gbps`, the bandwidth of `copy_from_slice` on 256 MiB buffers split over
//! the same threads, counting bytes read plus written.

use normkit::ops::{self, LayerNormOutMut};
use normkit::{kernels::Grads, Float, TensorRef};
use rayon::prelude::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Measure each op's effective bandwidth (minimal bytes / median time) beside
/// the machine's copy bandwidth; optionally compare with peers' JSON.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Thread counts to measure, e.g. `1,2` (default: every core).
    #[arg(long, value_delimiter = ',')]
    pub threads: Vec<usize>,
    /// Write one JSON object per row to stdout (the table then goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// A short run: fewer repetitions and a shorter size sweep.
    #[arg(long)]
    pub quick: bool,
    /// JSON lines from `bench/peers.py`: print our time over theirs per row.
    #[arg(long)]
    pub compare: Option<PathBuf>,
    /// Element types, e.g. `f32,f64`.
    #[arg(long, value_delimiter = ',', default_value = "f32")]
    pub dtype: Vec<String>,
    /// Only ops whose name contains this (e.g. `rms`).
    #[arg(long)]
    pub op: Option<String>,
    /// The last-level cache size in MiB to size the rotating buffers by
    /// (default: read from /sys, else 32).
    #[arg(long)]
    pub llc_mib: Option<usize>,
    /// Skip the size sweep.
    #[arg(long)]
    pub no_sweep: bool,
}

/// What can stop a benchmark run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line of a `--compare` file is not a JSON object with the bench keys.
    #[error("{path}:{line}: {why}")]
    Peers {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        why: String,
    },
    /// A bad option value.
    #[error("{0}")]
    Usage(String),
    /// An op refused the benchmark's own input (a bug).
    #[error("op failed: {0}")]
    Op(#[from] normkit::Error),
}

/// Runs the benchmark; exit status 0, or 2 with a one-line error.
pub fn run(args: &Args) -> ExitCode {
    match run_all(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("normkit bench: {e}");
            ExitCode::from(2)
        }
    }
}

/// One measured row, as printed and as written with `--json`.
#[derive(Clone, Debug)]
struct Row {
    op: &'static str,
    pass: &'static str,
    variant: &'static str,
    dtype: &'static str,
    shape: Vec<usize>,
    threads: usize,
    median_ms: f64,
    gbps: f64,
    copy_gbps: f64,
    /// The sweep factor for rows of the size sweep.
    sweep: Option<usize>,
}

impl Row {
    fn to_json(&self) -> Value {
        let mut v = json!({
            "op": self.op, "pass": self.pass, "variant": self.variant, "dtype": self.dtype,
            "shape": self.shape, "threads": self.threads, "median_ms": self.median_ms,
            "gbps": self.gbps, "copy_gbps": self.copy_gbps, "fraction": self.gbps / self.copy_gbps,
            "impl": "normkit",
        });
        if let (Some(f), Some(obj)) = (self.sweep, v.as_object_mut()) {
            obj.insert("sweep".into(), json!(f));
        }
        v
    }

    fn key(&self) -> Key {
        (
            self.op.to_owned(),
            self.pass.to_owned(),
            self.variant.to_owned(),
            self.dtype.to_owned(),
            self.shape.clone(),
            self.threads,
        )
    }
}

/// (op, pass, variant, dtype, shape, threads): what a peer row must match.
type Key = (String, String, String, String, Vec<usize>, usize);

/// How long and how often each row is timed.
#[derive(Clone, Copy, Debug)]
struct Budget {
    min_calls: usize,
    max_calls: usize,
    min_time: Duration,
}

/// The row-normalization shapes of the issue: `[rows, n]`.
const ROW_SHAPES: [[usize; 2]; 3] = [[8192, 768], [8192, 4096], [256, 65536]];

/// The per-channel shapes of the issue, `(N, C, H, W)`, and the channels-last
/// one, `(N, H, W, C)`.
const NCHW_SHAPES: [[usize; 4]; 2] = [[32, 64, 56, 56], [8, 256, 28, 28]];
const NHWC_SHAPE: [usize; 4] = [32, 56, 56, 64];

/// GroupNorm's group count in the benchmark.
const GROUPS: usize = 32;

fn run_all(args: &Args) -> Result<(), BenchError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = if args.threads.is_empty() { vec![cores] } else { args.threads.clone() };
    if threads.contains(&0) {
        return Err(BenchError::Usage("--threads must be at least 1".into()));
    }
    for d in &args.dtype {
        if d != "f32" && d != "f64" {
            return Err(BenchError::Usage(format!("unknown --dtype {d:?}: expected f32 or f64")));
        }
    }
    if let Some(filter) = &args.op {
        let names: Vec<&str> = [RowOp::LayerNorm, RowOp::RmsNorm]
            .map(RowOp::name)
            .into_iter()
            .chain(ChanOp::NCHW.iter().chain(&ChanOp::NHWC).map(|op| op.name()))
            .collect();
        if !names.iter().any(|name| name.contains(filter.as_str())) {
            let names = names.join(", ");
            return Err(BenchError::Usage(format!("--op {filter:?} matches no op (ops: {names})")));
        }
    }
    let peers = match &args.compare {
        Some(path) => Some(read_peers(path)?),
        None => None,
    };
    let (llc, llc_source) = match args.llc_mib {
        Some(m) => (m << 20, "--llc-mib".to_owned()),
        None => last_level_cache(),
    };
    let budget = if args.quick {
        Budget { min_calls: 5, max_calls: 50, min_time: Duration::from_millis(100) }
    } else {
        Budget { min_calls: 15, max_calls: 400, min_time: Duration::from_millis(400) }
    };
    let say = |line: &str| {
        if args.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    say(&format!(
        "normkit bench: {} cores, assumed last-level cache {} MiB ({llc_source}); rotating buffers exceed {} MiB",
        cores,
        llc >> 20,
        2 * (llc >> 20)
    ));
    say(&format!("cpu: {}", cpu_model()));

    let mut rows = Vec::new();
    for &t in &threads {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .map_err(|e| BenchError::Usage(format!("cannot start {t} threads: {e}")))?;
        let copy_gbps = pool.install(|| copy_bandwidth(t));
        say(&format!(
            "threads {t}: copy_gbps {copy_gbps:.1} (median of 11 copy_from_slice runs, 256 MiB, read + write)"
        ));
        say(&header(peers.as_ref()));
        let mut emit = |row: Row| {
            if args.json {
                println!("{}", row.to_json());
            }
            say(&format_row(&row, peers.as_ref()));
            rows.push(row);
        };
        let ctx = Ctx { threads: t, copy_gbps, llc, budget };
        for dtype in &args.dtype {
            for shape in ROW_SHAPES {
                for op in [RowOp::LayerNorm, RowOp::RmsNorm] {
                    if args.op.as_deref().is_some_and(|f| !op.name().contains(f)) {
                        continue;
                    }
                    pool.install(|| match dtype.as_str() {
                        "f64" => bench_row_op::<f64>(&ctx, op, shape, None, &mut emit),
                        _ => bench_row_op::<f32>(&ctx, op, shape, None, &mut emit),
                    })?;
                }
            }
        }
        for dtype in &args.dtype {
            let nchw = NCHW_SHAPES.iter().flat_map(|s| ChanOp::NCHW.iter().map(move |op| (*op, *s)));
            let nhwc = ChanOp::NHWC.iter().map(|op| (*op, NHWC_SHAPE));
            for (op, shape) in nchw.chain(nhwc) {
                if args.op.as_deref().is_some_and(|f| !op.name().contains(f)) {
                    continue;
                }
                pool.install(|| match dtype.as_str() {
                    "f64" => bench_chan_op::<f64>(&ctx, op, shape, &mut emit),
                    _ => bench_chan_op::<f32>(&ctx, op, shape, &mut emit),
                })?;
            }
        }
        if !args.no_sweep && args.op.as_deref().is_none_or(|f| "layer_norm".contains(f)) {
            say("size sweep: layer_norm fwd into f32, [64·k, 4096]; time should grow linearly in k");
            let factors: &[usize] = if args.quick { &[1, 4, 16, 64] } else { &[1, 2, 4, 8, 16, 32, 64] };
            for &k in factors {
                pool.install(|| bench_row_op::<f32>(&ctx, RowOp::LayerNorm, [64 * k, 4096], Some(k), &mut emit))?;
            }
        }
    }
    if let Some(peers) = &peers {
        say(&summary(&rows, peers));
    }
    Ok(())
}

/// What every measurement of one thread count shares.
struct Ctx {
    threads: usize,
    copy_gbps: f64,
    llc: usize,
    budget: Budget,
}

#[derive(Clone, Copy, Debug)]
enum RowOp {
    LayerNorm,
    RmsNorm,
}

impl RowOp {
    fn name(self) -> &'static str {
        match self {
            RowOp::LayerNorm => "layer_norm",
            RowOp::RmsNorm => "rms_norm",
        }
    }
}

/// One rotating set of buffers for a `[rows, n]` op.
struct Set<T> {
    x: Vec<T>,
    dy: Vec<T>,
    y: Vec<T>,
    mean: Vec<T>,
    rstd: Vec<T>,
}

/// Measures forward and backward of `op` at `[rows, n]`, each with the
/// allocating call (`alloc`) and the caller-buffer call (`into`).
fn bench_row_op<T: Float>(
    ctx: &Ctx,
    op: RowOp,
    [rows, n]: [usize; 2],
    sweep: Option<usize>,
    emit: &mut impl FnMut(Row),
) -> Result<(), BenchError> {
    let s = std::mem::size_of::<T>();
    let numel = rows * n;
    let shape = [rows, n];
    // The inputs `x` alone exceed twice the last-level cache.
    let sets = (2 * ctx.llc).div_ceil(numel * s).max(2);
    let weight: Vec<T> = (0..n).map(|j| T::from_f64(1.0 + 0.25 * hash_unit(j as u64 + 7))).collect();
    let bias: Vec<T> = (0..n).map(|j| T::from_f64(0.1 * hash_unit(j as u64 + 11))).collect();
    let mut bufs: Vec<Set<T>> = (0..sets)
        .map(|i| {
            let seed = (i as u64) << 40;
            Set {
                x: filled(numel, seed, 2.0, 0.5),
                dy: if sweep.is_some() { Vec::new() } else { filled(numel, seed + 1, 1.0, 0.0) },
                y: ops::zeroed_buffer(numel),
                mean: vec![T::default(); rows],
                rstd: vec![T::default(); rows],
            }
        })
        .collect();
    let (w, b) = (TensorRef::new(&shape[1..], &weight)?, TensorRef::new(&shape[1..], &bias)?);
    let eps = 1e-5;
    let ns = [n];
    // Minimal bytes: every tensor read or written once.
    let (rows_b, n_b, big) = (rows * s, n * s, numel * s);
    let (fwd_bytes, bwd_bytes) = match op {
        RowOp::LayerNorm => (2 * big + 2 * n_b + 2 * rows_b, 3 * big + 2 * rows_b + 3 * n_b),
        RowOp::RmsNorm => (2 * big + n_b + rows_b, 3 * big + rows_b + 2 * n_b),
    };
    let mut row = |pass: &'static str, variant: &'static str, bytes: usize, median: Duration| {
        let gbps = bytes as f64 / median.as_secs_f64() / 1e9;
        emit(Row {
            op: op.name(),
            pass,
            variant,
            dtype: T::NAME,
            shape: shape.to_vec(),
            threads: ctx.threads,
            median_ms: median.as_secs_f64() * 1e3,
            gbps,
            copy_gbps: ctx.copy_gbps,
            sweep,
        });
    };

    // Forward, into caller buffers (this also leaves each set's saved
    // statistics for the backward below).
    let fwd_into = |set: &mut Set<T>| -> Result<(), normkit::Error> {
        let x = TensorRef::new(&shape, &set.x)?;
        match op {
            RowOp::LayerNorm => {
                let out = LayerNormOutMut { y: &mut set.y, mean: &mut set.mean, rstd: &mut set.rstd };
                ops::layer_norm_into(x, &ns, Some(w), Some(b), eps, out)
            }
            RowOp::RmsNorm => ops::rms_norm_into(x, &ns, Some(w), eps, &mut set.y, &mut set.rstd),
        }
    };
    let median = time_rotating(ctx.budget, &mut bufs, fwd_into)?;
    row("fwd", "into", fwd_bytes, median);
    if sweep.is_some() {
        return Ok(());
    }
    let fwd_alloc = |set: &mut Set<T>| -> Result<(), normkit::Error> {
        let x = TensorRef::new(&shape, &set.x)?;
        match op {
            RowOp::LayerNorm => drop(ops::layer_norm(x, &ns, Some(w), Some(b), eps)?),
            RowOp::RmsNorm => drop(ops::rms_norm(x, &ns, Some(w), eps)?),
        }
        Ok(())
    };
    let median = time_rotating(ctx.budget, &mut bufs, fwd_alloc)?;
    row("fwd", "alloc", fwd_bytes, median);

    // Backward: dx, dweight (and dbias for LayerNorm).
    let (mut dw, mut db) = (vec![T::default(); n], vec![T::default(); n]);
    let lead = [rows];
    let mut bwd_into = |set: &mut Set<T>| -> Result<(), normkit::Error> {
        let (x, dy) = (TensorRef::new(&shape, &set.x)?, TensorRef::new(&shape, &set.dy)?);
        let rstd = TensorRef::new(&lead, &set.rstd)?;
        match op {
            RowOp::LayerNorm => {
                let mean = TensorRef::new(&lead, &set.mean)?;
                let grads = Grads { dx: &mut set.y, dweight: Some(&mut dw), dbias: Some(&mut db) };
                ops::layer_norm_backward_into(dy, x, &ns, (mean, rstd), Some(w), grads)
            }
            RowOp::RmsNorm => ops::rms_norm_backward_into(dy, x, &ns, rstd, Some(w), &mut set.y, Some(&mut dw)),
        }
    };
    let median = time_rotating(ctx.budget, &mut bufs, &mut bwd_into)?;
    row("bwd", "into", bwd_bytes, median);
    let bwd_alloc = |set: &mut Set<T>| -> Result<(), normkit::Error> {
        let (x, dy) = (TensorRef::new(&shape, &set.x)?, TensorRef::new(&shape, &set.dy)?);
        let rstd = TensorRef::new(&lead, &set.rstd)?;
        match op {
            RowOp::LayerNorm => {
                let mean = TensorRef::new(&lead, &set.mean)?;
                drop(ops::layer_norm_backward(dy, x, &ns, (mean, rstd), Some(w), true)?)
            }
            RowOp::RmsNorm => drop(ops::rms_norm_backward(dy, x, &ns, rstd, Some(w))?),
        }
        Ok(())
    };
    let median = time_rotating(ctx.budget, &mut bufs, bwd_alloc)?;
    row("bwd", "alloc", bwd_bytes, median);
    Ok(())
}

/// The per-channel ops: BatchNorm (channel axis 1, or last for `_nhwc`),
/// GroupNorm with [`GROUPS`] groups, InstanceNorm.
#[derive(Clone, Copy, Debug, PartialEq)]
enum ChanOp {
    BnTrain { nhwc: bool },
    BnEval { nhwc: bool },
    BnFolded { nhwc: bool },
    GroupNorm,
    InstanceNorm,
}

impl ChanOp {
    const NCHW: [ChanOp; 5] = [
        ChanOp::BnTrain { nhwc: false },
        ChanOp::BnEval { nhwc: false },
        ChanOp::BnFolded { nhwc: false },
        ChanOp::GroupNorm,
        ChanOp::InstanceNorm,
    ];
    const NHWC: [ChanOp; 3] =
        [ChanOp::BnTrain { nhwc: true }, ChanOp::BnEval { nhwc: true }, ChanOp::BnFolded { nhwc: true }];

    fn name(self) -> &'static str {
        match self {
            ChanOp::BnTrain { nhwc: false } => "batch_norm_train",
            ChanOp::BnTrain { nhwc: true } => "batch_norm_train_nhwc",
            ChanOp::BnEval { nhwc: false } => "batch_norm_eval",
            ChanOp::BnEval { nhwc: true } => "batch_norm_eval_nhwc",
            ChanOp::BnFolded { nhwc: false } => "batch_norm_folded",
            ChanOp::BnFolded { nhwc: true } => "batch_norm_folded_nhwc",
            ChanOp::GroupNorm => "group_norm",
            ChanOp::InstanceNorm => "instance_norm",
        }
    }

    /// The channel axis of a 4-d input.
    fn axis(self) -> isize {
        match self {
            ChanOp::BnTrain { nhwc: true } | ChanOp::BnEval { nhwc: true } | ChanOp::BnFolded { nhwc: true } => -1,
            _ => 1,
        }
    }

    fn has_backward(self) -> bool {
        !matches!(self, ChanOp::BnFolded { .. })
    }
}

/// One rotating set of buffers for a per-channel op: input, output gradient,
/// output, and the saved statistics (`[C]` for BatchNorm, `[N, G]` otherwise).
struct ChanSet<T: Float> {
    x: Vec<T>,
    dy: Vec<T>,
    y: Vec<T>,
    mean: Vec<T>,
    rstd: Vec<T>,
    moments: Vec<normkit::Moments<T::Acc>>,
}

/// Measures forward and (except for the folded affine map) backward of a
/// per-channel op, each with the allocating call and the `_into` call.
fn bench_chan_op<T: Float>(
    ctx: &Ctx,
    op: ChanOp,
    shape: [usize; 4],
    emit: &mut impl FnMut(Row),
) -> Result<(), BenchError> {
    let s = std::mem::size_of::<T>();
    let numel: usize = shape.iter().product();
    let (n, c) = (shape[0], if op.axis() == 1 { shape[1] } else { shape[3] });
    let groups = match op {
        ChanOp::GroupNorm => GROUPS,
        ChanOp::InstanceNorm => c,
        _ => 0,
    };
    let stats_len = if groups > 0 { n * groups } else { c };
    // The inputs `x` alone exceed twice the last-level cache.
    let sets = (2 * ctx.llc).div_ceil(numel * s).max(2);
    let param = |seed: u64, scale: f64, offset: f64| -> Vec<T> {
        (0..c).map(|j| T::from_f64(offset + scale * hash_unit(seed + j as u64))).collect()
    };
    let (weight, bias) = (param(7, 0.25, 1.0), param(11, 0.1, 0.0));
    let (running_mean, running_var) = (param(13, 0.5, 0.5), param(17, 0.5, 1.0));
    let mut bufs: Vec<ChanSet<T>> = (0..sets)
        .map(|i| {
            let seed = (i as u64) << 40;
            ChanSet {
                x: filled(numel, seed, 2.0, 0.5),
                dy: if op.has_backward() { filled(numel, seed + 1, 1.0, 0.0) } else { Vec::new() },
                y: ops::zeroed_buffer(numel),
                mean: vec![T::default(); stats_len],
                rstd: vec![T::default(); stats_len],
                moments: vec![normkit::Moments::new(); c],
            }
        })
        .collect();
    let cs = [c];
    let (w, b) = (TensorRef::new(&cs, &weight)?, TensorRef::new(&cs, &bias)?);
    let (rm, rv) = (TensorRef::new(&cs, &running_mean)?, TensorRef::new(&cs, &running_var)?);
    let stats_shape = if groups > 0 { vec![n, groups] } else { vec![c] };
    let (axis, eps) = (op.axis(), 1e-5);
    // Minimal bytes: x read and y written once, plus the small per-channel and
    // per-group vectors each read or written once.
    let (big, cb, sb) = (numel * s, c * s, stats_len * s);
    let fwd_bytes = match op {
        ChanOp::BnTrain { .. } => 2 * big + 4 * cb,
        ChanOp::BnEval { .. } => 2 * big + 4 * cb,
        ChanOp::BnFolded { .. } => 2 * big + 2 * cb,
        ChanOp::GroupNorm | ChanOp::InstanceNorm => 2 * big + 2 * cb + 2 * sb,
    };
    // Backward: x and dy read, dx written; mean, rstd and weight read; dweight
    // and dbias written.
    let bwd_bytes = 3 * big + 2 * sb + 3 * cb;
    let mut row = |pass: &'static str, variant: &'static str, bytes: usize, median: Duration| {
        emit(Row {
            op: op.name(),
            pass,
            variant,
            dtype: T::NAME,
            shape: shape.to_vec(),
            threads: ctx.threads,
            median_ms: median.as_secs_f64() * 1e3,
            gbps: bytes as f64 / median.as_secs_f64() / 1e9,
            copy_gbps: ctx.copy_gbps,
            sweep: None,
        });
    };

    // Forward into caller buffers; it also leaves each set's saved statistics.
    // For eval-mode rows the saved `rstd` is `1 / sqrt(running_var + eps)`.
    let fwd_into = |set: &mut ChanSet<T>| -> Result<(), normkit::Error> {
        let x = TensorRef::new(&shape, &set.x)?;
        match op {
            ChanOp::BnTrain { .. } => {
                let out = ops::BatchNormOutMut {
                    y: &mut set.y,
                    save_mean: &mut set.mean,
                    save_rstd: &mut set.rstd,
                    batch_stats: &mut set.moments,
                };
                ops::batch_norm_train_into(x, axis, Some(w), Some(b), eps, out)
            }
            ChanOp::BnEval { .. } => {
                for (((m, r), &a), &v) in
                    set.mean.iter_mut().zip(set.rstd.iter_mut()).zip(&running_mean).zip(&running_var)
                {
                    (*m, *r) = (a, T::from_f64(1.0 / (v.to_f64() + eps).sqrt()));
                }
                ops::batch_norm_eval_into(x, axis, rm, rv, Some(w), Some(b), eps, &mut set.y)
            }
            ChanOp::BnFolded { .. } => ops::batch_norm_folded_into(x, axis, w, b, &mut set.y),
            ChanOp::GroupNorm | ChanOp::InstanceNorm => {
                let out = LayerNormOutMut { y: &mut set.y, mean: &mut set.mean, rstd: &mut set.rstd };
                match op {
                    ChanOp::GroupNorm => ops::group_norm_into(x, groups, Some(w), Some(b), eps, out),
                    _ => ops::instance_norm_into(x, Some(w), Some(b), eps, out),
                }
            }
        }
    };
    let median = time_rotating(ctx.budget, &mut bufs, fwd_into)?;
    row("fwd", "into", fwd_bytes, median);
    let fwd_alloc = |set: &mut ChanSet<T>| -> Result<(), normkit::Error> {
        let x = TensorRef::new(&shape, &set.x)?;
        match op {
            ChanOp::BnTrain { .. } => drop(ops::batch_norm_train(x, axis, Some(w), Some(b), eps)?),
            ChanOp::BnEval { .. } => drop(ops::batch_norm_eval(x, axis, rm, rv, Some(w), Some(b), eps)?),
            ChanOp::BnFolded { .. } => drop(ops::batch_norm_folded(x, axis, w, b)?),
            ChanOp::GroupNorm => drop(ops::group_norm(x, groups, Some(w), Some(b), eps)?),
            ChanOp::InstanceNorm => drop(ops::instance_norm(x, Some(w), Some(b), eps)?),
        }
        Ok(())
    };
    let median = time_rotating(ctx.budget, &mut bufs, fwd_alloc)?;
    row("fwd", "alloc", fwd_bytes, median);
    if !op.has_backward() {
        return Ok(());
    }

    // Backward: dx, dweight, dbias (BatchNorm eval: with the statistics fixed).
    let (mut dw, mut db) = (vec![T::default(); c], vec![T::default(); c]);
    let mut bwd_into = |set: &mut ChanSet<T>| -> Result<(), normkit::Error> {
        let (x, dy) = (TensorRef::new(&shape, &set.x)?, TensorRef::new(&shape, &set.dy)?);
        let (mean, rstd) = (TensorRef::new(&stats_shape, &set.mean)?, TensorRef::new(&stats_shape, &set.rstd)?);
        let grads = Grads { dx: &mut set.y, dweight: Some(&mut dw), dbias: Some(&mut db) };
        match op {
            ChanOp::BnTrain { .. } => ops::batch_norm_backward_into(dy, x, axis, mean, rstd, Some(w), grads),
            ChanOp::BnEval { .. } => ops::batch_norm_fixed_backward_into(dy, x, axis, mean, rstd, Some(w), grads),
            ChanOp::GroupNorm => ops::group_norm_backward_into(dy, x, groups, (mean, rstd), Some(w), grads),
            _ => ops::instance_norm_backward_into(dy, x, (mean, rstd), Some(w), grads),
        }
    };
    let median = time_rotating(ctx.budget, &mut bufs, &mut bwd_into)?;
    row("bwd", "into", bwd_bytes, median);
    let bwd_alloc = |set: &mut ChanSet<T>| -> Result<(), normkit::Error> {
        let (x, dy) = (TensorRef::new(&shape, &set.x)?, TensorRef::new(&shape, &set.dy)?);
        let (mean, rstd) = (TensorRef::new(&stats_shape, &set.mean)?, TensorRef::new(&stats_shape, &set.rstd)?);
        match op {
            ChanOp::BnTrain { .. } => drop(ops::batch_norm_backward(dy, x, axis, mean, rstd, Some(w), true)?),
            ChanOp::BnEval { .. } => drop(ops::batch_norm_eval_backward(dy, x, axis, rm, rv, Some(w), true, eps)?),
            ChanOp::GroupNorm => drop(ops::group_norm_backward(dy, x, groups, (mean, rstd), Some(w), true)?),
            _ => drop(ops::instance_norm_backward(dy, x, (mean, rstd), Some(w), true)?),
        }
        Ok(())
    };
    let median = time_rotating(ctx.budget, &mut bufs, bwd_alloc)?;
    row("bwd", "alloc", bwd_bytes, median);
    Ok(())
}

/// Calls `f` once on every set (a warm-up that also faults in the pages of
/// caller buffers), then times calls on the sets in turn until the budget is
/// spent; returns the median time of one call.
fn time_rotating<S, E>(
    budget: Budget,
    sets: &mut [S],
    mut f: impl FnMut(&mut S) -> Result<(), E>,
) -> Result<Duration, E> {
    for set in sets.iter_mut() {
        f(set)?;
    }
    let mut times = Vec::with_capacity(budget.max_calls);
    let started = Instant::now();
    let mut i = 0;
    while times.len() < budget.max_calls && (times.len() < budget.min_calls || started.elapsed() < budget.min_time) {
        if let Some(set) = sets.get_mut(i % sets.len().max(1)) {
            let t0 = Instant::now();
            f(set)?;
            times.push(t0.elapsed());
        }
        i += 1;
    }
    Ok(median(&mut times))
}

/// The median, the mean of the two middle values for an even count (as
/// Python's `statistics.median`, which `bench/peers.py` uses).
fn median(times: &mut [Duration]) -> Duration {
    times.sort_unstable();
    let mid = times.len() / 2;
    match (times.len() % 2, times.get(mid.wrapping_sub(1)), times.get(mid)) {
        (0, Some(&a), Some(&b)) => (a + b) / 2,
        (_, _, Some(&m)) => m,
        _ => Duration::ZERO,
    }
}

/// `copy_gbps`: the median of 11 runs of `copy_from_slice` from one 256 MiB
/// buffer to another, split evenly over `threads` rayon tasks, counting the bytes
/// read plus the bytes written.
fn copy_bandwidth(threads: usize) -> f64 {
    const BYTES: usize = 256 << 20;
    // Allocated as the kernels' buffers are (huge pages where the OS gives them).
    let mut src: Vec<f64> = ops::zeroed_buffer(BYTES / 8);
    src.par_iter_mut().enumerate().for_each(|(i, v)| *v = i as f64);
    let mut dst: Vec<f64> = ops::zeroed_buffer(BYTES / 8);
    let chunk = (BYTES / 8).div_ceil(threads);
    let mut copy = || {
        let t0 = Instant::now();
        dst.par_chunks_mut(chunk).zip(src.par_chunks(chunk)).for_each(|(d, s)| d.copy_from_slice(s));
        t0.elapsed()
    };
    copy(); // fault in dst's pages
    let mut times: Vec<Duration> = (0..11).map(|_| copy()).collect();
    2.0 * BYTES as f64 / median(&mut times).as_secs_f64() / 1e9
}

/// `len` values `offset + scale · u`, `u` uniform-looking in [-1, 1), from a hash
/// of the index (fast to fill in parallel, no dependence on a random crate), in
/// a buffer from [`ops::zeroed_buffer`] (huge pages where the OS gives them, as
/// numpy's arrays get for the peers' inputs).
fn filled<T: Float>(len: usize, seed: u64, scale: f64, offset: f64) -> Vec<T> {
    let mut v: Vec<T> = ops::zeroed_buffer(len);
    v.par_iter_mut().enumerate().for_each(|(i, v)| *v = T::from_f64(offset + scale * hash_unit(seed ^ i as u64)));
    v
}

/// A value in [-1, 1) from splitmix64 of `i`.
fn hash_unit(i: u64) -> f64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

/// The largest cache level's size from Linux's sysfs, or 32 MiB if unreadable.
fn last_level_cache() -> (usize, String) {
    let base = Path::new("/sys/devices/system/cpu/cpu0/cache");
    let mut best: Option<(u32, usize)> = None;
    for i in 0..8 {
        let dir = base.join(format!("index{i}"));
        let level = std::fs::read_to_string(dir.join("level")).ok().and_then(|s| s.trim().parse::<u32>().ok());
        let size = std::fs::read_to_string(dir.join("size")).ok().and_then(|s| parse_cache_size(s.trim()));
        if let (Some(level), Some(size)) = (level, size) {
            if best.is_none_or(|(l, _)| level > l) {
                best = Some((level, size));
            }
        }
    }
    match best {
        Some((level, size)) => (size, format!("L{level}, read from {}", base.display())),
        None => (32 << 20, "default: could not read /sys".to_owned()),
    }
}

fn parse_cache_size(s: &str) -> Option<usize> {
    let (num, mult) = match s.chars().last()? {
        'K' => (&s[..s.len() - 1], 1 << 10),
        'M' => (&s[..s.len() - 1], 1 << 20),
        'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<usize>().ok().map(|v| v * mult)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Reads peers' JSON lines, keyed like our rows, each with `impl` and `median_ms`.
fn read_peers(path: &Path) -> Result<BTreeMap<Key, Vec<(String, f64)>>, BenchError> {
    let text = std::fs::read_to_string(path).map_err(|source| BenchError::Read { path: path.to_owned(), source })?;
    let mut peers: BTreeMap<Key, Vec<(String, f64)>> = BTreeMap::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = |why: String| BenchError::Peers { path: path.to_owned(), line: i + 1, why };
        let v: Value = serde_json::from_str(line).map_err(|e| bad(format!("not JSON: {e}")))?;
        let text_key = |k: &str| {
            v.get(k).and_then(Value::as_str).map(str::to_owned).ok_or_else(|| bad(format!("no string {k:?}")))
        };
        let shape = v
            .get("shape")
            .and_then(Value::as_array)
            .and_then(|a| {
                a.iter().map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok())).collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| bad("no \"shape\" array of dims".into()))?;
        let threads = v
            .get("threads")
            .and_then(Value::as_u64)
            .and_then(|t| usize::try_from(t).ok())
            .ok_or_else(|| bad("no integer \"threads\"".into()))?;
        let ms = v.get("median_ms").and_then(Value::as_f64).ok_or_else(|| bad("no number \"median_ms\"".into()))?;
        let key = (text_key("op")?, text_key("pass")?, text_key("variant")?, text_key("dtype")?, shape, threads);
        let name = text_key("impl")?;
        let rows = peers.entry(key).or_default();
        // Two rows of one peer for one key would be counted twice (or one
        // hidden): a file of several runs concatenated, most likely.
        if rows.iter().any(|(other, _)| *other == name) {
            return Err(bad(format!("a second {name} row for the same op, pass, variant, dtype, shape and threads")));
        }
        rows.push((name, ms));
    }
    Ok(peers)
}

fn header(peers: Option<&BTreeMap<Key, Vec<(String, f64)>>>) -> String {
    let mut h = format!(
        "{:<22} {:<4} {:<6} {:<16} {:<5} {:>3} {:>10} {:>7} {:>8}",
        "op", "pass", "var", "shape", "dtype", "thr", "median_ms", "GB/s", "fraction"
    );
    if peers.is_some() {
        h.push_str("  ours/theirs (impl)");
    }
    h
}

fn format_row(r: &Row, peers: Option<&BTreeMap<Key, Vec<(String, f64)>>>) -> String {
    let shape = format!("[{}]", r.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(","));
    let mut line = format!(
        "{:<22} {:<4} {:<6} {:<16} {:<5} {:>3} {:>10.3} {:>7.2} {:>8.2}",
        r.op,
        r.pass,
        r.variant,
        shape,
        r.dtype,
        r.threads,
        r.median_ms,
        r.gbps,
        r.gbps / r.copy_gbps
    );
    if let Some(theirs) = peers.and_then(|p| p.get(&r.key())) {
        for (name, ms) in theirs {
            line.push_str(&format!("  {:.2} (ours {:.2}x as fast as {name})", r.median_ms / ms, ms / r.median_ms));
        }
    }
    line
}

/// One line per peer: the geometric mean of our time over theirs on the rows
/// both measured.
fn summary(rows: &[Row], peers: &BTreeMap<Key, Vec<(String, f64)>>) -> String {
    let mut by_impl: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
    for r in rows {
        for (name, ms) in peers.get(&r.key()).into_iter().flatten() {
            let e = by_impl.entry(name.as_str()).or_insert((0.0, 0));
            e.0 += (r.median_ms / ms).ln();
            e.1 += 1;
        }
    }
    if by_impl.is_empty() {
        return "compare: no peer row matches a measured row (op, pass, variant, dtype, shape, threads)".into();
    }
    by_impl
        .iter()
        .map(|(name, (sum, k))| {
            format!("compare: ours/{name} geometric mean {:.2} over {k} matching rows", (sum / *k as f64).exp())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_sizes_parse() {
        assert_eq!(parse_cache_size("32768K"), Some(32 << 20));
        assert_eq!(parse_cache_size("2M"), Some(2 << 20));
        assert_eq!(parse_cache_size("512"), Some(512));
        assert_eq!(parse_cache_size("x"), None);
    }

    #[test]
    fn peers_lines_parse_and_bad_lines_name_their_line() {
        let dir = std::env::temp_dir().join(format!("normkit-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok();
        let good = dir.join("good.json");
        let line = r#"{"op":"layer_norm","pass":"fwd","variant":"alloc","dtype":"f32","shape":[8192,768],"threads":1,"median_ms":2.5,"impl":"onnxruntime"}"#;
        std::fs::write(&good, format!("{line}\n\n")).ok();
        let peers = read_peers(&good).ok();
        let key: Key = ("layer_norm".into(), "fwd".into(), "alloc".into(), "f32".into(), vec![8192, 768], 1);
        assert_eq!(peers.and_then(|p| p.get(&key).cloned()), Some(vec![("onnxruntime".to_owned(), 2.5)]));
        let bad = dir.join("bad.json");
        std::fs::write(&bad, format!("{line}\n{{\"op\":\"layer_norm\"}}\n")).ok();
        let err = read_peers(&bad).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("bad.json:2:"), "{err}");
        let twice = dir.join("twice.json");
        std::fs::write(&twice, format!("{line}\n{line}\n")).ok();
        let err = read_peers(&twice).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("twice.json:2: a second onnxruntime row"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn median_of_an_even_count_is_the_mean_of_the_middle_two() {
        let ms = |v: &[u64]| v.iter().map(|&m| Duration::from_millis(m)).collect::<Vec<_>>();
        assert_eq!(median(&mut ms(&[4, 1, 3, 2])), Duration::from_micros(2500));
        assert_eq!(median(&mut ms(&[5, 1, 3])), Duration::from_millis(3));
        assert_eq!(median(&mut []), Duration::ZERO);
    }
}

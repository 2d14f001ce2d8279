//! `normkit train`: trains a classifier on MNIST-format data with candle and
//! normkit's normalization layers, and compares configurations.
//!
//! The defaults are the setup of Ioffe & Szegedy (2015), Figure 1: an MLP
//! 784-100-100-100-10 with sigmoid units, minibatches of 60, plain SGD, 20,000
//! steps, an evaluation every 1,000, with BatchNorm before each sigmoid.

pub mod config;
pub mod data;
pub mod model;
pub mod plot;
pub mod run;

use config::Raw;
use normkit_scale::atomic::AtomicFile;
use run::{Eval, RunResult};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The learning rate of plain SGD when `--lr` is not given: the Figure 1 setup.
/// Ioffe & Szegedy do not state theirs; at 0.02 the network without
/// normalization trains slowly, as their baseline does, and BatchNorm's lead holds
/// at every evaluation from step 2,000 to 20,000 for every seed we tried. At 0.1
/// and above, on 8,000 training digits, the plain network catches up after
/// about 10,000 steps (both overfit) and the curves cross (see the README).
pub const DEFAULT_SGD_LR: f64 = 0.02;
/// The learning rate of Adam when `--lr` is not given.
pub const DEFAULT_ADAM_LR: f64 = 0.001;
/// The standard deviation of the Gaussian initial weights when `--init-std` is
/// not given.
pub const DEFAULT_INIT_STD: f64 = 0.1;

/// What can go wrong; each is one line.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A bad option value (exit status 2).
    #[error("{0}")]
    Usage(String),
    /// Unreadable or malformed data (exit status 2).
    #[error("{0}")]
    Data(String),
    /// A failure while training or writing results (exit status 1).
    #[error("{0}")]
    Run(String),
    /// Whoever read the standard output closed it (`normkit train | head`):
    /// stop quietly, with exit status 0 (1, with this message, when a plot or
    /// a model was asked for: they are not written).
    #[error("the standard output was closed: stopped before the end, --plot/--save not written")]
    StdoutClosed,
}

/// The error for a failed write to the standard output.
fn stdout_error(e: std::io::Error) -> TrainError {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        TrainError::StdoutClosed
    } else {
        TrainError::Run(format!("cannot write to the standard output: {e}"))
    }
}

/// Writes one line to the standard output (`println!` would panic on a closed pipe).
fn say(line: &str) -> std::io::Result<()> {
    writeln!(std::io::stdout().lock(), "{line}")
}

impl From<candle_core::Error> for TrainError {
    fn from(e: candle_core::Error) -> Self {
        // candle's messages can span lines (backtraces); keep the first.
        let msg = e.to_string();
        TrainError::Run(msg.lines().next().unwrap_or("candle error").to_string())
    }
}

/// Train a classifier on MNIST-format data with normkit's normalization layers
/// (defaults: Ioffe & Szegedy 2015, Figure 1, with BatchNorm).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory of IDX files PREFIX-images-idx3-ubyte[.gz] and
    /// PREFIX-labels-idx1-ubyte[.gz] (default: the bundled 10,000 MNIST digits).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Training samples: where a single data set is split (default 8000; the rest
    /// is the test set), or how many of a train-* set to use.
    #[arg(long)]
    pub train_size: Option<String>,
    /// Network: mlp or cnn.
    #[arg(long, default_value = "mlp")]
    pub arch: String,
    /// Hidden layer widths (mlp) or channels (cnn), comma-separated
    /// [default: 100,100,100 (mlp), 16,32 (cnn)].
    #[arg(long)]
    pub hidden: Option<String>,
    /// Normalization before each hidden nonlinearity: none, batch, layer, rms, group.
    #[arg(long, default_value = "batch")]
    pub norm: String,
    /// Hidden nonlinearity: sigmoid, relu, tanh.
    #[arg(long, default_value = "sigmoid")]
    pub activation: String,
    /// Optimizer: sgd (plain minibatch SGD) or adam.
    #[arg(long, default_value = "sgd")]
    pub optimizer: String,
    /// Learning rate [default: 0.02 with sgd, 0.001 with adam].
    #[arg(long)]
    pub lr: Option<String>,
    /// Minibatch size.
    #[arg(long, default_value = "60")]
    pub batch_size: String,
    /// Training steps (minibatches).
    #[arg(long, default_value = "20000")]
    pub steps: String,
    /// Steps between evaluations on the test set.
    #[arg(long, default_value = "1000")]
    pub eval_every: String,
    /// Standard deviation of the Gaussian initial weights (biases start at 0).
    #[arg(long, default_value = "0.1")]
    pub init_std: String,
    /// Seed of the initial weights, the minibatch order and dropout.
    #[arg(long, default_value = "1")]
    pub seed: String,
    /// Dropout probability after each hidden nonlinearity.
    #[arg(long, default_value = "0")]
    pub dropout: String,
    /// Groups of --norm group.
    #[arg(long, default_value = "4")]
    pub groups: String,
    /// Threads for candle's matrix products. Results are deterministic for a given
    /// --seed and thread count.
    #[arg(long, default_value = "1")]
    pub threads: String,
    /// Run several configurations, e.g. norm=none,batch or lr=0.1,1.0 (hidden
    /// sizes inside: hidden=100x100,50x50); prints a table and plots one curve each.
    #[arg(long)]
    pub compare: Option<String>,
    /// Write one JSON object per evaluation (step, train_loss, test_accuracy and
    /// probe_p15, probe_p50, probe_p85: percentiles over the test set of the
    /// input to the last hidden layer's first nonlinearity) and a final one
    /// (final_test_accuracy, wall_s) to stdout.
    #[arg(long)]
    pub json: bool,
    /// Draw test accuracy and the last hidden layer's sigmoid-input percentiles
    /// against steps to FILE.svg or FILE.png.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Save the trained parameters and BatchNorm running statistics to
    /// FILE.safetensors (not with --compare).
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
}

/// Runs `normkit train`: exit status 0 on success, 2 on bad input (options or
/// data), 1 when training or writing results fails. A closed standard output
/// (`normkit train | head`) stops the run quietly with status 0, unless it
/// asked for a plot or a model, which are then not written: status 1.
pub fn run(args: &Args) -> ExitCode {
    match train_all(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(TrainError::StdoutClosed) if args.plot.is_none() && args.save.is_none() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("normkit train: {e}");
            match e {
                TrainError::Usage(_) | TrainError::Data(_) => ExitCode::from(2),
                TrainError::Run(_) | TrainError::StdoutClosed => ExitCode::from(1),
            }
        }
    }
}

/// The raw option values of `args`, defaults resolved where they depend on
/// another option (`--hidden` on `--arch`, `--lr` on `--optimizer`).
fn raw(args: &Args) -> Raw {
    Raw {
        values: vec![
            ("arch", args.arch.clone()),
            ("hidden", args.hidden.clone().unwrap_or_default()),
            ("norm", args.norm.clone()),
            ("activation", args.activation.clone()),
            ("optimizer", args.optimizer.clone()),
            ("lr", args.lr.clone().unwrap_or_default()),
            ("batch-size", args.batch_size.clone()),
            ("steps", args.steps.clone()),
            ("eval-every", args.eval_every.clone()),
            ("init-std", args.init_std.clone()),
            ("seed", args.seed.clone()),
            ("dropout", args.dropout.clone()),
            ("groups", args.groups.clone()),
        ],
    }
}

/// Fills the defaults that depend on other options.
fn resolve_defaults(raw: &mut Raw) {
    let get = |raw: &Raw, k: &str| raw.values.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()).unwrap_or_default();
    for (name, value) in raw.values.iter_mut() {
        if value.is_empty() && *name == "hidden" {
            *value = String::new();
        }
    }
    let arch = get(raw, "arch");
    let optimizer = get(raw, "optimizer");
    for (name, value) in raw.values.iter_mut() {
        if !value.is_empty() {
            continue;
        }
        match *name {
            "hidden" => *value = if arch == "cnn" { "16,32".into() } else { "100,100,100".into() },
            "lr" => {
                let lr = if optimizer == "adam" { DEFAULT_ADAM_LR } else { DEFAULT_SGD_LR };
                *value = lr.to_string();
            }
            _ => {}
        }
    }
}

/// The configurations to run: one, or one per `--compare` value.
fn configs(args: &Args) -> Result<Vec<(String, config::Config)>, TrainError> {
    let base = raw(args);
    let Some(spec) = &args.compare else {
        let mut r = base;
        resolve_defaults(&mut r);
        return Ok(vec![(String::new(), r.parse()?)]);
    };
    let Some((key, values)) = spec.split_once('=') else {
        return Err(TrainError::Usage(format!("--compare '{spec}': expected OPTION=V1,V2,... (e.g. norm=none,batch)")));
    };
    let key = key.trim().trim_start_matches("--");
    let mut out = Vec::new();
    for v in values.split(',').map(str::trim) {
        if v.is_empty() {
            return Err(TrainError::Usage(format!("--compare '{spec}': an empty value")));
        }
        let mut r = base.clone();
        r.set(key, v)?;
        resolve_defaults(&mut r);
        out.push((format!("{key}={v}"), r.parse()?));
    }
    if out.len() < 2 {
        return Err(TrainError::Usage(format!("--compare '{spec}': give at least two values to compare")));
    }
    Ok(out)
}

fn train_all(args: &Args) -> Result<(), TrainError> {
    let runs = configs(args)?;
    let threads: usize = match args.threads.trim().parse() {
        Ok(0) | Err(_) => {
            return Err(TrainError::Usage(format!(
                "--threads '{}': must be a whole number of at least 1",
                args.threads
            )))
        }
        Ok(n) => n,
    };
    if let Some(p) = &args.plot {
        plot::format_of(p)?;
    }
    if args.save.is_some() && runs.len() > 1 {
        return Err(TrainError::Usage("--save: not with --compare (one model per file)".into()));
    }
    for (flag, value) in [("--hidden", &args.hidden), ("--lr", &args.lr)] {
        if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
            return Err(TrainError::Usage(format!("{flag} '': give a value, or leave the option out for the default")));
        }
    }
    let train_size = match &args.train_size {
        None => None,
        Some(s) => match s.trim().parse::<usize>() {
            Ok(n) if n > 0 => Some(n),
            _ => return Err(TrainError::Usage(format!("--train-size '{s}': must be a whole number of at least 1"))),
        },
    };
    // Before any thread starts: an interrupted write leaves no temporary file.
    crate::signals::remove_temp_files_on_signal();
    // candle's CPU matrix products split their work into as many parts as this
    // variable says (candle reads it at each product), and run them, like
    // normkit's kernels, on rayon's global pool: size both before the first op.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    // The pool may already exist (a second call in one process): then it keeps
    // its size, and the variable above still fixes how candle splits its work.
    let _ = rayon::ThreadPoolBuilder::new().num_threads(threads).build_global();

    let data = match &args.data {
        Some(dir) => data::load_dir(dir, train_size)?,
        None => data::bundled(train_size)?,
    };
    // Before training, not after it (the data, read first, are its inputs).
    check_outputs(args, &data.files)?;
    for (label, cfg) in &runs {
        check_batch(label, cfg, data.train.len())?;
    }
    let pixels = data.rows * data.cols;
    if !args.json {
        say(&format!(
            "data: {} ({} train, {} test, {}x{} pixels, {} classes); {} thread(s)",
            data.source,
            data.train.len(),
            data.test.len(),
            data.rows,
            data.cols,
            data.classes,
            threads
        ))
        .map_err(stdout_error)?;
    }
    let mut results = Vec::new();
    for (label, cfg) in &runs {
        if !args.json {
            say(&describe(label, cfg, pixels, data.classes)).map_err(stdout_error)?;
        }
        let bar = progress_bar(cfg.steps, label);
        let json = args.json;
        let act = format!("{:?}", cfg.activation).to_lowercase();
        let closed = std::cell::RefCell::new(None);
        let on_eval = |e: &Eval| match bar.suspend(|| print_eval(label, &act, e, json)) {
            Ok(()) => true,
            Err(err) => {
                *closed.borrow_mut() = Some(err);
                false
            }
        };
        let on_step = |step: usize, loss: f64| {
            bar.set_position(step as u64);
            if step.is_multiple_of(50) {
                bar.set_message(format!("loss {loss:.4}"));
            }
        };
        let (result, model) = run::train(cfg, &data, label, on_eval, on_step)?;
        bar.finish_and_clear();
        if let Some(e) = closed.take() {
            return Err(stdout_error(e));
        }
        print_final(&result, json).map_err(stdout_error)?;
        if let Some(path) = &args.save {
            save(&model, path)?;
        }
        results.push(result);
    }
    if runs.len() > 1 && !args.json {
        print_table(&results).map_err(stdout_error)?;
    }
    if let Some(path) = &args.plot {
        let title = match &args.compare {
            Some(c) => format!("normkit train --compare {c}"),
            None => format!("normkit train: {}", describe("", &runs[0].1, pixels, data.classes)),
        };
        plot::draw(path, &results, &title, runs[0].1.activation)?;
        if !args.json {
            say(&format!("plot: {}", path.display())).map_err(stdout_error)?;
        }
    }
    Ok(())
}

/// Refuses, before training rather than after it, a `--plot` or `--save`
/// that could not be written (no such directory, a directory in its place, a
/// directory where no file can be created), that names the other's file, or
/// that would replace one of the `inputs` read.
fn check_outputs(args: &Args, inputs: &[PathBuf]) -> Result<(), TrainError> {
    use normkit_scale::atomic::{dir_of, same_file};
    let outputs: Vec<(&str, &Path)> = [("--plot", &args.plot), ("--save", &args.save)]
        .into_iter()
        .filter_map(|(flag, path)| Some((flag, path.as_deref()?)))
        .collect();
    if let [(_, plot), (_, saved)] = outputs[..] {
        if same_file(plot, saved) {
            return Err(TrainError::Usage(format!("--plot and --save name the same file {}", plot.display())));
        }
    }
    for (flag, path) in outputs {
        let refuse = |why: String| Err(TrainError::Usage(format!("{flag} {}: {why}", path.display())));
        let dir = dir_of(path);
        if !dir.is_dir() {
            return Err(TrainError::Usage(format!("{flag}: no directory {}", dir.display())));
        }
        if path.is_dir() {
            return refuse("is a directory".into());
        }
        if let Some(input) = inputs.iter().find(|input| same_file(path, input)) {
            return refuse(format!("is an input of this run ({})", input.display()));
        }
        // The atomic write's temporary file, created and removed at once.
        if let Err(e) = AtomicFile::new(path) {
            return refuse(format!("cannot create a file in {} ({e})", dir.display()));
        }
    }
    Ok(())
}

/// Refuses a minibatch larger than the training set (it was cut to the set's
/// size unannounced; with one training sample BatchNorm then failed after the
/// first evaluation, where the options refuse `--batch-size 1` with it).
fn check_batch(label: &str, cfg: &config::Config, train: usize) -> Result<(), TrainError> {
    if cfg.batch_size > train {
        let prefix = if label.is_empty() { String::new() } else { format!("[{label}] ") };
        return Err(TrainError::Usage(format!(
            "{prefix}--batch-size {}: the training set has {train} samples",
            cfg.batch_size
        )));
    }
    Ok(())
}

/// One line describing a configuration.
fn describe(label: &str, cfg: &config::Config, inputs: usize, classes: usize) -> String {
    let widths: Vec<String> = cfg.hidden.iter().map(|h| h.to_string()).collect();
    let prefix = if label.is_empty() { String::new() } else { format!("[{label}] ") };
    format!(
        "{prefix}{:?} {inputs}-{}-{classes}, norm {:?}, {:?}, {:?} lr {}, batch {}, {} steps, init std {}, seed {}{}",
        cfg.arch,
        widths.join("-"),
        cfg.norm,
        cfg.activation,
        cfg.optimizer,
        cfg.lr,
        cfg.batch_size,
        cfg.steps,
        cfg.init_std,
        cfg.seed,
        if cfg.dropout > 0.0 { format!(", dropout {}", cfg.dropout) } else { String::new() }
    )
    .to_lowercase()
    .replace("optimizer::", "")
}

/// One evaluation: a JSON line, or a line of text; `act` names the nonlinearity
/// whose input the percentiles describe.
fn print_eval(label: &str, act: &str, e: &Eval, json: bool) -> std::io::Result<()> {
    if json {
        let mut fields = Vec::new();
        if !label.is_empty() {
            fields.push(("config", serde_json::Value::from(label)));
        }
        fields.extend([
            ("step", e.step.into()),
            ("train_loss", json_f64(e.train_loss)),
            ("test_accuracy", json_f64(e.test_accuracy)),
            ("probe_p15", json_f64(e.probe[0])),
            ("probe_p50", json_f64(e.probe[1])),
            ("probe_p85", json_f64(e.probe[2])),
        ]);
        say(&json_object(&fields))
    } else {
        let prefix = if label.is_empty() { String::new() } else { format!("[{label}] ") };
        say(&format!(
            "{prefix}step {:>6}  train loss {:.4}  test accuracy {:.4}  {act} input p15/p50/p85 {:+.3}/{:+.3}/{:+.3}",
            e.step, e.train_loss, e.test_accuracy, e.probe[0], e.probe[1], e.probe[2]
        ))
    }
}

fn print_final(r: &RunResult, json: bool) -> std::io::Result<()> {
    if json {
        let mut fields = Vec::new();
        if !r.label.is_empty() {
            fields.push(("config", serde_json::Value::from(r.label.as_str())));
        }
        fields.push(("final_test_accuracy", json_f64(r.final_test_accuracy())));
        fields.push(("wall_s", json_f64((r.wall_s * 1000.0).round() / 1000.0)));
        say(&json_object(&fields))
    } else {
        let prefix = if r.label.is_empty() { String::new() } else { format!("[{}] ", r.label) };
        say(&format!("{prefix}final test accuracy {:.4}, {:.1} s", r.final_test_accuracy(), r.wall_s))
    }
}

/// A one-line JSON object with its keys in the given order.
fn json_object(fields: &[(&str, serde_json::Value)]) -> String {
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("{}:{v}", serde_json::Value::from(*k))).collect();
    format!("{{{}}}", body.join(","))
}

/// A JSON number (JSON has no NaN or infinity: those become null).
fn json_f64(v: f64) -> serde_json::Value {
    serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// Test accuracy at each evaluation, one column per configuration.
fn print_table(results: &[RunResult]) -> std::io::Result<()> {
    let width = results.iter().map(|r| r.label.len()).max().unwrap_or(8).max(8);
    let mut head = format!("{:>6}", "step");
    for r in results {
        head.push_str(&format!("  {:>width$}", r.label));
    }
    say(&format!("\ntest accuracy\n{head}"))?;
    // Every step any run evaluated at (runs of other --steps or --eval-every
    // evaluate at other steps), each run's accuracy there or "-".
    let steps: std::collections::BTreeSet<usize> =
        results.iter().flat_map(|r| r.evals.iter().map(|e| e.step)).collect();
    for step in steps {
        let mut line = format!("{step:>6}");
        for r in results {
            match r.evals.iter().find(|e| e.step == step) {
                Some(e) => line.push_str(&format!("  {:>width$.4}", e.test_accuracy)),
                None => line.push_str(&format!("  {:>width$}", "-")),
            }
        }
        say(&line)?;
    }
    let mut line = format!("{:>6}", "wall s");
    for r in results {
        line.push_str(&format!("  {:>width$.1}", r.wall_s));
    }
    say(&line)
}

/// Saves the model's variables to a safetensors file atomically.
fn save(model: &model::Model, path: &Path) -> Result<(), TrainError> {
    // Serialized here rather than by `VarMap::save`, whose temporary file
    // (safetensors' own) keeps mode 0600 whatever the umask.
    let vars = model.varmap.data().lock().map_err(|_| TrainError::Run("the model's variables are poisoned".into()))?;
    let tensors = vars.iter().map(|(name, var)| (name.as_str(), var.as_tensor()));
    let bytes = safetensors::tensor::serialize(tensors, None)
        .map_err(|e| TrainError::Run(format!("cannot encode {}: {e}", path.display())))?;
    drop(vars);
    write_atomically(path, &bytes)
}

/// Writes `bytes` to `path` atomically (a temporary file beside it, then a
/// rename; [`normkit_scale::atomic::AtomicFile`]): a failed run leaves neither
/// a half file nor a temporary one, and the file gets `File::create`'s mode.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let cannot = |e: std::io::Error| TrainError::Run(format!("cannot write {}: {e}", path.display()));
    let out = AtomicFile::new(path).map_err(cannot)?;
    (&mut out.file()).write_all(bytes).map_err(cannot)?;
    out.commit().map_err(cannot)
}

/// A one-line progress bar on stderr (steps done, elapsed time, time left and the
/// latest minibatch loss), drawn only when stderr is a terminal.
fn progress_bar(steps: usize, label: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let style =
        indicatif::ProgressStyle::with_template("{prefix}[{bar:30}] {pos}/{len} steps  {msg}  {elapsed} (eta {eta})")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    let prefix = if label.is_empty() { String::new() } else { format!("{label} ") };
    indicatif::ProgressBar::new(steps as u64).with_style(style).with_prefix(prefix)
}

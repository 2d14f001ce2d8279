//! `normkit scale fit|transform|fit-transform|inverse`: scikit-learn's scalers
//! on CSV and Parquet files, streamed (see the crate normkit-scale).
//!
//! Every error is one line on stderr and exit status 2; nothing is written then.

use clap::{Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use normkit_scale::io::{Direction, Format, Table};
use normkit_scale::{fit, FitOptions, Fitted, Norm, ParamsFile, ScaleError, ScalerSpec};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// Scale numeric columns of a CSV or Parquet file with scikit-learn's scalers.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

/// What to do.
#[derive(Subcommand, Debug)]
pub enum Action {
    /// Fit a scaler on INPUT and save its parameters (--params FILE.json).
    Fit {
        #[command(flatten)]
        input: InputArgs,
        #[command(flatten)]
        scaler: ScalerArgs,
        /// Where to save the fitted parameters (JSON).
        #[arg(long, value_name = "FILE.json")]
        params: PathBuf,
    },
    /// Scale INPUT into OUTPUT with parameters saved by `fit`.
    Transform {
        #[command(flatten)]
        input: InputArgs,
        #[command(flatten)]
        output: OutputArgs,
        /// The fitted parameters to apply.
        #[arg(long, value_name = "FILE.json")]
        params: PathBuf,
    },
    /// Fit on INPUT and scale it into OUTPUT (and save the parameters with --params).
    FitTransform {
        #[command(flatten)]
        input: InputArgs,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        scaler: ScalerArgs,
        /// Also save the fitted parameters here.
        #[arg(long, value_name = "FILE.json")]
        params: Option<PathBuf>,
    },
    /// Undo a transform: map scaled INPUT back into OUTPUT with saved parameters.
    Inverse {
        #[command(flatten)]
        input: InputArgs,
        #[command(flatten)]
        output: OutputArgs,
        /// The fitted parameters whose transform to undo.
        #[arg(long, value_name = "FILE.json")]
        params: PathBuf,
    },
}

/// The file to read.
#[derive(clap::Args, Debug)]
pub struct InputArgs {
    /// The input file (.csv with a header line, or .parquet).
    pub input: PathBuf,
    /// The input's format, when its extension does not tell.
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// Columns to scale, comma separated (default: every numeric column; the
    /// others pass through untouched and in place).
    #[arg(long, value_delimiter = ',')]
    pub columns: Option<Vec<String>>,
    /// Rows per batch (memory use grows with it).
    #[arg(long, default_value_t = normkit_scale::io::DEFAULT_BATCH_ROWS, hide = true)]
    pub batch_rows: usize,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

/// The file to write.
#[derive(clap::Args, Debug)]
pub struct OutputArgs {
    /// The output file, written atomically (never the input).
    #[arg(long, short)]
    pub output: PathBuf,
    /// The output's format, when its extension does not tell (default: the input's).
    #[arg(long, value_enum)]
    pub output_format: Option<FormatArg>,
}

/// A file format.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FormatArg {
    /// Comma-separated values with a header line.
    Csv,
    /// Apache Parquet.
    Parquet,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::Csv => Format::Csv,
            FormatArg::Parquet => Format::Parquet,
        }
    }
}

/// The scalers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScalerKind {
    /// StandardScaler: (x - mean_) / scale_.
    Standard,
    /// MinMaxScaler: x * scale_ + min_.
    Minmax,
    /// MaxAbsScaler: x / max_abs_.
    Maxabs,
    /// RobustScaler: (x - median) / (q_hi - q_lo).
    Robust,
    /// Normalizer: each row over the selected columns to unit norm.
    Normalizer,
}

/// A norm of the normalizer.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum NormArg {
    /// Sum of absolute values.
    L1,
    /// Euclidean norm.
    L2,
    /// Largest absolute value.
    Max,
}

/// The scaler and its parameters, named as scikit-learn's constructor arguments.
#[derive(clap::Args, Debug)]
pub struct ScalerArgs {
    /// Which scaler.
    #[arg(long, value_enum)]
    pub scaler: ScalerKind,
    /// standard: subtract the mean [default: true].
    #[arg(long, value_name = "BOOL")]
    pub with_mean: Option<bool>,
    /// standard: divide by the standard deviation [default: true].
    #[arg(long, value_name = "BOOL")]
    pub with_std: Option<bool>,
    /// minmax: target range LO,HI [default: 0,1].
    #[arg(long, value_delimiter = ',', value_name = "LO,HI", allow_hyphen_values = true)]
    pub feature_range: Option<Vec<f64>>,
    /// minmax: clip transformed values into the feature range [default: false].
    #[arg(long, value_name = "BOOL")]
    pub clip: Option<bool>,
    /// robust: subtract the median [default: true].
    #[arg(long, value_name = "BOOL")]
    pub with_centering: Option<bool>,
    /// robust: divide by the quantile range [default: true].
    #[arg(long, value_name = "BOOL")]
    pub with_scaling: Option<bool>,
    /// robust: percentiles Q_LO,Q_HI [default: 25,75].
    #[arg(long, value_delimiter = ',', value_name = "Q_LO,Q_HI")]
    pub quantile_range: Option<Vec<f64>>,
    /// robust: rescale so that normal data ends with unit variance [default: false].
    #[arg(long, value_name = "BOOL")]
    pub unit_variance: Option<bool>,
    /// robust: approximate quantiles in one pass with a KLL sketch per column
    /// (Apache DataSketches, k = 200): each is the value at a rank within 1.33%
    /// of the column's count of numpy's, with 99% confidence [default: exact,
    /// in two or more passes].
    #[arg(long)]
    pub approx: bool,
    /// normalizer: which norm [default: l2].
    #[arg(long, value_enum)]
    pub norm: Option<NormArg>,
}

impl ScalerArgs {
    /// The specification, refusing a parameter of another scaler.
    pub fn spec(&self) -> Result<ScalerSpec, ScaleError> {
        use ScalerKind::*;
        let given: [(&str, bool, ScalerKind); 10] = [
            ("--with-mean", self.with_mean.is_some(), Standard),
            ("--with-std", self.with_std.is_some(), Standard),
            ("--feature-range", self.feature_range.is_some(), Minmax),
            ("--clip", self.clip.is_some(), Minmax),
            ("--with-centering", self.with_centering.is_some(), Robust),
            ("--with-scaling", self.with_scaling.is_some(), Robust),
            ("--quantile-range", self.quantile_range.is_some(), Robust),
            ("--unit-variance", self.unit_variance.is_some(), Robust),
            ("--approx", self.approx, Robust),
            ("--norm", self.norm.is_some(), Normalizer),
        ];
        for (flag, set, owner) in given {
            if set && owner != self.scaler {
                return Err(ScaleError::InvalidParam {
                    name: flag.to_owned(),
                    reason: format!("is a parameter of --scaler {owner:?}, not {:?}", self.scaler).to_lowercase(),
                });
            }
        }
        for (flag, v) in [("--feature-range", &self.feature_range), ("--quantile-range", &self.quantile_range)] {
            if v.as_ref().is_some_and(|v| v.len() != 2) {
                return Err(ScaleError::InvalidParam {
                    name: flag.to_owned(),
                    reason: format!("takes two numbers, LO,HI; got {v:?}"),
                });
            }
        }
        let pair = |v: &Option<Vec<f64>>, default: (f64, f64)| match v.as_deref() {
            Some([a, b]) => (*a, *b),
            _ => default,
        };
        let spec = match self.scaler {
            Standard => ScalerSpec::Standard {
                with_mean: self.with_mean.unwrap_or(true),
                with_std: self.with_std.unwrap_or(true),
            },
            Minmax => ScalerSpec::MinMax {
                feature_range: pair(&self.feature_range, (0.0, 1.0)),
                clip: self.clip.unwrap_or(false),
            },
            Maxabs => ScalerSpec::MaxAbs,
            Robust => ScalerSpec::Robust {
                with_centering: self.with_centering.unwrap_or(true),
                with_scaling: self.with_scaling.unwrap_or(true),
                quantile_range: pair(&self.quantile_range, (25.0, 75.0)),
                unit_variance: self.unit_variance.unwrap_or(false),
            },
            Normalizer => ScalerSpec::Normalizer {
                norm: match self.norm.unwrap_or(NormArg::L2) {
                    NormArg::L1 => Norm::L1,
                    NormArg::L2 => Norm::L2,
                    NormArg::Max => Norm::Max,
                },
            },
        };
        spec.validate()?;
        Ok(spec)
    }
}

/// Runs the action; exit status 0 on success, 2 on any error (one line on stderr).
pub fn run(args: &Args) -> ExitCode {
    // Before rayon's threads start: a SIGINT mid-write removes the temporary file.
    crate::signals::remove_temp_files_on_signal();
    match run_action(&args.action) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("normkit scale: {e}");
            ExitCode::from(2)
        }
    }
}

/// Files smaller than this get no progress bar.
const PROGRESS_MIN_BYTES: u64 = 32 << 20;

fn open_table(a: &InputArgs) -> Result<(Table, Option<ProgressBar>), ScaleError> {
    let format = Format::of(&a.input, a.format.map(Into::into))?;
    let mut table = Table::open(&a.input, format)?;
    table.batch_rows = a.batch_rows.max(1);
    let big = std::fs::metadata(&a.input).map_or(0, |m| m.len()) >= PROGRESS_MIN_BYTES;
    let bar = (!a.quiet && big).then(|| {
        let template = match format {
            Format::Csv => "{msg:<12} [{bar:40}] {bytes}/{total_bytes} ({eta})",
            Format::Parquet => "{msg:<12} [{bar:40}] {pos}/{len} rows ({eta})",
        };
        let bar = ProgressBar::new(0);
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    });
    if let Some(bar) = &bar {
        let b = bar.clone();
        table.progress = Some(Arc::new(move |done, total| {
            b.set_length(total);
            b.set_position(done);
        }));
    }
    Ok((table, bar))
}

fn stage(bar: &Option<ProgressBar>, msg: &'static str) {
    if let Some(b) = bar {
        b.set_position(0);
        b.set_message(msg);
    }
}

fn out_format(input: &Table, o: &OutputArgs) -> Format {
    o.output_format.map(Into::into).or_else(|| Format::from_extension(&o.output)).unwrap_or(input.format())
}

fn fit_table(
    table: &Table,
    a: &InputArgs,
    s: &ScalerArgs,
    bar: &Option<ProgressBar>,
    transform_follows: bool,
) -> Result<(Fitted, Vec<usize>), ScaleError> {
    let spec = s.spec()?;
    let sel = table.select(a.columns.as_deref())?;
    if let (ScalerSpec::Normalizer { norm }, true) = (&spec, transform_follows) {
        // Stateless: the fit would only check for NaN and infinity, which the
        // transform pass checks anyway; skip that extra read of the file.
        return Ok((Fitted::normalizer(*norm, sel.len()), sel));
    }
    stage(bar, "fit");
    let opts = FitOptions { approx: s.approx, ..FitOptions::default() };
    let (fitted, _) = fit(&spec, &mut table.source(&sel), opts).map_err(|e| match e {
        ScaleError::Empty(m) => ScaleError::Empty(format!("{}: {m}", table.path().display())),
        ScaleError::Overflow { column } => match sel.get(column).and_then(|&j| table.columns().get(j)) {
            Some(c) => ScaleError::Format {
                file: table.path().display().to_string(),
                reason: format!("column {:?}: {}", c.name, normkit_scale::error::OVERFLOW_REASON),
            },
            None => ScaleError::Overflow { column },
        },
        e => e,
    })?;
    Ok((fitted, sel))
}

fn save_params(table: &Table, fitted: &Fitted, sel: &[usize], path: &Path) -> Result<(), ScaleError> {
    let cols = table.columns();
    let names = sel.iter().filter_map(|&j| cols.get(j)).map(|c| c.name.clone()).collect();
    let dtypes = sel.iter().filter_map(|&j| cols.get(j)).map(|c| c.dtype.clone()).collect();
    ParamsFile::new(fitted, names, dtypes)?.save(path)
}

/// The fitted scaler of a parameters file and its columns in `table`; `--columns`,
/// if given, must name the same columns.
fn load_params(table: &Table, a: &InputArgs, path: &Path) -> Result<(Fitted, Vec<usize>), ScaleError> {
    let p = ParamsFile::load(path)?;
    let fitted = p.fitted(path)?;
    if let Some(cols) = &a.columns {
        if *cols != p.feature_names_in_ {
            return Err(ScaleError::Mismatch(format!(
                "--columns {} differs from the columns {} was fitted on: {}",
                cols.join(","),
                path.display(),
                p.feature_names_in_.join(",")
            )));
        }
    }
    let sel = p.columns_in(table, path)?;
    Ok((fitted, sel))
}

/// Refuses a `--params` file that is the input or the output: saving the
/// parameters would overwrite the one, or replace the other.
fn check_params_path(params: &Path, input: &Path, output: Option<&Path>) -> Result<(), ScaleError> {
    let clash = if normkit_scale::atomic::same_file(params, input) {
        Some("the input file")
    } else if output.is_some_and(|o| normkit_scale::atomic::same_file(params, o)) {
        Some("the output file")
    } else {
        None
    };
    match clash {
        Some(what) => Err(ScaleError::InvalidParam {
            name: "--params".into(),
            reason: format!("{} is {what}: give the parameters a file of their own", params.display()),
        }),
        None => Ok(()),
    }
}

fn run_action(action: &Action) -> Result<(), ScaleError> {
    match action {
        Action::Fit { input, params, .. } => check_params_path(params, &input.input, None)?,
        Action::FitTransform { input, output, params: Some(params), .. } => {
            check_params_path(params, &input.input, Some(&output.output))?
        }
        Action::FitTransform { params: None, .. } => {}
        Action::Transform { input, output, params } | Action::Inverse { input, output, params } => {
            check_params_path(params, &input.input, Some(&output.output))?
        }
    }
    match action {
        Action::Fit { input, scaler, params } => {
            let (table, bar) = open_table(input)?;
            let (fitted, sel) = fit_table(&table, input, scaler, &bar, false)?;
            save_params(&table, &fitted, &sel, params)?;
            finish(bar);
        }
        Action::FitTransform { input, output, scaler, params } => {
            let (table, bar) = open_table(input)?;
            let (fitted, sel) = fit_table(&table, input, scaler, &bar, true)?;
            stage(&bar, "transform");
            table.apply(&sel, &fitted, Direction::Transform, &output.output, out_format(&table, output))?;
            if let Some(p) = params {
                save_params(&table, &fitted, &sel, p)?;
            }
            finish(bar);
        }
        Action::Transform { input, output, params } | Action::Inverse { input, output, params } => {
            let direction =
                if matches!(action, Action::Inverse { .. }) { Direction::Inverse } else { Direction::Transform };
            let (table, bar) = open_table(input)?;
            let (fitted, sel) = load_params(&table, input, params)?;
            if direction == Direction::Inverse && matches!(fitted.spec, ScalerSpec::Normalizer { .. }) {
                return Err(ScaleError::InvalidParam {
                    name: "scaler".into(),
                    reason: "the normalizer has no inverse (row norms are not kept)".into(),
                });
            }
            stage(&bar, if direction == Direction::Inverse { "inverse" } else { "transform" });
            table.apply(&sel, &fitted, direction, &output.output, out_format(&table, output))?;
            finish(bar);
        }
    }
    Ok(())
}

fn finish(bar: Option<ProgressBar>) {
    if let Some(b) = bar {
        b.finish_and_clear();
    }
}

//! Fitting as a fold over batches, in as many passes over the data as the scaler
//! needs: one for the standard, min-max and max-abs scalers; two for the robust
//! scaler (statistics and a histogram of the float bits, then the values inside
//! the buckets that hold the wanted ranks; rarely more, see [`crate::quantile`]),
//! or one when its quantiles may be approximate ([`FitOptions::approx`]: a KLL
//! sketch per column, see [`crate::sketch`]).

use crate::error::{first_refused, Result, ScaleError};
use crate::fitted::{Fitted, RobustStats};
use crate::quantile::{median_ranks, numpy_lerp, percentile_ranks, KeyHistogram, RankSelector};
use crate::sketch::{ApproxQuantiles, ColumnSketch, DEFAULT_K};
use crate::spec::ScalerSpec;
use crate::stats::{ColumnStats, FitState};
use rayon::prelude::*;

/// Data that can be read from the start any number of times, batch by batch.
/// Each batch holds the selected columns, one `Vec<f64>` per column (NaN =
/// missing), all of one length.
pub trait BatchSource {
    /// Number of selected columns.
    fn n_columns(&self) -> usize;

    /// Reads the data once from the start, calling `f` with each batch.
    fn pass(&mut self, f: &mut dyn FnMut(&[Vec<f64>]) -> Result<()>) -> Result<()>;
}

/// A matrix in memory, served in batches of `batch_rows` rows.
#[derive(Clone, Debug)]
pub struct MemorySource {
    columns: Vec<Vec<f64>>,
    batch_rows: usize,
}

impl MemorySource {
    /// From a row-major `rows × cols` matrix.
    pub fn from_row_major(data: &[f64], cols: usize, batch_rows: usize) -> Self {
        let rows = data.len().checked_div(cols).unwrap_or(0);
        let columns = (0..cols).map(|j| (0..rows).map(|i| data[i * cols + j]).collect()).collect();
        MemorySource { columns, batch_rows: batch_rows.max(1) }
    }

    /// From columns (all of one length).
    pub fn from_columns(columns: Vec<Vec<f64>>, batch_rows: usize) -> Self {
        MemorySource { columns, batch_rows: batch_rows.max(1) }
    }
}

impl BatchSource for MemorySource {
    fn n_columns(&self) -> usize {
        self.columns.len()
    }

    fn pass(&mut self, f: &mut dyn FnMut(&[Vec<f64>]) -> Result<()>) -> Result<()> {
        let rows = self.columns.first().map_or(0, Vec::len);
        let mut start = 0;
        while start < rows {
            let end = (start + self.batch_rows).min(rows);
            let batch: Vec<Vec<f64>> = self.columns.iter().map(|c| c[start..end].to_vec()).collect();
            f(&batch)?;
            start = end;
        }
        Ok(())
    }
}

/// Options of [`fit`].
#[derive(Clone, Copy, Debug)]
pub struct FitOptions {
    /// Values the robust scaler's quantile search may collect in one pass, over
    /// all columns together, before refining with another histogram pass
    /// instead (memory `8 · quantile_cap` bytes; see [`RankSelector`]).
    pub quantile_cap: u64,
    /// Approximate the robust scaler's quantiles in the first (and only) pass
    /// with a KLL sketch per column of parameter [`FitOptions::sketch_k`],
    /// instead of selecting them exactly in further passes. Each quantile is
    /// then the value at a rank within `eps · n` (+1) of numpy's, with 99%
    /// confidence, `eps` = [`crate::sketch::normalized_rank_error`]`(k)` (1.33%
    /// for k = 200); the fit records it in [`Fitted::quantiles`]. No effect on
    /// the other scalers.
    pub approx: bool,
    /// The KLL sketch's `k` for [`FitOptions::approx`] (8 to 65535; default
    /// 200). Memory: about `3k · 8` bytes per column.
    pub sketch_k: u16,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions { quantile_cap: RankSelector::DEFAULT_CAP, approx: false, sketch_k: DEFAULT_K }
    }
}

/// What a fit did, for reporting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FitReport {
    /// Passes over the data.
    pub passes: u32,
}

/// One column's first-pass accumulator: statistics and, for quantiles, the
/// histogram of the top bits of its values (exact) or a sketch (approximate).
#[derive(Clone, Debug, Default)]
struct FirstPass {
    stats: ColumnStats,
    hist: Option<KeyHistogram>,
    sketch: Option<ColumnSketch>,
}

/// Fits `spec` on the data of `source`, columns in parallel within each batch.
///
/// Infinite values are refused, as by scikit-learn, with
/// [`ScaleError::NonFinite`] (row counted from the start of the data); the
/// normalizer also refuses NaN. Other scalers ignore NaN (missing values).
pub fn fit(spec: &ScalerSpec, source: &mut dyn BatchSource, opts: FitOptions) -> Result<(Fitted, FitReport)> {
    spec.validate()?;
    let n = source.n_columns();
    if !spec.needs_fit() {
        if let ScalerSpec::Normalizer { norm } = spec {
            // Stateless, but scikit-learn's `Normalizer.fit` still validates its
            // input: NaN and infinity are refused, so one pass checks them.
            let mut rows = 0u64;
            source.pass(&mut |batch| {
                first_refused(batch, rows + 1, |x| !x.is_finite())?;
                rows += batch.first().map_or(0, Vec::len) as u64;
                Ok(())
            })?;
            return Ok((Fitted::normalizer(*norm, n), FitReport { passes: 1 }));
        }
    }
    let quantiles = spec.needs_quantiles();
    let approx = quantiles && opts.approx;
    let mut acc = Vec::with_capacity(n);
    for _ in 0..n {
        acc.push(FirstPass {
            stats: ColumnStats::default(),
            hist: (quantiles && !approx).then(KeyHistogram::default),
            sketch: if approx { Some(ColumnSketch::new(opts.sketch_k)?) } else { None },
        });
    }
    let mut rows = 0u64;
    source.pass(&mut |batch| {
        // scikit-learn refuses infinity in fit ("Input X contains infinity").
        first_refused(batch, rows + 1, f64::is_infinite)?;
        rows += batch.first().map_or(0, Vec::len) as u64;
        acc.par_iter_mut().zip(batch.par_iter()).for_each(|(a, xs)| {
            let mut scratch = Vec::new();
            a.stats.extend_from(xs, &mut scratch);
            if let Some(h) = a.hist.as_mut() {
                h.extend_from(xs);
            }
            if let Some(s) = a.sketch.as_mut() {
                s.extend_from(xs);
            }
        });
        Ok(())
    })?;
    if rows == 0 {
        return Err(ScaleError::Empty("no rows to fit (scikit-learn needs at least 1 sample)".into()));
    }
    let mut report = FitReport { passes: 1 };
    let mut hists = Vec::with_capacity(n);
    let mut sketches = Vec::with_capacity(n);
    let mut columns = Vec::with_capacity(n);
    for a in acc {
        columns.push(a.stats);
        if let Some(h) = a.hist {
            hists.push(h);
        }
        if let Some(s) = a.sketch {
            sketches.push(s);
        }
    }
    let state = FitState { rows, columns };
    let robust = match spec {
        ScalerSpec::Robust { quantile_range, .. } if approx => Some(approx_robust_stats(&sketches, *quantile_range)),
        ScalerSpec::Robust { quantile_range, .. } if quantiles => {
            let (r, passes) = robust_stats(&state, hists, *quantile_range, source, opts)?;
            report.passes += passes;
            Some(r)
        }
        ScalerSpec::Robust { .. } => Some(RobustStats::default()),
        _ => None,
    };
    let mut fitted = Fitted::from_stats(spec, &state, robust.as_ref())?;
    if approx {
        let k = sketches.iter().map(|s| s.k()).min().unwrap_or(opts.sketch_k);
        fitted.quantiles = Some(ApproxQuantiles::kll(k));
    }
    Ok((fitted, report))
}

/// Median and the two percentiles of every column, approximately, from the
/// columns' sketches (NaN for a column with no value).
pub fn approx_robust_stats(sketches: &[ColumnSketch], (qlo, qhi): (f64, f64)) -> RobustStats {
    let mut r = RobustStats::default();
    for s in sketches {
        let p = s.percentiles(&[qlo, qhi]);
        let at = |i: usize| p.get(i).copied().unwrap_or(f64::NAN);
        r.median.push(s.median());
        r.q_lo.push(at(0));
        r.q_hi.push(at(1));
    }
    r
}

/// Median and the two percentiles of every column, exactly, in further passes.
fn robust_stats(
    state: &FitState,
    hists: Vec<KeyHistogram>,
    (qlo, qhi): (f64, f64),
    source: &mut dyn BatchSource,
    opts: FitOptions,
) -> Result<(RobustStats, u32)> {
    let counts: Vec<u64> = state.columns.iter().map(|c| c.moments.count()).collect();
    let ranks: Vec<Vec<u64>> = counts
        .iter()
        .map(|&n| {
            if n == 0 {
                return Vec::new();
            }
            let (m0, m1) = median_ranks(n);
            let (a0, a1, _) = percentile_ranks(n, qlo);
            let (b0, b1, _) = percentile_ranks(n, qhi);
            vec![m0, m1, a0, a1, b0, b1]
        })
        .collect();
    let mut sel = RankSelector::after_first_pass(hists, &ranks, opts.quantile_cap);
    let mut passes = 0;
    while !sel.done() {
        source.pass(&mut |batch| {
            sel.observe_batch(batch);
            Ok(())
        })?;
        sel.finish_pass();
        passes += 1;
    }
    let mut r = RobustStats::default();
    for (c, &n) in counts.iter().enumerate() {
        if n == 0 {
            r.median.push(f64::NAN);
            r.q_lo.push(f64::NAN);
            r.q_hi.push(f64::NAN);
            continue;
        }
        let v = |rank: u64| sel.value(c, rank).unwrap_or(f64::NAN);
        let (m0, m1) = median_ranks(n);
        r.median.push((v(m0) + v(m1)) / 2.0);
        let (a0, a1, ta) = percentile_ranks(n, qlo);
        r.q_lo.push(numpy_lerp(v(a0), v(a1), ta));
        let (b0, b1, tb) = percentile_ranks(n, qhi);
        r.q_hi.push(numpy_lerp(v(b0), v(b1), tb));
    }
    Ok((r, passes))
}

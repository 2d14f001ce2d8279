//! Fitting a file streamed in batches of 1, 7 and 1000 rows gives the parameters
//! of one pass over all rows, for CSV and Parquet, with offsets of 1e15,
//! constant columns and missing values; and both agree with a plain f64
//! reference written from the formulas.

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use normkit_scale::io::{Format, Table};
use normkit_scale::{fit, FitOptions, Fitted, SamplesSeen, ScalerSpec};
use parquet::arrow::ArrowWriter;
use rand::{Rng, SeedableRng};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

/// Columns (name, values; NaN = missing) of the test file: `rows` rows.
fn columns(rows: usize, seed: u64) -> Vec<(&'static str, Vec<f64>)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let miss = |p: f64, x: f64, rng: &mut rand::rngs::StdRng| if rng.random::<f64>() < p { f64::NAN } else { x };
    let offset: Vec<f64> = (0..rows).map(|_| 1e15 + rng.random_range(-50..50) as f64).collect();
    let offset_missing: Vec<f64> = offset.iter().map(|&x| miss(0.1, x, &mut rng)).collect();
    let noisy: Vec<f64> = (0..rows).map(|_| miss(0.05, 1e6 + rng.random::<f64>() * 1e-3, &mut rng)).collect();
    // Wide enough that scikit-learn does not call it constant (std > n·1e15·eps).
    let wide: Vec<f64> = (0..rows).map(|_| 1e15 + rng.random_range(-5000..5000) as f64).collect();
    let normal: Vec<f64> = (0..rows).map(|_| rng.random_range(-3.0..3.0) * 10.0).collect();
    vec![
        ("offset_1e15", offset),
        ("offset_1e15_missing", offset_missing),
        ("offset_1e15_wide", wide),
        ("constant_1e15", vec![1e15; rows]),
        ("constant_tenth", (0..rows).map(|i| if i % 3 == 1 { f64::NAN } else { 0.1 }).collect()),
        ("mean_1e6_spread_1e-3", noisy),
        ("plain", normal),
    ]
}

fn write_csv(path: &Path, cols: &[(&str, Vec<f64>)]) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let names: Vec<&str> = cols.iter().map(|c| c.0).collect();
    writeln!(f, "label,{}", names.join(",")).unwrap();
    for i in 0..cols[0].1.len() {
        let fields: Vec<String> =
            cols.iter().map(|c| if c.1[i].is_nan() { String::new() } else { format!("{:?}", c.1[i]) }).collect();
        writeln!(f, "r{i},{}", fields.join(",")).unwrap();
    }
}

fn write_parquet(path: &Path, cols: &[(&str, Vec<f64>)]) {
    let rows = cols[0].1.len();
    let mut fields: Vec<(&str, ArrayRef)> =
        vec![("label", Arc::new(StringArray::from_iter_values((0..rows).map(|i| format!("r{i}")))))];
    for (name, v) in cols {
        // Missing values as nulls in half the columns, as NaN in the others.
        let arr: ArrayRef = if name.len() % 2 == 0 {
            Arc::new(Float64Array::from(v.iter().map(|&x| (!x.is_nan()).then_some(x)).collect::<Vec<_>>()))
        } else {
            Arc::new(Float64Array::from(v.clone()))
        };
        fields.push((name, arr));
    }
    let batch = RecordBatch::try_from_iter(fields).unwrap();
    let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), None).unwrap();
    // Several row groups, so that reading crosses them.
    for start in (0..rows).step_by(333) {
        w.write(&batch.slice(start, 333.min(rows - start))).unwrap();
    }
    w.close().unwrap();
}

fn fit_file(path: &Path, format: Format, spec: &ScalerSpec, batch_rows: usize, cap: u64) -> Fitted {
    let mut t = Table::open(path, format).unwrap();
    t.batch_rows = batch_rows;
    let sel = t.select(None).unwrap();
    assert_eq!(sel.len(), 7, "the label column is not numeric, the others are");
    fit(spec, &mut t.source(&sel), FitOptions { quantile_cap: cap, ..FitOptions::default() }).unwrap().0
}

/// The plain f64 reference of one column: mean and biased variance by two passes
/// about the first value (exact enough: the shifted values are small), min, max,
/// and numpy's linear-interpolation percentile from the sorted values.
struct Reference {
    n: usize,
    mean: f64,
    var: f64,
    /// Mean of |x - first value|: the scale of the rounding errors of a sum.
    abs_dev: f64,
    sorted: Vec<f64>,
}

impl Reference {
    fn new(xs: &[f64]) -> Self {
        let v: Vec<f64> = xs.iter().copied().filter(|x| !x.is_nan()).collect();
        let n = v.len();
        let shift = v[0];
        let m = v.iter().map(|x| x - shift).sum::<f64>() / n as f64;
        let var = v.iter().map(|x| (x - shift - m).powi(2)).sum::<f64>() / n as f64;
        let abs_dev = v.iter().map(|x| (x - shift).abs()).sum::<f64>() / n as f64;
        let mut sorted = v.clone();
        sorted.sort_by(f64::total_cmp);
        Reference { n, mean: shift + m, var, abs_dev, sorted }
    }

    fn percentile(&self, q: f64) -> f64 {
        // numpy: q / 100 first, then times (n - 1).
        let h = (self.n - 1) as f64 * (q / 100.0);
        let (i, t) = (h.floor() as usize, h - h.floor());
        let (a, b) = (self.sorted[i], self.sorted[(i + 1).min(self.n - 1)]);
        if t >= 0.5 {
            b - (b - a) * (1.0 - t)
        } else {
            a + (b - a) * t
        }
    }
}

/// |a - b| within `k` ulps of the larger magnitude plus `abs` (for values that
/// are sums of a big offset and a small computed part).
fn close(a: f64, b: f64, k: f64, abs: f64) -> bool {
    (a - b).abs() <= k * f64::EPSILON * a.abs().max(b.abs()) + abs
}

fn check_against_reference(f: &Fitted, cols: &[(&str, Vec<f64>)], what: &str) {
    let a = &f.attrs;
    for (j, (name, xs)) in cols.iter().enumerate() {
        let r = Reference::new(xs);
        let ctx = format!("{what}, column {name}");
        match f.spec {
            ScalerSpec::Standard { .. } => {
                let (mean, var, scale) =
                    (a.mean_.as_ref().unwrap()[j], a.var_.as_ref().unwrap()[j], a.scale_.as_ref().unwrap()[j]);
                // The mean is `shift + m`: an ulp of the offset, plus the error of a
                // sum of n shifted values (n·eps·mean|x - shift|) in either method.
                let sum_err = 2.0 * r.n as f64 * f64::EPSILON * r.abs_dev;
                assert!(close(mean, r.mean, 2.0, sum_err), "{ctx}: mean {mean} vs {}", r.mean);
                // The variance of the shifted values: relative error of order n·eps.
                assert!(close(var, r.var, 16.0 * r.n as f64, 0.0), "{ctx}: var {var} vs {}", r.var);
                // scikit-learn's `_is_constant_feature`: within the error bound of
                // a naive variance, `var <= n·eps·var + (n·mean·eps)²` (so a spread
                // of 50 about 1e15 over 2003 rows counts as constant, as there).
                let n = r.n as f64;
                if r.var <= n * f64::EPSILON * r.var + (n * r.mean * f64::EPSILON).powi(2) {
                    assert_eq!(scale, 1.0, "{ctx}: a constant column has scale 1");
                } else {
                    assert!(close(scale, r.var.sqrt(), 16.0 * n, 0.0), "{ctx}: scale {scale} vs {}", r.var.sqrt());
                }
                if r.var == 0.0 {
                    assert_eq!(var, 0.0, "{ctx}: exactly constant");
                }
            }
            ScalerSpec::MinMax { .. } => {
                assert_eq!(a.data_min_.as_ref().unwrap()[j], r.sorted[0], "{ctx}");
                assert_eq!(a.data_max_.as_ref().unwrap()[j], r.sorted[r.n - 1], "{ctx}");
            }
            ScalerSpec::Robust { quantile_range: (lo, hi), .. } => {
                assert_eq!(a.center_.as_ref().unwrap()[j], r.percentile(50.0), "{ctx}: median");
                let iqr = r.percentile(hi) - r.percentile(lo);
                let want = if iqr < 10.0 * f64::EPSILON { 1.0 } else { iqr };
                assert_eq!(a.scale_.as_ref().unwrap()[j], want, "{ctx}: scale");
            }
            _ => {}
        }
    }
}

#[test]
fn batches_of_1_7_1000_give_the_one_pass_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let seed = rand::random();
    let rows = 2003;
    let cols = columns(rows, seed);
    let csv = dir.path().join("data.csv");
    let pq = dir.path().join("data.parquet");
    write_csv(&csv, &cols);
    write_parquet(&pq, &cols);
    let specs = [
        ScalerSpec::standard(),
        ScalerSpec::minmax(),
        ScalerSpec::MaxAbs,
        ScalerSpec::robust(),
        ScalerSpec::Robust {
            with_centering: true,
            with_scaling: true,
            quantile_range: (10.0, 90.0),
            unit_variance: false,
        },
    ];
    for (path, format) in [(&csv, Format::Csv), (&pq, Format::Parquet)] {
        for spec in &specs {
            let one = fit_file(path, format, spec, rows, 1 << 24);
            check_against_reference(&one, &cols, &format!("seed {seed}, {format:?} {spec:?} one pass"));
            for batch in [1, 7, 1000] {
                // A tiny quantile budget forces the multi-pass selection too.
                for cap in [1 << 24, 5] {
                    let f = fit_file(path, format, spec, batch, cap);
                    let what = format!("seed {seed}, {format:?} {spec:?} batches of {batch}, cap {cap}");
                    check_against_reference(&f, &cols, &what);
                    let (a, b) = (&f.attrs, &one.attrs);
                    assert_eq!(a.n_samples_seen_, b.n_samples_seen_, "{what}");
                    // Order statistics, extrema and constant-column decisions are
                    // exact whatever the batching.
                    for (x, y) in
                        [(&a.data_min_, &b.data_min_), (&a.data_max_, &b.data_max_), (&a.max_abs_, &b.max_abs_)]
                    {
                        assert_eq!(x, y, "{what}");
                    }
                    if matches!(spec, ScalerSpec::Robust { .. }) {
                        assert_eq!(a, b, "{what}");
                    }
                    if let (Some(s), Some(t)) = (&a.scale_, &b.scale_) {
                        for (j, (x, y)) in s.iter().zip(t).enumerate() {
                            assert_eq!(*x == 1.0, *y == 1.0, "{what}: column {j} constant in one fit only");
                        }
                    }
                }
            }
        }
    }
    // n_samples_seen_ counts each column's non-missing values.
    let f = fit_file(&csv, Format::Csv, &ScalerSpec::standard(), 7, 1 << 24);
    let want: Vec<u64> = cols.iter().map(|c| c.1.iter().filter(|x| !x.is_nan()).count() as u64).collect();
    assert_eq!(f.attrs.n_samples_seen_, Some(SamplesSeen::PerColumn(want)));
}

#[test]
fn int_columns_and_text_columns_are_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    let pq = dir.path().join("t.parquet");
    let batch = RecordBatch::try_from_iter(vec![
        ("i", Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])) as ArrayRef),
        ("s", Arc::new(StringArray::from(vec!["a", "b", "c"])) as ArrayRef),
    ])
    .unwrap();
    let mut w = ArrowWriter::try_new(std::fs::File::create(&pq).unwrap(), batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let t = Table::open(&pq, Format::Parquet).unwrap();
    assert_eq!(t.select(None).unwrap(), vec![0]);
    assert_eq!(t.columns()[0].dtype, "int64");
    let err = t.select(Some(&["s".to_owned()])).unwrap_err().to_string();
    assert!(err.contains("\"s\"") && err.contains("t.parquet"), "{err}");
    let f = fit(&ScalerSpec::standard(), &mut t.source(&[0]), FitOptions::default()).unwrap().0;
    assert_eq!(f.attrs.mean_, Some(vec![2.0]));
    assert_eq!(f.attrs.n_samples_seen_, Some(SamplesSeen::All(2)));
}

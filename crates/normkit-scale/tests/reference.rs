//! Property tests: every scaler fitted in random batches against a plain f64
//! reference written from scikit-learn's formulas (two-pass moments, numpy's
//! linear-interpolation percentiles from the sorted values), on random shapes,
//! missing values, ties and hostile magnitudes; transforms against the formula,
//! inverse transforms back to the data.

use normkit_scale::{fit, FitOptions, Fitted, MemorySource, Norm, ScaleError, ScalerSpec};
use proptest::prelude::*;

/// A column: its kind of values and a missing fraction.
fn column(rows: usize) -> impl Strategy<Value = Vec<f64>> {
    let kind = 0..5u8;
    (kind, prop::collection::vec((any::<f64>(), 0.0..1.0f64, -1.0..1.0f64), rows), 0.0..0.3f64).prop_map(
        |(kind, draws, missing)| {
            draws
                .into_iter()
                .map(|(_, m, u)| {
                    if m < missing {
                        return f64::NAN;
                    }
                    match kind {
                        0 => u * 10.0,                  // plain
                        1 => 1e6 + u * 1e-3,            // mean 1e6, spread 1e-3
                        2 => u * 1e30,                  // huge
                        3 => (u * 3.0).round(),         // ties: -3..3
                        _ => 1e15 + (u * 20.0).round(), // offset 1e15
                    }
                })
                .collect()
        },
    )
}

fn matrix() -> impl Strategy<Value = (usize, Vec<Vec<f64>>)> {
    (1usize..60, 1usize..4).prop_flat_map(|(rows, cols)| (Just(rows), prop::collection::vec(column(rows), cols)))
}

struct Ref {
    n: usize,
    mean: f64,
    var: f64,
    /// Mean of |x - first value|: the scale of the rounding errors of a sum.
    abs_dev: f64,
    sorted: Vec<f64>,
}

fn reference(xs: &[f64]) -> Option<Ref> {
    let v: Vec<f64> = xs.iter().copied().filter(|x| !x.is_nan()).collect();
    let n = v.len();
    let shift = *v.first()?;
    let m = v.iter().map(|x| x - shift).sum::<f64>() / n as f64;
    let var = v.iter().map(|x| (x - shift - m).powi(2)).sum::<f64>() / n as f64;
    let abs_dev = v.iter().map(|x| (x - shift).abs()).sum::<f64>() / n as f64;
    let mut sorted = v;
    sorted.sort_by(f64::total_cmp);
    Some(Ref { n, mean: shift + m, var, abs_dev, sorted })
}

impl Ref {
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

fn near(a: f64, b: f64, tol: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() <= tol
}

const EPS: f64 = f64::EPSILON;

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn standard_matches_reference((rows, cols) in matrix(), batch in 1usize..20) {
        let f = fit(&ScalerSpec::standard(), &mut MemorySource::from_columns(cols.clone(), batch), FitOptions::default()).unwrap().0;
        let a = &f.attrs;
        let (mean, var, scale) = (a.mean_.clone().unwrap(), a.var_.clone().unwrap(), a.scale_.clone().unwrap());
        let mut out = cols.clone();
        f.transform(&mut out).unwrap();
        let mut back = out.clone();
        f.inverse_transform(&mut back).unwrap();
        for (j, xs) in cols.iter().enumerate() {
            let Some(r) = reference(xs) else {
                prop_assert!(mean[j].is_nan() && var[j].is_nan() && scale[j].is_nan());
                continue;
            };
            // An ulp of the mean plus the error of a sum of n shifted values, either method.
            let sum_err = 2.0 * r.n as f64 * EPS * r.abs_dev;
            prop_assert!(near(mean[j], r.mean, 2.0 * EPS * r.mean.abs() + sum_err), "mean {} vs {}", mean[j], r.mean);
            prop_assert!(near(var[j], r.var, 8.0 * r.n as f64 * EPS * r.var), "var {} vs {}", var[j], r.var);
            let constant = r.var <= r.n as f64 * EPS * r.var + (r.n as f64 * r.mean * EPS).powi(2);
            let want_scale = if constant { 1.0 } else { r.var.sqrt() };
            prop_assert!(near(scale[j], want_scale, 8.0 * r.n as f64 * EPS * want_scale), "scale {} vs {}", scale[j], want_scale);
            for i in 0..rows {
                let x = xs[i];
                if x.is_nan() {
                    prop_assert!(out[j][i].is_nan() && back[j][i].is_nan(), "missing stays missing");
                    continue;
                }
                let y = (x - r.mean) / want_scale;
                // x - mean is exact to an ulp of |x| + |mean|, plus the mean's own error.
                let tol = (4.0 * EPS * (x.abs() + r.mean.abs()) + sum_err) / want_scale + 8.0 * r.n as f64 * EPS * y.abs();
                prop_assert!(near(out[j][i], y, tol), "y {} vs {y} at {i}", out[j][i]);
                prop_assert!(near(back[j][i], x, 8.0 * EPS * (x.abs() + r.mean.abs()) + sum_err + 8.0 * r.n as f64 * EPS * (x - r.mean).abs()), "inverse {} vs {x}", back[j][i]);
            }
        }
    }

    #[test]
    fn minmax_and_maxabs_match_reference((rows, cols) in matrix(), batch in 1usize..20, lo in -5.0..0.0f64, clip: bool) {
        let spec = ScalerSpec::MinMax { feature_range: (lo, lo + 2.0), clip };
        let f = fit(&spec, &mut MemorySource::from_columns(cols.clone(), batch), FitOptions::default()).unwrap().0;
        let m = fit(&ScalerSpec::MaxAbs, &mut MemorySource::from_columns(cols.clone(), batch), FitOptions::default()).unwrap().0;
        let mut out = cols.clone();
        f.transform(&mut out).unwrap();
        for (j, xs) in cols.iter().enumerate() {
            let Some(r) = reference(xs) else { continue };
            let (dmin, dmax) = (r.sorted[0], r.sorted[r.n - 1]);
            prop_assert_eq!(f.attrs.data_min_.as_ref().unwrap()[j], dmin);
            prop_assert_eq!(f.attrs.data_max_.as_ref().unwrap()[j], dmax);
            let max_abs = dmin.abs().max(dmax.abs());
            prop_assert_eq!(m.attrs.max_abs_.as_ref().unwrap()[j], max_abs);
            let range = if dmax - dmin < 10.0 * EPS { 1.0 } else { dmax - dmin };
            for i in 0..rows {
                if xs[i].is_nan() { prop_assert!(out[j][i].is_nan()); continue; }
                // sklearn: x * scale + min, scale = 2 / range, min = lo - dmin * scale.
                let y = (xs[i] - dmin) * (2.0 / range) + lo;
                let y = if clip { y.clamp(lo, lo + 2.0) } else { y };
                let tol = 8.0 * EPS * ((xs[i].abs() + dmin.abs()) * 2.0 / range + lo.abs() + 2.0);
                prop_assert!(near(out[j][i], y, tol), "minmax {} vs {y}", out[j][i]);
            }
        }
        prop_assert_eq!(f.attrs.n_samples_seen_.clone(), Some(normkit_scale::SamplesSeen::All(rows as u64)));
    }

    #[test]
    fn robust_matches_numpy_percentiles((rows, cols) in matrix(), batch in 1usize..20, cap in prop::sample::select(vec![1u64, 3, 1 << 20]), qlo in 0.0..50.0f64, qhi in 50.0..100.0f64) {
        let spec = ScalerSpec::Robust { with_centering: true, with_scaling: true, quantile_range: (qlo, qhi), unit_variance: false };
        let f = fit(&spec, &mut MemorySource::from_columns(cols.clone(), batch), FitOptions { quantile_cap: cap, ..FitOptions::default() }).unwrap().0;
        let mut out = cols.clone();
        f.transform(&mut out).unwrap();
        let mut back = out.clone();
        f.inverse_transform(&mut back).unwrap();
        for (j, xs) in cols.iter().enumerate() {
            let Some(r) = reference(xs) else {
                prop_assert!(f.attrs.center_.as_ref().unwrap()[j].is_nan());
                continue;
            };
            // numpy's nanmedian is the mean of the two middle values.
            let med_np = (r.sorted[(r.n - 1) / 2] + r.sorted[r.n / 2]) / 2.0;
            prop_assert_eq!(f.attrs.center_.as_ref().unwrap()[j], med_np);
            let iqr = r.percentile(qhi) - r.percentile(qlo);
            let scale = if iqr < 10.0 * EPS { 1.0 } else { iqr };
            prop_assert_eq!(f.attrs.scale_.as_ref().unwrap()[j], scale);
            for i in 0..rows {
                if xs[i].is_nan() { prop_assert!(out[j][i].is_nan()); continue; }
                prop_assert_eq!(out[j][i], (xs[i] - med_np) / scale);
                prop_assert!(near(back[j][i], xs[i], 4.0 * EPS * (xs[i].abs() + med_np.abs())));
            }
        }
    }

    #[test]
    fn normalizer_rows_have_unit_norm((rows, cols) in matrix(), which in 0..3u8) {
        let norm = [Norm::L1, Norm::L2, Norm::Max][which as usize];
        // scikit-learn's Normalizer refuses NaN in fit and in transform: the
        // first one in row order (then column order) is named, 1-based row.
        let first_nan = (0..rows).flat_map(|i| (0..cols.len()).map(move |j| (i, j))).find(|&(i, j)| cols[j][i].is_nan());
        let fitted = fit(&ScalerSpec::Normalizer { norm }, &mut MemorySource::from_columns(cols.clone(), 5), FitOptions::default());
        if let Some((i, j)) = first_nan {
            let e = fitted.unwrap_err();
            prop_assert!(matches!(e, ScaleError::NonFinite { row, column, value } if row == i as u64 + 1 && column == j && value.is_nan()), "{e:?}");
            let mut out = cols.clone();
            let e = Fitted::normalizer(norm, cols.len()).transform(&mut out).unwrap_err();
            prop_assert!(matches!(e, ScaleError::NonFinite { row, column, .. } if row == i as u64 + 1 && column == j), "{e:?}");
            prop_assert!(out.iter().flatten().zip(cols.iter().flatten()).all(|(a, b)| a.to_bits() == b.to_bits()), "refused batch changed");
            return Ok(());
        }
        let f = fitted.unwrap().0;
        let mut out = cols.clone();
        f.transform(&mut out).unwrap();
        for i in 0..rows {
            let row: Vec<f64> = cols.iter().map(|c| c[i]).filter(|x| !x.is_nan()).collect();
            let n = match norm {
                Norm::L1 => row.iter().map(|x| x.abs()).sum::<f64>(),
                Norm::L2 => row.iter().map(|x| x * x).sum::<f64>().sqrt(),
                Norm::Max => row.iter().fold(0.0f64, |m, x| m.max(x.abs())),
            };
            let n = if n < 10.0 * EPS { 1.0 } else { n };
            for (j, c) in cols.iter().enumerate() {
                let want = c[i] / n;
                prop_assert!(near(out[j][i], want, 4.0 * EPS * want.abs()), "{} vs {want}", out[j][i]);
            }
        }
    }
}

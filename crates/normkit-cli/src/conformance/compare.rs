//! The pass rule: `|got - want| <= atol + rtol * |want|`; NaN matches NaN only,
//! and an infinity matches the same infinity only.

/// The first element that breaks the rule, worst first: (index, got, want).
#[derive(Clone, Debug, PartialEq)]
pub struct Mismatch {
    /// Flat (row-major) index of the worst element.
    pub index: usize,
    /// The value produced.
    pub got: f64,
    /// The value expected.
    pub want: f64,
}

/// Whether one value passes.
pub fn close(got: f64, want: f64, atol: f64, rtol: f64) -> bool {
    if want.is_nan() || got.is_nan() {
        return want.is_nan() && got.is_nan();
    }
    if want.is_infinite() || got.is_infinite() {
        return got == want;
    }
    (got - want).abs() <= atol + rtol * want.abs()
}

/// The worst failing element of `got` against `want` (non-finite mismatches rank
/// first, then by how far past the tolerance), or `None` when all pass.
pub fn worst_mismatch(got: &[f64], want: &[f64], atol: f64, rtol: f64) -> Option<Mismatch> {
    let excess = |g: f64, w: f64| {
        let e = (g - w).abs() / (atol + rtol * w.abs());
        if e.is_nan() {
            f64::INFINITY
        } else {
            e
        }
    };
    got.iter()
        .zip(want)
        .enumerate()
        .filter(|(_, (&g, &w))| !close(g, w, atol, rtol))
        .map(|(i, (&g, &w))| (excess(g, w), Mismatch { index: i, got: g, want: w }))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, m)| m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule() {
        assert!(close(1.0, 1.0 + 1e-7, 0.0, 1e-6));
        assert!(!close(1.0, 1.1, 1e-3, 1e-3));
        assert!(close(f64::NAN, f64::NAN, 0.0, 0.0));
        assert!(!close(0.0, f64::NAN, 1.0, 1.0));
        assert!(!close(f64::NAN, 0.0, 1.0, 1.0));
        assert!(close(f64::INFINITY, f64::INFINITY, 0.0, 0.0));
        assert!(!close(f64::NEG_INFINITY, f64::INFINITY, 1.0, 1.0));
        assert!(!close(1e300, f64::INFINITY, 1.0, 1.0));
    }

    #[test]
    fn worst_is_reported() {
        let m = worst_mismatch(&[1.0, 2.5, 3.0, 9.0], &[1.0, 2.0, 3.0, 4.0], 0.1, 0.0).unwrap();
        assert_eq!(m.index, 3);
        assert_eq!(worst_mismatch(&[1.0], &[1.0], 0.0, 0.0), None);
        let nan = worst_mismatch(&[9.0, f64::NAN], &[1.0, 1.0], 0.1, 0.0).unwrap();
        assert_eq!(nan.index, 1);
    }
}

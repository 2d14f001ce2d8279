//! GroupNorm over `x` viewed as `[batch, channels, spatial]` (Wu & He, 2018), and
//! with it InstanceNorm (one group per channel; Ulyanov et al., 2016).
//!
//! The channels of each sample split into `groups` groups of `channels / groups`
//! consecutive channels; group `(n, g)` is the contiguous run of
//! `(channels / groups) · spatial` values `x[n, g·cpg .. (g+1)·cpg, :]`, normalized
//! on its own. The affine weight and bias are per channel, not per group.

use super::per_group;
use super::{check_buf, check_eps, check_param, write_param_grads, Affine, Grads};
use crate::error::{Error, Result};
use crate::float::Float;
use crate::moments::Moments;
use num_traits::{One as _, Zero as _};

/// The `[batch, channels, spatial]` view of a GroupNorm input and its group count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupLayout {
    /// Samples (N).
    pub batch: usize,
    /// Channels (C), a multiple of `groups`.
    pub channels: usize,
    /// Product of the dims after the channel axis (H·W·…; 1 for `(N, C)`).
    pub spatial: usize,
    /// Groups (G).
    pub groups: usize,
}

impl GroupLayout {
    /// A layout, checked: there are channels, `groups > 0` divides `channels`,
    /// and a sample's groups are not empty (`spatial > 0`). An empty batch
    /// (`batch = 0`) is allowed.
    pub fn new(batch: usize, channels: usize, spatial: usize, groups: usize) -> Result<Self> {
        let layout = GroupLayout { batch, channels, spatial, groups };
        layout.len()?;
        Ok(layout)
    }

    /// Number of elements, `batch · channels · spatial`, after the checks of
    /// [`GroupLayout::new`] (the fields are public, so every kernel checks its
    /// layout through this).
    pub fn len(&self) -> Result<usize> {
        let GroupLayout { batch, channels, spatial, groups } = *self;
        if channels == 0 {
            return Err(Error::Empty { what: "the channel axis of x".into(), shape: vec![batch, channels, spatial] });
        }
        if groups == 0 || channels % groups != 0 {
            return Err(Error::invalid(
                "num_groups",
                format!("num_groups {groups} does not divide the {channels} channels of the input"),
            ));
        }
        if spatial == 0 {
            return Err(Error::Empty { what: "each group of x".into(), shape: vec![batch, channels, spatial] });
        }
        batch
            .checked_mul(channels)
            .and_then(|v| v.checked_mul(spatial))
            .ok_or_else(|| Error::invalid("layout", format!("{self:?} has more elements than usize holds")))
    }

    /// Whether the layout holds no element.
    pub fn is_empty(&self) -> bool {
        self.batch == 0 || self.channels == 0 || self.spatial == 0
    }

    /// Values in one group, `(channels / groups) · spatial`.
    pub fn group_len(&self) -> usize {
        (self.channels / self.groups.max(1)).saturating_mul(self.spatial)
    }

    /// Number of groups over the batch, `batch · groups`: the length of `mean`/`rstd`.
    pub fn num_stats(&self) -> usize {
        self.batch.saturating_mul(self.groups)
    }

    /// The channel of the `k`-th spatial run (`x[n, c, :]`, counted over the batch).
    fn channel_of_run(&self, k: usize) -> usize {
        k % self.channels.max(1)
    }
}

/// GroupNorm forward. For each group `(n, g)` of `m = (C/G) · spatial` values:
///
/// ```text
/// mean = (1/m) Σ x        var = (1/m) Σ (x - mean)²        (blocked two-pass, Chan merge)
/// rstd = 1 / sqrt(var + eps)
/// y[n, c, s] = (x[n, c, s] - mean) · rstd · weight_c + bias_c
/// ```
///
/// Writes `y` and the per-group `mean` and `rstd` (`[batch, groups]`), in the
/// input's dtype, for [`group_norm_backward`]. Each group is read from memory
/// once: its statistics are computed, then it is normalized while still in
/// cache; groups run over rayon's threads, with results that do not depend on
/// the number of threads.
pub fn group_norm_forward<T: Float>(
    x: &[T],
    layout: GroupLayout,
    affine: Affine<'_, T>,
    eps: f64,
    y: &mut [T],
    mean: &mut [T],
    rstd: &mut [T],
) -> Result<()> {
    check_buf("x", x.len(), layout.len()?)?;
    let eps = check_eps::<T::Acc>(eps)?;
    affine.check(layout.channels)?;
    check_buf("y", y.len(), x.len())?;
    check_buf("mean", mean.len(), layout.num_stats())?;
    check_buf("rstd", rstd.len(), layout.num_stats())?;
    let mut stats = vec![(T::Acc::zero(), T::Acc::zero()); layout.num_stats()];
    if !layout.is_empty() {
        per_group::forward(x, layout, affine, eps, y, &mut stats);
    }
    for ((m, r), &(mu, rs)) in mean.iter_mut().zip(rstd.iter_mut()).zip(&stats) {
        *m = T::from_acc(mu);
        *r = T::from_acc(rs);
    }
    Ok(())
}

/// Pass 1: each group's `(mean, rstd)` in `T::Acc`, group by group.
pub fn group_norm_stats<T: Float>(x: &[T], layout: GroupLayout, eps: f64) -> Result<Vec<(T::Acc, T::Acc)>> {
    check_buf("x", x.len(), layout.len()?)?;
    let eps = check_eps::<T::Acc>(eps)?;
    if layout.is_empty() {
        return Ok(vec![(T::Acc::zero(), T::Acc::zero()); layout.num_stats()]);
    }
    let mut out = vec![(T::Acc::zero(), T::Acc::zero()); layout.num_stats()];
    per_group::stats(x, layout, eps, &mut out);
    Ok(out)
}

/// Per-group moments (count, mean, M2), for running statistics.
pub fn group_norm_moments<T: Float>(x: &[T], layout: GroupLayout, out: &mut [Moments<T::Acc>]) -> Result<()> {
    check_buf("x", x.len(), layout.len()?)?;
    check_buf("moments", out.len(), layout.num_stats())?;
    if layout.is_empty() {
        return Ok(());
    }
    for (o, group) in out.iter_mut().zip(x.chunks_exact(layout.group_len())) {
        *o = Moments::from_slice(group);
    }
    Ok(())
}

/// Pass 2: `y[n, c, s] = (x[n, c, s] - mean_{n,g}) · rstd_{n,g} · weight_c + bias_c`,
/// one spatial run `x[n, c, :]` at a time.
pub fn group_norm_apply<T: Float>(
    x: &[T],
    layout: GroupLayout,
    stats: &[(T::Acc, T::Acc)],
    affine: Affine<'_, T>,
    y: &mut [T],
) -> Result<()> {
    check_buf("x", x.len(), layout.len()?)?;
    check_buf("y", y.len(), x.len())?;
    check_buf("stats", stats.len(), layout.num_stats())?;
    affine.check(layout.channels)?;
    if layout.is_empty() {
        return Ok(());
    }
    let cpg = layout.channels / layout.groups;
    let runs = x.chunks_exact(layout.spatial).zip(y.chunks_exact_mut(layout.spatial));
    super::simd::vectorized(
        #[inline(always)]
        || {
            for (k, (xr, yr)) in runs.enumerate() {
                let c = layout.channel_of_run(k);
                let (mu, rs) = stats[k / cpg];
                let scale = rs * super::param_at(affine.weight, c, T::Acc::one());
                let shift = super::param_at(affine.bias, c, T::Acc::zero());
                super::normalize_run(xr, yr, super::Standardize::new(mu, rs, scale), (mu, scale, shift));
            }
        },
    );
    Ok(())
}

/// GroupNorm backward: gradients of `L = Σ y · dy` from the forward's `mean` and
/// `rstd`. Per group, with `x̂ = (x - mean) · rstd`, `g = dy · weight_c` and `m`
/// values:
///
/// ```text
/// dx        = rstd · (g - mean_group(g) - x̂ · mean_group(g · x̂))
/// dweight_c = Σ_{n,s} dy · x̂        dbias_c = Σ_{n,s} dy
/// ```
///
/// One sweep over each group from memory gathers the two means and each run's
/// `Σ dy` and `Σ dy · x̂`, a second sweep from cache writes `dx`; the parameter
/// sums are added over the batch in sample order (see `per_group.rs`), so the
/// results do not depend on the number of threads.
pub fn group_norm_backward<T: Float>(
    dy: &[T],
    x: &[T],
    layout: GroupLayout,
    mean: &[T],
    rstd: &[T],
    weight: Option<&[T]>,
    grads: Grads<'_, T>,
) -> Result<()> {
    check_buf("x", x.len(), layout.len()?)?;
    check_buf("dy", dy.len(), x.len())?;
    check_buf("dx", grads.dx.len(), x.len())?;
    check_buf("mean", mean.len(), layout.num_stats())?;
    check_buf("rstd", rstd.len(), layout.num_stats())?;
    check_param("weight", weight, layout.channels)?;
    check_param("dweight", grads.dweight.as_deref(), layout.channels)?;
    check_param("dbias", grads.dbias.as_deref(), layout.channels)?;
    let zero = T::Acc::zero();
    let (c, want_dw, want_db) = (layout.channels, grads.dweight.is_some(), grads.dbias.is_some());
    let (mut dweight, mut dbias) = (vec![zero; if want_dw { c } else { 0 }], vec![zero; if want_db { c } else { 0 }]);
    if !layout.is_empty() {
        // Per run (n, c): [Σ dy, Σ dy · x̂], added over the batch in sample order.
        let mut run_sums = vec![zero; 2 * layout.batch * c];
        per_group::backward(dy, x, layout, mean, rstd, weight, grads.dx, &mut run_sums);
        for sample in run_sums.chunks_exact(2 * c) {
            for (k, s) in sample.chunks_exact(2).enumerate() {
                if let Some(db) = dbias.get_mut(k) {
                    *db = *db + s[0];
                }
                if let Some(dw) = dweight.get_mut(k) {
                    *dw = *dw + s[1];
                }
            }
        }
    }
    write_param_grads::<T>(&dweight, grads.dweight);
    write_param_grads::<T>(&dbias, grads.dbias);
    Ok(())
}

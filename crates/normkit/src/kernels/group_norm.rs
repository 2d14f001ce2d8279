//! GroupNorm over `x` viewed as `[batch, channels, spatial]` (Wu & He, 2018), and
//! with it InstanceNorm (one group per channel; Ulyanov et al., 2016).
//!
//! The channels of each sample split into `groups` groups of `channels / groups`
//! consecutive channels; group `(n, g)` is the contiguous run of
//! `(channels / groups) · spatial` values `x[n, g·cpg .. (g+1)·cpg, :]`, normalized
//! on its own. The affine weight and bias are per channel, not per group.

use super::{check_buf, check_eps, check_param, write_param_grads, Affine, Grads};
use crate::error::{Error, Result};
use crate::float::{AccFloat, Float};
use crate::moments::Moments;
use num_traits::{Float as _, One as _, Zero as _};

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
        let layout = GroupLayout { batch, channels, spatial, groups };
        layout.len()?;
        Ok(layout)
    }

    /// Number of elements, `batch · channels · spatial`.
    pub fn len(&self) -> Result<usize> {
        self.batch
            .checked_mul(self.channels)
            .and_then(|v| v.checked_mul(self.spatial))
            .ok_or_else(|| Error::invalid("layout", format!("{self:?} has more elements than usize holds")))
    }

    /// Whether the layout holds no element.
    pub fn is_empty(&self) -> bool {
        self.batch == 0 || self.channels == 0 || self.spatial == 0
    }

    /// Values in one group, `(channels / groups) · spatial`.
    pub fn group_len(&self) -> usize {
        self.channels / self.groups.max(1) * self.spatial
    }

    /// Number of groups over the batch, `batch · groups`: the length of `mean`/`rstd`.
    pub fn num_stats(&self) -> usize {
        self.batch * self.groups
    }

    /// The channel of the `k`-th spatial run (`x[n, c, :]`, counted over the batch).
    fn channel_of_run(&self, k: usize) -> usize {
        k % self.channels.max(1)
    }
}

/// GroupNorm forward. For each group `(n, g)` of `m = (C/G) · spatial` values:
///
/// ```text
/// mean = (1/m) Σ x        var = (1/m) Σ (x - mean)²        (by Moments::from_slice)
/// rstd = 1 / sqrt(var + eps)
/// y[n, c, s] = (x[n, c, s] - mean) · rstd · weight_c + bias_c
/// ```
///
/// Writes `y` and the per-group `mean` and `rstd` (`[batch, groups]`), in the
/// input's dtype, for [`group_norm_backward`].
pub fn group_norm_forward<T: Float>(
    x: &[T],
    layout: GroupLayout,
    affine: Affine<'_, T>,
    eps: f64,
    y: &mut [T],
    mean: &mut [T],
    rstd: &mut [T],
) -> Result<()> {
    let stats = group_norm_stats(x, layout, eps)?;
    affine.check(layout.channels)?;
    check_buf("y", y.len(), x.len())?;
    check_buf("mean", mean.len(), layout.num_stats())?;
    check_buf("rstd", rstd.len(), layout.num_stats())?;
    group_norm_apply(x, layout, &stats, affine, y)?;
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
    Ok(x.chunks_exact(layout.group_len())
        .map(|group| {
            let m = Moments::from_slice(group);
            (m.mean(), (m.var_biased() + eps).sqrt().recip())
        })
        .collect())
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
    for (k, (xr, yr)) in runs.enumerate() {
        let c = layout.channel_of_run(k);
        let (mu, rs) = stats[k / cpg];
        let scale = rs * super::param_at(affine.weight, c, T::Acc::one());
        let shift = super::param_at(affine.bias, c, T::Acc::zero());
        for (yj, &xj) in yr.iter_mut().zip(xr) {
            *yj = T::from_acc((xj.to_acc() - mu) * scale + shift);
        }
    }
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
/// One pass over each group gathers the two means, a second writes `dx` and the
/// parameter terms, reduced in sample order (deterministic).
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
    let mut dweight = vec![zero; if grads.dweight.is_some() { layout.channels } else { 0 }];
    let mut dbias = vec![zero; if grads.dbias.is_some() { layout.channels } else { 0 }];
    if !layout.is_empty() {
        let (glen, s) = (layout.group_len(), layout.spatial);
        let cpg = layout.channels / layout.groups;
        let groups = x.chunks_exact(glen).zip(dy.chunks_exact(glen)).zip(grads.dx.chunks_exact_mut(glen));
        for (gi, ((xg, dyg), dxg)) in groups.enumerate() {
            let (m, r) = (mean[gi].to_acc(), rstd[gi].to_acc());
            let c0 = (gi % layout.groups) * cpg;
            let w = |k: usize| super::param_at(weight, c0 + k / s, T::Acc::one());

            // Pass 1: the group's means of g and g·x̂.
            let (mut sum_g, mut sum_gx) = (zero, zero);
            for (k, (&xj, &dyj)) in xg.iter().zip(dyg).enumerate() {
                let g = dyj.to_acc() * w(k);
                sum_g = sum_g + g;
                sum_gx = sum_gx + g * (xj.to_acc() - m) * r;
            }
            let inv = T::Acc::from_count(glen as u64).recip();
            let (mean_g, mean_gx) = (sum_g * inv, sum_gx * inv);

            // Pass 2: dx and the per-channel parameter terms.
            for (k, ((&xj, &dyj), dxj)) in xg.iter().zip(dyg).zip(dxg.iter_mut()).enumerate() {
                let xhat = (xj.to_acc() - m) * r;
                *dxj = T::from_acc(r * (dyj.to_acc() * w(k) - mean_g - xhat * mean_gx));
                if let Some(dw) = dweight.get_mut(c0 + k / s) {
                    *dw = *dw + dyj.to_acc() * xhat;
                }
                if let Some(db) = dbias.get_mut(c0 + k / s) {
                    *db = *db + dyj.to_acc();
                }
            }
        }
    }
    write_param_grads::<T>(&dweight, grads.dweight);
    write_param_grads::<T>(&dbias, grads.dbias);
    Ok(())
}

#!/usr/bin/env python3
"""Generate NEW conformance cases, in the format of shared/conformance/README.md.

A dev tool for finding where `normkit conformance` would fail on cases we have not
seen. It writes JSON case files under OUTDIR, in three sub-folders:

- ``onnx/``: ONNX ops run by ``onnx.reference.ReferenceEvaluator`` on float64
  inputs (LayerNormalization, RMSNormalization, BatchNormalization in
  training_mode 0 and 1, GroupNormalization (opset 21), InstanceNormalization,
  LpNormalization, MeanVarianceNormalization), mapped to the format's PyTorch-style
  ops and attributes (ONNX BatchNormalization momentum m becomes 1 - m,
  running_var_unbiased false; LayerNormalization axis a becomes
  normalized_shape = x.shape[a:]). ONNX float attributes are float32, so the
  cases carry the float32 epsilon/momentum; LpNormalization p=1 uses the spec's
  sum |x| (onnx's reference sums x without abs); GroupNormalization runs with
  stash_type 11 (double); MeanVarianceNormalization evaluates its function body
  ((x - mean) / (std + 1e-9)) in numpy, its rtol widened by that formula's gap.
- ``numpy_torch/``: PyTorch semantics re-implemented in numpy float64 (torch is not
  installable here), only where they are unambiguous: layer_norm, rms_norm,
  batch_norm (running statistics, momentum incl. cumulative average, channel axis),
  group_norm, instance_norm, lp_normalize (F.normalize), mean_variance_normalization,
  with backward cases (gradients of sum(y * grad_output), checked against central
  finite differences at generation time), non-finite inputs, large shapes (SIMD
  tails, threaded splits), channels-last group/instance norm (``axis``) and error
  cases. Case names start with ``numpy_torch/``.
- ``sklearn/``: scikit-learn's StandardScaler, MinMaxScaler, MaxAbsScaler,
  RobustScaler and Normalizer with varied parameters, NaNs, constant columns,
  large offsets, single rows, 4001-row fits, defaults, inverse_transform, and the
  inputs scikit-learn refuses (infinities; NaN for Normalizer; bad parameters).

References are computed in float64 from the inputs as stored (an f32 case's
inputs are rounded to f32 first), and expected tensors are rounded to the case's
dtype. Backward references take the gradient about the saved statistics as a
backward receives them, rounded to the case's dtype (`norm_backward`). Tolerances: f64 rtol 1e-9 / atol 1e-12, f32 rtol 1e-5 / atol 1e-6 (onnx
f32: 1e-4 / 1e-5 like the converted backend tests), widened only for
ill-conditioned inputs by a bound fixed before running normkit:
16 * eps(dtype) * |mean| / std (cancellation), never tuned to results.

Usage:
    pip install numpy onnx scikit-learn
    python3 scripts/gen_conformance.py OUTDIR [--seed 1234] [--only onnx,numpy_torch,sklearn]
    cargo run --profile test -q -p normkit-cli -- conformance OUTDIR

The generated cases are not bundled data: do not commit them into conformance/.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np

EPS = {"f32": float(np.finfo(np.float32).eps), "f64": float(np.finfo(np.float64).eps)}
NP = {"f32": np.float32, "f64": np.float64}
BASE_TOL = {"f32": (1e-5, 1e-6), "f64": (1e-9, 1e-12)}
ONNX_TOL = {"f32": (1e-4, 1e-5), "f64": (1e-9, 1e-12)}


# --- writing -----------------------------------------------------------------


def fmt(v: float, dtype: str):
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if dtype == "f32":
        # Shortest text that reads back as this f32.
        return float(str(np.float32(v)))
    return float(v)


def tensor(a, dtype: str) -> dict:
    a = np.asarray(a, dtype=np.float64)
    a = a.astype(NP[dtype]).astype(np.float64)
    return {"dtype": dtype, "shape": list(a.shape), "data": [fmt(v, dtype) for v in a.reshape(-1)]}


class Writer:
    def __init__(self, outdir: str):
        self.outdir = outdir
        self.counts: dict[str, int] = {}
        self.names: set[str] = set()

    def write(self, case: dict):
        name = case["name"]
        if name in self.names:
            raise SystemExit(f"duplicate case name {name}")
        self.names.add(name)
        path = os.path.join(self.outdir, name + ".json")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(case, f, indent=1)
        key = name.split("/")[0] + ":" + (case.get("op") or case.get("scaler"))
        self.counts[key] = self.counts.get(key, 0) + 1


def rnd(rng, shape, dtype, loc=0.0, scale=1.0):
    """Random normal values rounded to dtype, returned as float64."""
    return (rng.normal(loc, scale, size=shape)).astype(NP[dtype]).astype(np.float64)


def cancel_tol(dtype: str, ratio: float, base=None, weight_max=1.0):
    rt, at = base or BASE_TOL[dtype]
    bound = 16 * EPS[dtype] * ratio * max(1.0, weight_max)
    return max(rt, bound), max(at, bound)


def shape_tag(shape):
    return "x".join(str(d) for d in shape) if shape else "scalar"


# --- numpy references (PyTorch semantics, float64) ---------------------------


def moments(x, axes):
    """Mean and biased variance, two-pass, the mean shifted by the group's first
    value (exact for constant groups, accurate for large offsets)."""
    if x.size == 0:
        return x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    first = x
    for a in sorted(axes):
        first = np.take(first, [0], axis=a)
    mean = first + (x - first).mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return mean, var


def ref_layer_norm(x, k, w, b, eps):
    """k = number of trailing (normalized) dims."""
    axes = tuple(range(x.ndim - k, x.ndim))
    mean, var = moments(x, axes)
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = (x - mean) * rstd
    y = xhat * (w if w is not None else 1.0) + (b if b is not None else 0.0)
    lead = x.shape[: x.ndim - k]
    return y, mean.reshape(lead), rstd.reshape(lead)


def ref_rms_norm(x, k, w, eps):
    axes = tuple(range(x.ndim - k, x.ndim))
    ms = (x * x).mean(axis=axes, keepdims=True)
    rstd = 1.0 / np.sqrt(ms + eps)
    y = x * rstd * (w if w is not None else 1.0)
    return y, rstd.reshape(x.shape[: x.ndim - k])


def bcast_channel(v, ndim, axis):
    shape = [1] * ndim
    shape[axis] = -1
    return v.reshape(shape)


def ref_batch_stats(x, axis):
    axes = tuple(i for i in range(x.ndim) if i != axis)
    mean, var = moments(x, axes)
    return mean.reshape(-1), var.reshape(-1), x.size // max(x.shape[axis], 1)


def ref_batch_norm_y(x, axis, mean, var, w, b, eps):
    m = bcast_channel(mean, x.ndim, axis)
    r = bcast_channel(1.0 / np.sqrt(var + eps), x.ndim, axis)
    y = (x - m) * r
    if w is not None:
        y = y * bcast_channel(w, x.ndim, axis)
    if b is not None:
        y = y + bcast_channel(b, x.ndim, axis)
    return y


def ref_group_norm(x, g, w, b, eps):
    n, c = x.shape[0], x.shape[1]
    xr = x.reshape(n, g, -1)
    mean, var = moments(xr, (2,))
    rstd = 1.0 / np.sqrt(var + eps)
    y = ((xr - mean) * rstd).reshape(x.shape)
    if w is not None:
        y = y * bcast_channel(w, x.ndim, 1)
    if b is not None:
        y = y + bcast_channel(b, x.ndim, 1)
    return y, mean.reshape(n, g), rstd.reshape(n, g)


def ref_instance_norm(x, w, b, eps):
    y, _, _ = ref_group_norm(x, x.shape[1], w, b, eps)
    return y


def ref_lp(x, p, axis, eps):
    if p == 1:
        n = np.abs(x).sum(axis=axis, keepdims=True)
    else:
        n = np.sqrt((x * x).sum(axis=axis, keepdims=True))
    return x / np.maximum(n, eps)


def ref_mvn(x, axes, eps):
    axes = tuple(a % x.ndim for a in axes)
    mean, var = moments(x, axes)
    return (x - mean) / np.sqrt(var + eps)


# Analytic backward of sum(y * dy), float64.


def norm_backward(x, dy, axes_reduce, mean, rstd, w_b, reduce_params_axes, dtype="f64"):
    """Shared by layer/batch/group norm: xhat = (x - mean) * rstd, y = xhat*w + b.

    axes_reduce: axes of the normalization group (with keepdims-shaped mean/rstd);
    w_b: w broadcast to x (or None); reduce_params_axes: axes to sum over for dw/db.

    The gradient is taken about the saved statistics as the backward receives
    them, rounded to `dtype` (PyTorch's save_mean/save_invstd and normkit's
    mean/rstd are f32 for f32 data). The rounding of the mean moves dx by about
    u·|mean|·rstd² (u = f32 epsilon): with variance near eps at an offset of 5
    (rstd ~ 200) that is 5e-3, far above the f32 tolerance, while an
    implementation that is exact on its inputs gives it to the last digits."""
    mean = mean.astype(NP[dtype]).astype(np.float64)
    rstd = rstd.astype(NP[dtype]).astype(np.float64)
    xhat = (x - mean) * rstd
    g = dy * (w_b if w_b is not None else 1.0)
    gm = g.mean(axis=axes_reduce, keepdims=True)
    gx = (g * xhat).mean(axis=axes_reduce, keepdims=True)
    dx = rstd * (g - gm - xhat * gx)
    dw = (dy * xhat).sum(axis=reduce_params_axes)
    db = dy.sum(axis=reduce_params_axes)
    return dx, dw, db


def fd_check(f, x, dy, dx, name, h=1e-6, tol=1e-5):
    """Central finite differences of sum(f(x) * dy) at up to 12 entries."""
    flat = x.reshape(-1)
    idx = np.linspace(0, flat.size - 1, num=min(12, flat.size)).astype(int)
    for i in idx:
        xp, xm = flat.copy(), flat.copy()
        xp[i] += h
        xm[i] -= h
        num = ((f(xp.reshape(x.shape)) - f(xm.reshape(x.shape))) * dy).sum() / (2 * h)
        ana = dx.reshape(-1)[i]
        if not abs(num - ana) <= tol * (1 + abs(ana)):
            raise SystemExit(f"generator bug: finite differences disagree in {name} at {i}: {num} vs {ana}")


# --- numpy_torch family ------------------------------------------------------


def nn_case(name, op, attrs, inputs, expected, dtype, tol=None, grad_output=None, error=None):
    rt, at = tol or BASE_TOL[dtype]
    c = {"name": name, "op": op, "attrs": attrs, "inputs": {k: tensor(v, dtype) for k, v in inputs.items() if v is not None}}
    if grad_output is not None:
        c["grad_output"] = tensor(grad_output, dtype)
    if error is not None:
        c["error"] = error
    else:
        c["expected"] = {k: tensor(v, dtype) for k, v in expected.items() if v is not None}
    c["tolerance"] = {"rtol": float(f"{rt:.2g}"), "atol": float(f"{at:.2g}")}
    return c


def gen_x(rng, shape, dtype, kind):
    """Input values of a kind, and the |mean|/std ratio used for tolerances."""
    if kind == "plain":
        return rnd(rng, shape, dtype, 0.3, 1.5), 1.0
    if kind == "offset":
        loc, sc = (1e6, 1e-3) if dtype == "f64" else (1e3, 1.0)
        x = rnd(rng, shape, dtype, loc, sc)
        return x, loc / sc
    if kind == "zeros":
        return np.zeros(shape), 1.0
    if kind == "const":
        # Constant along the last dim: every row holds one value that is not a
        # binary fraction (0.1, 1234.567, ...), so a sum-then-divide mean is not exact.
        vals = np.array([0.1, -1234.567, 3.3, 1e-3, 7.0, -0.7])
        lead = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        x = np.repeat(vals[np.arange(lead) % len(vals)], shape[-1] if shape else 1).reshape(shape)
        return x.astype(NP[dtype]).astype(np.float64), 1.0
    if kind == "near_eps":
        # Variance near eps = 1e-5, mean 5: the ratio |mean| / std is about 1.6e3.
        return rnd(rng, shape, dtype, 5.0, math.sqrt(1e-5)), 5.0 / math.sqrt(1e-5)
    if kind == "tiny":
        return rnd(rng, shape, dtype, 0.0, 1e-4), 1.0
    if kind == "huge":
        return rnd(rng, shape, dtype, 0.0, 1e18 if dtype == "f32" else 1e30), 1.0
    raise ValueError(kind)


def gen_layer_norm(w: Writer, rng):
    op = "layer_norm"
    configs = []
    for dtype in ("f64", "f32"):
        for shape, k in [((1,), 1), ((7,), 1), ((3, 1), 1), ((1, 13), 1), ((2, 3, 5), 2), ((2, 3, 5), 3),
                         ((2, 1, 3, 4), 2), ((2, 3, 2, 2, 3), 3), ((2, 2, 2, 2, 5), 1), ((5, 31), 1), ((3, 257), 1)]:
            configs.append((dtype, shape, k, "plain", "affine", 1e-5, False))
        for aff in ("none", "weight", "bias"):
            configs.append((dtype, (4, 11), 1, "plain", aff, 1e-5, True))
        configs.append((dtype, (3, 2, 7), 2, "plain", "affine", 1e-5, True))
        configs.append((dtype, (2, 3, 2, 5), 3, "plain", "affine", 1e-5, True))
        for eps in (0.0, 1e-12, 0.5):
            configs.append((dtype, (4, 9), 1, "plain", "affine", eps, False))
        for kind in ("offset", "zeros", "const", "tiny", "huge"):
            configs.append((dtype, (4, 37), 1, kind, "affine", 1e-5, kind in ("offset", "const")))
    for dtype, shape, k, kind, aff, eps, bwd in configs:
        if kind == "zeros" and eps == 0.0:
            continue
        x, ratio = gen_x(rng, shape, dtype, kind)
        ns = list(shape[len(shape) - k:])
        wt = rnd(rng, ns, dtype, 1.0, 0.5) if aff in ("affine", "weight") else None
        bs = rnd(rng, ns, dtype, 0.0, 0.5) if aff in ("affine", "bias") else None
        y, mean, rstd = ref_layer_norm(x, k, wt, bs, eps)
        exp = {"y": y, "mean": mean, "rstd": rstd}
        tol = cancel_tol(dtype, ratio, weight_max=float(np.abs(wt).max()) if wt is not None else 1.0) if kind == "offset" else None
        go = None
        if bwd:
            go = rnd(rng, shape, dtype)
            axes = tuple(range(x.ndim - k, x.ndim))
            lead = tuple(range(x.ndim - k))
            mk = mean.reshape(mean.shape + (1,) * k)
            rk = rstd.reshape(rstd.shape + (1,) * k)
            dx, dw, db = norm_backward(x, go, axes, mk, rk, wt, lead, dtype)
            if kind == "plain":
                fd_check(lambda xx: ref_layer_norm(xx, k, wt, bs, eps)[0], x, go, dx, "layer_norm")
            exp.update({"dx": dx, "dweight": dw if wt is not None else None, "dbias": db if bs is not None else None})
        name = f"numpy_torch/{op}_{dtype}_{shape_tag(shape)}_n{k}_{aff}_eps{eps:g}_{kind}{'_bwd' if bwd else ''}"
        w.write(nn_case(name, op, {"normalized_shape": ns, "eps": eps}, {"x": x, "weight": wt, "bias": bs}, exp, dtype, tol, go))
    # errors
    for dtype in ("f32", "f64"):
        x = rnd(rng, (3, 4), dtype)
        w.write(nn_case(f"numpy_torch/{op}_error_bias_len_{dtype}", op, {"normalized_shape": [4], "eps": 1e-5},
                        {"x": x, "bias": rnd(rng, (3,), dtype)}, None, dtype, error="bias has 3 elements, normalized_shape needs 4"))
        w.write(nn_case(f"numpy_torch/{op}_error_ns_too_long_{dtype}", op, {"normalized_shape": [2, 3, 4], "eps": 1e-5},
                        {"x": x}, None, dtype, error="normalized_shape longer than x"))
        w.write(nn_case(f"numpy_torch/{op}_error_weight_shape_{dtype}", op, {"normalized_shape": [3, 4], "eps": 1e-5},
                        {"x": x, "weight": rnd(rng, (12,), dtype)}, None, dtype, error="weight shape [12], normalized_shape [3, 4]"))


def gen_rms_norm(w: Writer, rng):
    op = "rms_norm"
    configs = []
    for dtype in ("f64", "f32"):
        for shape, k in [((1,), 1), ((1, 1), 1), ((5,), 1), ((2, 3, 5), 2), ((2, 3, 5), 3), ((2, 2, 3, 2, 3), 4), ((3, 509), 1)]:
            configs.append((dtype, shape, k, "plain", True, 1e-6, False))
        configs.append((dtype, (4, 10), 1, "plain", False, 1e-5, True))
        configs.append((dtype, (4, 10), 1, "plain", True, None, True))
        configs.append((dtype, (3, 2, 5), 2, "plain", True, 1e-5, True))
        for kind in ("offset", "zeros", "const", "tiny", "huge"):
            configs.append((dtype, (3, 23), 1, kind, True, 1e-6 if kind != "zeros" else None, kind != "huge"))
    for dtype, shape, k, kind, has_w, eps, bwd in configs:
        x, _ = gen_x(rng, shape, dtype, kind)
        ns = list(shape[len(shape) - k:])
        wt = rnd(rng, ns, dtype, 1.0, 0.5) if has_w else None
        e = EPS[dtype] if eps is None else eps
        y, rstd = ref_rms_norm(x, k, wt, e)
        exp = {"y": y, "rstd": rstd}
        go = None
        if bwd:
            go = rnd(rng, shape, dtype)
            axes = tuple(range(x.ndim - k, x.ndim))
            rk = rstd.reshape(rstd.shape + (1,) * k)
            g = go * (wt if wt is not None else 1.0)
            dx = rk * (g - x * rk * rk * (g * x).mean(axis=axes, keepdims=True))
            dw = (go * x * rk).sum(axis=tuple(range(x.ndim - k)))
            if kind == "plain":
                fd_check(lambda xx: ref_rms_norm(xx, k, wt, e)[0], x, go, dx, "rms_norm")
            exp.update({"dx": dx, "dweight": dw if wt is not None else None})
        tag = "epsnull" if eps is None else f"eps{eps:g}"
        name = f"numpy_torch/{op}_{dtype}_{shape_tag(shape)}_n{k}_{'weight' if has_w else 'plain'}_{tag}_{kind}{'_bwd' if bwd else ''}"
        w.write(nn_case(name, op, {"normalized_shape": ns, "eps": eps}, {"x": x, "weight": wt}, exp, dtype, None, go))


def gen_batch_norm(w: Writer, rng):
    op = "batch_norm"
    configs = []
    for dtype in ("f64", "f32"):
        # (shape, axis, training, momentum, unbiased, affine, running, nbt, kind, bwd, eps)
        configs += [
            ((7, 3), 1, True, 0.1, True, "affine", True, None, "plain", False, 1e-5),
            ((2, 1), 1, True, 0.1, True, "affine", True, None, "plain", False, 1e-5),
            ((1, 2, 5), 1, True, 0.1, True, "affine", True, 4, "plain", False, 1e-5),
            ((3, 5, 2, 3), 1, True, 0.25, False, "affine", True, 0, "plain", False, 1e-3),
            ((2, 3, 2, 2, 3), 1, True, 0.1, True, "affine", True, None, "plain", False, 1e-5),
            ((2, 4, 3), -1, True, 0.1, True, "affine", True, None, "plain", False, 1e-5),
            ((2, 4, 3, 5), 2, True, 0.1, True, "affine", True, None, "plain", False, 1e-5),
            ((2, 4, 3, 5), -2, True, 0.1, False, "affine", True, None, "plain", False, 1e-5),
            ((3, 2, 4), 0, True, 0.1, True, "affine", True, None, "plain", False, 1e-5),
            ((4, 3, 5), 1, True, None, True, "affine", True, 0, "plain", False, 1e-5),
            ((4, 3, 5), 1, True, None, True, "affine", True, 9, "plain", False, 1e-5),
            ((4, 3, 5), 1, True, None, False, "none", True, 2, "plain", False, 1e-5),
            ((4, 3, 5), 1, True, 1.0, True, "weight", True, None, "plain", False, 1e-5),
            ((4, 3, 5), 1, True, 0.0, True, "bias", True, 3, "plain", False, 1e-5),
            ((5, 3), 1, True, 0.1, True, "affine", False, None, "plain", True, 1e-5),
            ((3, 3, 4), 1, True, 0.1, True, "none", True, None, "plain", True, 1e-5),
            ((3, 3, 4), 1, True, 0.1, True, "weight", True, None, "plain", True, 1e-5),
            ((3, 3, 4), 1, True, 0.1, True, "bias", False, None, "plain", True, 1e-5),
            ((2, 3, 2, 4), -1, True, 0.1, False, "affine", True, None, "plain", True, 1e-5),
            ((6, 4), 1, False, 0.1, True, "affine", True, None, "plain", False, 1e-5),
            ((1, 4), 1, False, 0.1, True, "affine", True, None, "plain", False, 1e-5),
            ((2, 3, 4, 1, 2), 1, False, 0.1, True, "none", True, None, "plain", False, 1e-5),
            ((2, 3, 4), -1, False, 0.1, True, "affine", True, 5, "plain", False, 1e-5),
            ((3, 2, 5), 1, False, 0.1, True, "weight", True, None, "plain", True, 1e-5),
            ((3, 2, 5), 1, False, 0.1, True, "none", True, None, "plain", True, 1e-5),
            ((8, 3, 16), 1, True, 0.1, True, "affine", True, None, "offset", False, 1e-5),
            ((8, 3, 16), 1, True, 0.1, True, "affine", True, None, "offset", True, 1e-5),
            ((8, 3, 4), 1, True, 0.1, True, "affine", True, None, "const", False, 1e-5),
            ((4, 3, 6), 1, True, 0.1, True, "affine", True, None, "zeros", False, 1e-5),
            ((4, 3, 6), 1, True, 0.1, True, "affine", True, None, "huge", False, 1e-5),
        ]
    for (shape, axis, training, mom, unb, aff, running, nbt, kind, bwd, eps), dtype in [(c, d) for d in ("f64", "f32") for c in configs[: len(configs) // 2]]:
        x, ratio = gen_x(rng, shape, dtype, kind)
        if kind == "const":
            # Constant per channel (axis 1), not per row.
            vals = np.array([0.1, -1234.567, 3.3])
            x = np.broadcast_to(vals.reshape(1, 3, 1), shape).copy().astype(NP[dtype]).astype(np.float64)
        ax = axis % x.ndim
        c = x.shape[ax]
        wt = rnd(rng, (c,), dtype, 1.0, 0.5) if aff in ("affine", "weight") else None
        bs = rnd(rng, (c,), dtype, 0.0, 0.5) if aff in ("affine", "bias") else None
        rm = rnd(rng, (c,), dtype, 0.0, 1.0) if running else None
        rv = np.abs(rnd(rng, (c,), dtype, 1.0, 0.5)) + 0.1 if running else None
        if rv is not None:
            rv = rv.astype(NP[dtype]).astype(np.float64)
        nbt_in = None if nbt is None else np.array(float(nbt))
        exp = {}
        axes_other = tuple(i for i in range(x.ndim) if i != ax)
        go = rnd(rng, shape, dtype) if bwd else None
        if training:
            mean, var, n = ref_batch_stats(x, ax)
            y = ref_batch_norm_y(x, ax, mean, var, wt, bs, eps)
            exp.update({"y": y, "save_mean": mean, "save_rstd": 1.0 / np.sqrt(var + eps)})
            if running:
                if n < 2 and unb:
                    continue
                count = (nbt or 0) + 1
                f = 1.0 / count if mom is None else mom
                vu = var * n / (n - 1) if unb else var
                exp["running_mean"] = (1 - f) * rm + f * mean
                exp["running_var"] = (1 - f) * rv + f * vu
                if nbt is not None:
                    exp["num_batches_tracked"] = np.array(float(count))
            if bwd:
                mk = bcast_channel(mean, x.ndim, ax)
                rk = bcast_channel(1.0 / np.sqrt(var + eps), x.ndim, ax)
                wb = bcast_channel(wt, x.ndim, ax) if wt is not None else None
                dx, dw, db = norm_backward(x, go, axes_other, mk, rk, wb, axes_other, dtype)
                if kind == "plain":
                    fd_check(lambda xx: ref_batch_norm_y(xx, ax, *ref_batch_stats(xx, ax)[:2], wt, bs, eps), x, go, dx, "batch_norm")
                exp.update({"dx": dx, "dweight": dw if wt is not None else None, "dbias": db if bs is not None else None})
        else:
            y = ref_batch_norm_y(x, ax, rm, rv, wt, bs, eps)
            exp["y"] = y
            if bwd:
                rk = bcast_channel(1.0 / np.sqrt(rv + eps), x.ndim, ax)
                xhat = (x - bcast_channel(rm, x.ndim, ax)) * rk
                g = go * (bcast_channel(wt, x.ndim, ax) if wt is not None else 1.0)
                exp.update({"dx": g * rk, "dweight": (go * xhat).sum(axis=axes_other) if wt is not None else None,
                            "dbias": go.sum(axis=axes_other) if bs is not None else None})
        tol = cancel_tol(dtype, ratio, weight_max=float(np.abs(wt).max()) if wt is not None else 1.0) if kind == "offset" else None
        attrs = {"training": training, "momentum": mom, "running_var_unbiased": unb, "eps": eps, "axis": axis}
        mtag = "mcum" if mom is None else f"m{mom:g}"
        name = (f"numpy_torch/{op}_{dtype}_{shape_tag(shape)}_axis{axis}_{'train' if training else 'eval'}_{mtag}_"
                f"{'unbiased' if unb else 'biased'}_{aff}_{'stats' if running else 'nostats'}"
                f"{'' if nbt is None else f'_nbt{nbt}'}_{kind}{'_bwd' if bwd else ''}")
        inputs = {"x": x, "weight": wt, "bias": bs, "running_mean": rm, "running_var": rv, "num_batches_tracked": nbt_in}
        w.write(nn_case(name, op, attrs, inputs, exp, dtype, tol, go))
    # errors
    for dtype in ("f32", "f64"):
        base = {"training": True, "momentum": 0.1, "running_var_unbiased": True, "eps": 1e-5, "axis": 1}
        w.write(nn_case(f"numpy_torch/{op}_error_one_value_per_channel_axis-1_{dtype}", op, dict(base, axis=-1),
                        {"x": rnd(rng, (1, 1, 3), dtype)}, None, dtype, error="one value per channel"))
        w.write(nn_case(f"numpy_torch/{op}_error_bias_len_{dtype}", op, base,
                        {"x": rnd(rng, (4, 3), dtype), "bias": rnd(rng, (2,), dtype)}, None, dtype, error="bias has 2 elements, x has 3 channels"))
        w.write(nn_case(f"numpy_torch/{op}_error_axis_out_of_range_{dtype}", op, dict(base, axis=3),
                        {"x": rnd(rng, (4, 3), dtype)}, None, dtype, error="axis 3 out of range for rank 2"))
        w.write(nn_case(f"numpy_torch/{op}_error_running_var_len_eval_{dtype}", op, dict(base, training=False),
                        {"x": rnd(rng, (4, 3), dtype), "running_mean": rnd(rng, (3,), dtype), "running_var": np.ones(4)},
                        None, dtype, error="running_var has 4 elements, x has 3 channels"))
        w.write(nn_case(f"numpy_torch/{op}_error_rank1_{dtype}", op, base,
                        {"x": rnd(rng, (5,), dtype)}, None, dtype, error="x must have a batch and a channel dim"))


def gen_group_norm(w: Writer, rng):
    op = "group_norm"
    configs = []
    for dtype in ("f64", "f32"):
        configs += [
            ((1, 1), 1, "affine", "plain", False), ((3, 4), 2, "affine", "plain", False), ((2, 6, 1), 6, "affine", "plain", False),
            ((2, 6, 7), 1, "none", "plain", False), ((1, 10, 3, 3), 5, "weight", "plain", False), ((2, 4, 2, 3, 2), 2, "bias", "plain", False),
            ((2, 9, 11), 3, "affine", "plain", True), ((3, 4, 5), 4, "none", "plain", True), ((2, 6, 2, 3), 2, "weight", "plain", True),
            ((2, 6, 3), 3, "bias", "plain", True),
            ((2, 4, 40), 2, "affine", "offset", False), ((2, 4, 40), 2, "affine", "offset", True), ((2, 4, 5), 2, "affine", "zeros", False),
            ((2, 4, 5), 2, "affine", "huge", False),
        ]
    for (shape, g, aff, kind, bwd), dtype in [(c, d) for d in ("f64", "f32") for c in configs[: len(configs) // 2]]:
        x, ratio = gen_x(rng, shape, dtype, kind)
        c = shape[1]
        wt = rnd(rng, (c,), dtype, 1.0, 0.5) if aff in ("affine", "weight") else None
        bs = rnd(rng, (c,), dtype, 0.0, 0.5) if aff in ("affine", "bias") else None
        eps = 1e-5
        y, mean, rstd = ref_group_norm(x, g, wt, bs, eps)
        exp = {"y": y, "mean": mean, "rstd": rstd}
        go = None
        if bwd:
            go = rnd(rng, shape, dtype)
            n = shape[0]
            xr = x.reshape(n, g, -1)
            wb = bcast_channel(wt, x.ndim, 1) if wt is not None else None
            g_ = (go * (wb if wb is not None else 1.0)).reshape(n, g, -1)
            mk, rk = mean.reshape(n, g, 1), rstd.reshape(n, g, 1)
            xhat = (xr - mk) * rk
            dx = (rk * (g_ - g_.mean(axis=2, keepdims=True) - xhat * (g_ * xhat).mean(axis=2, keepdims=True))).reshape(shape)
            other = tuple(i for i in range(x.ndim) if i != 1)
            dw = (go * xhat.reshape(shape)).sum(axis=other)
            db = go.sum(axis=other)
            if kind == "plain":
                fd_check(lambda xx: ref_group_norm(xx, g, wt, bs, eps)[0], x, go, dx, "group_norm")
            exp.update({"dx": dx, "dweight": dw if wt is not None else None, "dbias": db if bs is not None else None})
        tol = cancel_tol(dtype, ratio, weight_max=float(np.abs(wt).max()) if wt is not None else 1.0) if kind == "offset" else None
        name = f"numpy_torch/{op}_{dtype}_{shape_tag(shape)}_g{g}_{aff}_{kind}{'_bwd' if bwd else ''}"
        w.write(nn_case(name, op, {"num_groups": g, "eps": eps}, {"x": x, "weight": wt, "bias": bs}, exp, dtype, tol, go))
    for dtype in ("f32", "f64"):
        w.write(nn_case(f"numpy_torch/{op}_error_zero_groups_{dtype}", op, {"num_groups": 0, "eps": 1e-5},
                        {"x": rnd(rng, (2, 4, 3), dtype)}, None, dtype, error="num_groups 0"))
        w.write(nn_case(f"numpy_torch/{op}_error_rank1_{dtype}", op, {"num_groups": 1, "eps": 1e-5},
                        {"x": rnd(rng, (4,), dtype)}, None, dtype, error="x needs (N, C, *)"))


def gen_instance_norm(w: Writer, rng):
    op = "instance_norm"
    configs = [((1, 1, 2), "affine", "plain", False), ((2, 3, 1, 5), "none", "plain", False), ((2, 2, 2, 2, 3), "weight", "plain", False),
               ((3, 5, 7), "bias", "plain", True), ((2, 3, 4), "none", "plain", True), ((2, 2, 3, 3), "affine", "plain", True),
               ((2, 3, 50), "affine", "offset", False), ((2, 3, 8), "affine", "const", False), ((2, 3, 8), "affine", "zeros", False)]
    for (shape, aff, kind, bwd), dtype in [(c, d) for d in ("f64", "f32") for c in configs]:
        x, ratio = gen_x(rng, shape, dtype, kind)
        c = shape[1]
        wt = rnd(rng, (c,), dtype, 1.0, 0.5) if aff in ("affine", "weight") else None
        bs = rnd(rng, (c,), dtype, 0.0, 0.5) if aff in ("affine", "bias") else None
        eps = 1e-5 if kind != "plain" else 1e-3
        y = ref_instance_norm(x, wt, bs, eps)
        exp = {"y": y}
        go = None
        if bwd:
            go = rnd(rng, shape, dtype)
            n = shape[0]
            xr = x.reshape(n, c, -1)
            mean, var = moments(xr, (2,))
            rk = 1.0 / np.sqrt(var + eps)
            xhat = (xr - mean) * rk
            g_ = (go * (bcast_channel(wt, x.ndim, 1) if wt is not None else 1.0)).reshape(n, c, -1)
            dx = (rk * (g_ - g_.mean(axis=2, keepdims=True) - xhat * (g_ * xhat).mean(axis=2, keepdims=True))).reshape(shape)
            other = tuple(i for i in range(x.ndim) if i != 1)
            fd_check(lambda xx: ref_instance_norm(xx, wt, bs, eps), x, go, dx, "instance_norm")
            exp.update({"dx": dx, "dweight": (go * xhat.reshape(shape)).sum(axis=other) if wt is not None else None,
                        "dbias": go.sum(axis=other) if bs is not None else None})
        tol = cancel_tol(dtype, ratio, weight_max=float(np.abs(wt).max()) if wt is not None else 1.0) if kind == "offset" else None
        name = f"numpy_torch/{op}_{dtype}_{shape_tag(shape)}_{aff}_{kind}{'_bwd' if bwd else ''}"
        w.write(nn_case(name, op, {"eps": eps}, {"x": x, "weight": wt, "bias": bs}, exp, dtype, tol, go))


def gen_lp(w: Writer, rng):
    op = "lp_normalize"
    configs = []
    for p in (1, 2):
        configs += [((5,), 0, "plain", 1e-12, False), ((1, 1), 1, "plain", 1e-12, False), ((2, 3, 4), -2, "plain", 1e-12, False),
                    ((2, 3, 4), -3, "plain", 1e-12, False), ((2, 3, 2, 5), 2, "plain", 1e-12, True), ((3, 7), -1, "plain", 1e-12, True),
                    ((3, 7), 1, "zeros", 1e-12, True), ((3, 7), 1, "tiny", 1e-3, True), ((3, 7), 0, "huge", 1e-12, False),
                    ((2, 3, 4, 2, 3), 4, "offset", 1e-12, False)]
    for (shape, axis, kind, eps, bwd), p, dtype in [(c, p, d) for d in ("f64", "f32") for p in (1, 2) for c in configs[:10]]:
        x, _ = gen_x(rng, shape, dtype, kind)
        y = ref_lp(x, p, axis, eps)
        exp = {"y": y}
        go = None
        if bwd:
            go = rnd(rng, shape, dtype)
            n = (np.abs(x).sum(axis=axis, keepdims=True) if p == 1 else np.sqrt((x * x).sum(axis=axis, keepdims=True)))
            big = n > eps
            nn_ = np.maximum(n, eps)
            if p == 1:
                dxb = go / nn_ - np.sign(x) * (go * x).sum(axis=axis, keepdims=True) / (nn_ * nn_)
            else:
                yy = x / nn_
                dxb = (go - yy * (go * yy).sum(axis=axis, keepdims=True)) / nn_
            dx = np.where(big, dxb, go / eps)
            if kind == "plain":
                fd_check(lambda xx: ref_lp(xx, p, axis, eps), x, go, dx, "lp")
            exp["dx"] = dx
        name = f"numpy_torch/{op}_{dtype}_{shape_tag(shape)}_p{p}_axis{axis}_eps{eps:g}_{kind}{'_bwd' if bwd else ''}"
        w.write(nn_case(name, op, {"p": p, "axis": axis, "eps": eps}, {"x": x}, exp, dtype, None, go))
    w.write(nn_case("numpy_torch/lp_normalize_error_axis_out_of_range_f64", op, {"p": 2, "axis": 2, "eps": 1e-12},
                    {"x": rnd(rng, (3, 4), "f64")}, None, "f64", error="axis 2 out of range for rank 2"))


def gen_mvn(w: Writer, rng):
    op = "mean_variance_normalization"
    configs = [((5,), [0], "plain"), ((3, 4), [-1], "plain"), ((3, 4), [0, 1], "plain"), ((2, 3, 4, 5), [0, 2, 3], "plain"),
               ((2, 3, 4, 5), [-1, -2], "plain"), ((2, 3, 1, 5), [1, 3], "plain"), ((2, 2, 3, 2, 3), [0, 4], "plain"),
               ((4, 3, 20), [0, 2], "offset"), ((3, 4), [1], "const"), ((2, 3, 4), [2, 0], "plain")]
    for (shape, axes, kind), dtype in [(c, d) for d in ("f64", "f32") for c in configs]:
        x, ratio = gen_x(rng, shape, dtype, kind)
        eps = 1e-9
        y = ref_mvn(x, axes, eps)
        tol = cancel_tol(dtype, ratio) if kind == "offset" else None
        name = f"numpy_torch/{op}_{dtype}_{shape_tag(shape)}_axes{'_'.join(map(str, axes))}_{kind}"
        w.write(nn_case(name, op, {"axes": axes, "eps": eps}, {"x": x}, {"y": y}, dtype, tol))


# --- extra: non-finite values, large shapes (SIMD tails, threads), channels-last --


def poison(x, where, value):
    x = x.copy()
    x[where] = value
    return x


def gen_extra(w: Writer, rng):
    big_tol = {"f32": ONNX_TOL["f32"], "f64": BASE_TOL["f64"]}
    for dtype in ("f64", "f32"):
        # Non-finite values: NaN in group 1, +inf in group 2, -inf and +inf in group 3;
        # group 0 stays finite and must still be right. Means of groups holding an
        # infinity are left out (the README: implementation-defined).
        x = rnd(rng, (4, 9), dtype)
        x = poison(x, (1, 3), np.nan)
        x = poison(x, (2, 5), np.inf)
        x = poison(poison(x, (3, 0), -np.inf), (3, 7), np.inf)
        wt, bs = rnd(rng, (9,), dtype, 1.0, 0.5), rnd(rng, (9,), dtype)
        with np.errstate(invalid="ignore"):
            y, mean, rstd = ref_layer_norm(x, 1, wt, bs, 1e-5)
            yr, rr = ref_rms_norm(x, 1, wt, 1e-5)
        w.write(nn_case(f"numpy_torch/layer_norm_{dtype}_4x9_nonfinite_rows", "layer_norm", {"normalized_shape": [9], "eps": 1e-5},
                        {"x": x, "weight": wt, "bias": bs}, {"y": y, "rstd": rstd}, dtype))
        w.write(nn_case(f"numpy_torch/rms_norm_{dtype}_4x9_nonfinite_rows", "rms_norm", {"normalized_shape": [9], "eps": 1e-5},
                        {"x": x, "weight": wt}, {"y": yr, "rstd": rr}, dtype))
        for p in (1, 2):
            with np.errstate(invalid="ignore"):
                yl = ref_lp(x, p, 1, 1e-12)
            w.write(nn_case(f"numpy_torch/lp_normalize_{dtype}_4x9_p{p}_nonfinite_rows", "lp_normalize", {"p": p, "axis": -1, "eps": 1e-12},
                            {"x": x}, {"y": yl}, dtype))
        with np.errstate(invalid="ignore"):
            ym = ref_mvn(x, [1], 1e-9)
        w.write(nn_case(f"numpy_torch/mean_variance_normalization_{dtype}_4x9_nonfinite_rows", "mean_variance_normalization",
                        {"axes": [-1], "eps": 1e-9}, {"x": x}, {"y": ym}, dtype))
        # batch_norm: NaN in channel 1, inf in channel 2 (train and eval), group_norm likewise.
        xb = rnd(rng, (3, 4, 5), dtype)
        xb = poison(poison(xb, (1, 1, 2), np.nan), (2, 2, 4), np.inf)
        c = 4
        wt, bs = rnd(rng, (c,), dtype, 1.0, 0.5), rnd(rng, (c,), dtype)
        rm, rv = rnd(rng, (c,), dtype), (np.abs(rnd(rng, (c,), dtype)) + 0.5).astype(NP[dtype]).astype(np.float64)
        with np.errstate(invalid="ignore"):
            mean, var, n = ref_batch_stats(xb, 1)
            yb = ref_batch_norm_y(xb, 1, mean, var, wt, bs, 1e-5)
            ye = ref_batch_norm_y(xb, 1, rm, rv, wt, bs, 1e-5)
        exp = {"y": yb, "save_rstd": 1.0 / np.sqrt(var + 1e-5), "running_var": 0.9 * rv + 0.1 * var * n / (n - 1)}
        attrs = {"training": True, "momentum": 0.1, "running_var_unbiased": True, "eps": 1e-5, "axis": 1}
        w.write(nn_case(f"numpy_torch/batch_norm_{dtype}_3x4x5_train_nonfinite_channels", "batch_norm", attrs,
                        {"x": xb, "weight": wt, "bias": bs, "running_mean": rm, "running_var": rv}, exp, dtype))
        w.write(nn_case(f"numpy_torch/batch_norm_{dtype}_3x4x5_eval_nonfinite", "batch_norm", dict(attrs, training=False),
                        {"x": xb, "weight": wt, "bias": bs, "running_mean": rm, "running_var": rv}, {"y": ye}, dtype))
        with np.errstate(invalid="ignore"):
            yg, mg, rg = ref_group_norm(xb, 2, wt, bs, 1e-5)
        w.write(nn_case(f"numpy_torch/group_norm_{dtype}_3x4x5_g2_nonfinite", "group_norm", {"num_groups": 2, "eps": 1e-5},
                        {"x": xb, "weight": wt, "bias": bs}, {"y": yg, "rstd": rg}, dtype))
        with np.errstate(invalid="ignore"):
            yi = ref_instance_norm(xb, wt, bs, 1e-5)
        w.write(nn_case(f"numpy_torch/instance_norm_{dtype}_3x4x5_nonfinite", "instance_norm", {"eps": 1e-5},
                        {"x": xb, "weight": wt, "bias": bs}, {"y": yi}, dtype))
        # eps = 0 on constant rows: rstd = inf, y = 0 * inf = NaN (PyTorch's formula).
        xc, _ = gen_x(rng, (3, 6), dtype, "const")
        with np.errstate(divide="ignore", invalid="ignore"):
            yc, mc, rc = ref_layer_norm(xc, 1, None, None, 0.0)
        w.write(nn_case(f"numpy_torch/layer_norm_{dtype}_3x6_const_eps0", "layer_norm", {"normalized_shape": [6], "eps": 0.0},
                        {"x": xc}, {"y": yc, "mean": mc, "rstd": rc}, dtype))

        # Large shapes: SIMD bodies and tails, threaded splits.
        for shape, k in [((3, 4099), 1), ((2, 37, 61), 2)]:
            x = rnd(rng, shape, dtype, 0.5, 2.0)
            ns = list(shape[len(shape) - k:])
            wt, bs = rnd(rng, ns, dtype, 1.0, 0.5), rnd(rng, ns, dtype)
            y, mean, rstd = ref_layer_norm(x, k, wt, bs, 1e-5)
            go = rnd(rng, shape, dtype)
            axes = tuple(range(x.ndim - k, x.ndim))
            mk, rk = mean.reshape(mean.shape + (1,) * k), rstd.reshape(rstd.shape + (1,) * k)
            dx, dw, db = norm_backward(x, go, axes, mk, rk, wt, tuple(range(x.ndim - k)), dtype)
            w.write(nn_case(f"numpy_torch/layer_norm_{dtype}_{shape_tag(shape)}_n{k}_large_bwd", "layer_norm",
                            {"normalized_shape": ns, "eps": 1e-5}, {"x": x, "weight": wt, "bias": bs},
                            {"y": y, "mean": mean, "rstd": rstd, "dx": dx, "dweight": dw, "dbias": db}, dtype, big_tol[dtype], go))
            yr, rr = ref_rms_norm(x, k, wt, 1e-6)
            w.write(nn_case(f"numpy_torch/rms_norm_{dtype}_{shape_tag(shape)}_n{k}_large", "rms_norm",
                            {"normalized_shape": ns, "eps": 1e-6}, {"x": x, "weight": wt}, {"y": yr, "rstd": rr}, dtype, big_tol[dtype]))
        for shape, axis in [((16, 37, 7, 7), 1), ((16, 7, 7, 37), -1), ((64, 19), 1), ((4, 9, 130), 1)]:
            x = rnd(rng, shape, dtype, 0.3, 1.7)
            ax = axis % x.ndim
            c = shape[ax]
            wt, bs = rnd(rng, (c,), dtype, 1.0, 0.5), rnd(rng, (c,), dtype)
            rm, rv = rnd(rng, (c,), dtype), (np.abs(rnd(rng, (c,), dtype)) + 0.5).astype(NP[dtype]).astype(np.float64)
            mean, var, n = ref_batch_stats(x, ax)
            y = ref_batch_norm_y(x, ax, mean, var, wt, bs, 1e-5)
            go = rnd(rng, shape, dtype)
            other = tuple(i for i in range(x.ndim) if i != ax)
            dx, dw, db = norm_backward(x, go, other, bcast_channel(mean, x.ndim, ax), bcast_channel(1 / np.sqrt(var + 1e-5), x.ndim, ax),
                                       bcast_channel(wt, x.ndim, ax), other, dtype)
            attrs = {"training": True, "momentum": 0.1, "running_var_unbiased": True, "eps": 1e-5, "axis": axis}
            exp = {"y": y, "save_mean": mean, "save_rstd": 1 / np.sqrt(var + 1e-5), "running_mean": 0.9 * rm + 0.1 * mean,
                   "running_var": 0.9 * rv + 0.1 * var * n / (n - 1), "dx": dx, "dweight": dw, "dbias": db}
            ins = {"x": x, "weight": wt, "bias": bs, "running_mean": rm, "running_var": rv}
            w.write(nn_case(f"numpy_torch/batch_norm_{dtype}_{shape_tag(shape)}_axis{axis}_train_large_bwd", "batch_norm", attrs, ins, exp,
                            dtype, big_tol[dtype], go))
            ye = ref_batch_norm_y(x, ax, rm, rv, wt, bs, 1e-5)
            rk = bcast_channel(1 / np.sqrt(rv + 1e-5), x.ndim, ax)
            xh = (x - bcast_channel(rm, x.ndim, ax)) * rk
            exp = {"y": ye, "dx": go * bcast_channel(wt, x.ndim, ax) * rk, "dweight": (go * xh).sum(axis=other), "dbias": go.sum(axis=other)}
            w.write(nn_case(f"numpy_torch/batch_norm_{dtype}_{shape_tag(shape)}_axis{axis}_eval_large_bwd", "batch_norm",
                            dict(attrs, training=False), ins, exp, dtype, big_tol[dtype], go))
        for shape, g in [((2, 32, 17, 17), 8), ((3, 12, 257), 4), ((2, 16, 31, 31), 16)]:
            x = rnd(rng, shape, dtype, 0.3, 1.7)
            c = shape[1]
            wt, bs = rnd(rng, (c,), dtype, 1.0, 0.5), rnd(rng, (c,), dtype)
            y, mean, rstd = ref_group_norm(x, g, wt, bs, 1e-5)
            go = rnd(rng, shape, dtype)
            n = shape[0]
            xr = x.reshape(n, g, -1)
            g_ = (go * bcast_channel(wt, x.ndim, 1)).reshape(n, g, -1)
            mk, rk = mean.reshape(n, g, 1), rstd.reshape(n, g, 1)
            xhat = (xr - mk) * rk
            dx = (rk * (g_ - g_.mean(axis=2, keepdims=True) - xhat * (g_ * xhat).mean(axis=2, keepdims=True))).reshape(shape)
            other = tuple(i for i in range(x.ndim) if i != 1)
            exp = {"y": y, "mean": mean, "rstd": rstd, "dx": dx, "dweight": (go * xhat.reshape(shape)).sum(axis=other), "dbias": go.sum(axis=other)}
            op = "instance_norm" if g == c else "group_norm"
            attrs = {"eps": 1e-5} if op == "instance_norm" else {"num_groups": g, "eps": 1e-5}
            if op == "instance_norm":
                exp.pop("mean"), exp.pop("rstd")
            w.write(nn_case(f"numpy_torch/{op}_{dtype}_{shape_tag(shape)}_g{g}_large_bwd", op, attrs, {"x": x, "weight": wt, "bias": bs},
                            exp, dtype, big_tol[dtype], go))
        for shape, axis in [((3, 4099), 1), ((2, 33, 65), 1), ((2, 33, 65), 0)]:
            x = rnd(rng, shape, dtype)
            for p in (1, 2):
                w.write(nn_case(f"numpy_torch/lp_normalize_{dtype}_{shape_tag(shape)}_p{p}_axis{axis}_large", "lp_normalize",
                                {"p": p, "axis": axis, "eps": 1e-12}, {"x": x}, {"y": ref_lp(x, p, axis, 1e-12)}, dtype, big_tol[dtype]))
        # Channels-last group_norm / instance_norm (Keras' axis=-1), if "axis" is honoured.
        for shape, g, axis, bwd in [((2, 5, 6), 3, -1, False), ((2, 3, 4, 8), 2, -1, True), ((2, 3, 4, 8), 8, -1, True),
                                    ((2, 3, 4, 5), 2, 2, True), ((2, 3, 4, 5), 4, -2, False)]:
            x = rnd(rng, shape, dtype, 0.3, 1.7)
            ax = axis % len(shape)
            c = shape[ax]
            wt, bs = rnd(rng, (c,), dtype, 1.0, 0.5), rnd(rng, (c,), dtype)
            xt = np.moveaxis(x, ax, 1)
            y, mean, rstd = ref_group_norm(xt, g, wt, bs, 1e-5)
            exp = {"y": np.moveaxis(y, 1, ax), "mean": mean, "rstd": rstd}
            go = None
            if bwd:
                go = rnd(rng, shape, dtype)
                got = np.moveaxis(go, ax, 1)
                n = shape[0]
                g_ = (got * bcast_channel(wt, x.ndim, 1)).reshape(n, g, -1)
                mk, rk = mean.reshape(n, g, 1), rstd.reshape(n, g, 1)
                xhat = (xt.reshape(n, g, -1) - mk) * rk
                dx = (rk * (g_ - g_.mean(axis=2, keepdims=True) - xhat * (g_ * xhat).mean(axis=2, keepdims=True))).reshape(xt.shape)
                other = tuple(i for i in range(x.ndim) if i != 1)
                exp.update({"dx": np.moveaxis(dx, 1, ax), "dweight": (got * xhat.reshape(xt.shape)).sum(axis=other), "dbias": got.sum(axis=other)})
                fd_check(lambda xx: np.moveaxis(ref_group_norm(np.moveaxis(xx, ax, 1), g, wt, bs, 1e-5)[0], 1, ax), x, go, exp["dx"], "gn axis")
            tag = f"{shape_tag(shape)}_axis{axis}{'_bwd' if bwd else ''}"
            if g == c:
                exp.pop("mean"), exp.pop("rstd")
                w.write(nn_case(f"numpy_torch/instance_norm_{dtype}_{tag}", "instance_norm", {"eps": 1e-5, "axis": axis},
                                {"x": x, "weight": wt, "bias": bs}, exp, dtype, None, go))
            else:
                w.write(nn_case(f"numpy_torch/group_norm_{dtype}_{tag}_g{g}", "group_norm", {"num_groups": g, "eps": 1e-5, "axis": axis},
                                {"x": x, "weight": wt, "bias": bs}, exp, dtype, None, go))
        w.write(nn_case(f"numpy_torch/group_norm_error_batch_axis_{dtype}", "group_norm", {"num_groups": 1, "eps": 1e-5, "axis": 0},
                        {"x": rnd(rng, (2, 3, 4), dtype)}, None, dtype, error="axis 0 is the batch axis"))


def gen_extra_bwd(w: Writer, rng):
    """Backward with NaN inputs (as torch's layer_norm nan_bwd case) and with variance near eps."""
    for dtype in ("f64", "f32"):
        for kind in ("nan", "near_eps"):
            base_kind = "plain" if kind == "nan" else kind
            # batch_norm, train and eval, channel 1 poisoned.
            shape = (4, 3, 6)
            x, ratio = gen_x(rng, shape, dtype, base_kind)
            if kind == "nan":
                x = poison(x, (2, 1, 3), np.nan)
            c = 3
            wt, bs = rnd(rng, (c,), dtype, 1.0, 0.5), rnd(rng, (c,), dtype)
            rm = rnd(rng, (c,), dtype, 5.0 if kind == "near_eps" else 0.0, 1e-3)
            rv = (np.abs(rnd(rng, (c,), dtype, 1e-5, 1e-6))).astype(NP[dtype]).astype(np.float64)
            go = rnd(rng, shape, dtype)
            tol = cancel_tol(dtype, ratio, weight_max=float(np.abs(wt).max())) if kind == "near_eps" else None
            other = (0, 2)
            with np.errstate(invalid="ignore"):
                mean, var, n = ref_batch_stats(x, 1)
                y = ref_batch_norm_y(x, 1, mean, var, wt, bs, 1e-5)
                dx, dw, db = norm_backward(x, go, other, bcast_channel(mean, 3, 1), bcast_channel(1 / np.sqrt(var + 1e-5), 3, 1),
                                           bcast_channel(wt, 3, 1), other, dtype)
            attrs = {"training": True, "momentum": 0.1, "running_var_unbiased": True, "eps": 1e-5, "axis": 1}
            exp = {"y": y, "save_mean": mean, "save_rstd": 1 / np.sqrt(var + 1e-5), "running_mean": 0.9 * rm + 0.1 * mean,
                   "running_var": 0.9 * rv + 0.1 * var * n / (n - 1), "dx": dx, "dweight": dw, "dbias": db}
            ins = {"x": x, "weight": wt, "bias": bs, "running_mean": rm, "running_var": rv}
            w.write(nn_case(f"numpy_torch/batch_norm_{dtype}_4x3x6_train_affine_{kind}_bwd", "batch_norm", attrs, ins, exp, dtype, tol, go))
            with np.errstate(invalid="ignore"):
                rk = bcast_channel(1 / np.sqrt(rv + 1e-5), 3, 1)
                xh = (x - bcast_channel(rm, 3, 1)) * rk
                exp = {"y": ref_batch_norm_y(x, 1, rm, rv, wt, bs, 1e-5), "dx": go * bcast_channel(wt, 3, 1) * rk,
                       "dweight": (go * xh).sum(axis=other), "dbias": go.sum(axis=other)}
            # eval with running statistics: no cancellation inside normkit (x - running_mean is exact-ish).
            w.write(nn_case(f"numpy_torch/batch_norm_{dtype}_4x3x6_eval_affine_{kind}_bwd", "batch_norm", dict(attrs, training=False), ins, exp,
                            dtype, tol, go))
            # group_norm / instance_norm with NaN in sample 1.
            shape = (2, 4, 5)
            x, ratio = gen_x(rng, shape, dtype, base_kind)
            if kind == "nan":
                x = poison(x, (1, 0, 2), np.nan)
            wt, bs = rnd(rng, (4,), dtype, 1.0, 0.5), rnd(rng, (4,), dtype)
            go = rnd(rng, shape, dtype)
            tol = cancel_tol(dtype, ratio, weight_max=float(np.abs(wt).max())) if kind == "near_eps" else None
            for g in (2, 4):
                with np.errstate(invalid="ignore"):
                    y, mean, rstd = ref_group_norm(x, g, wt, bs, 1e-5)
                    xr = x.reshape(2, g, -1)
                    g_ = (go * bcast_channel(wt, 3, 1)).reshape(2, g, -1)
                    mk, rk = mean.reshape(2, g, 1), rstd.reshape(2, g, 1)
                    xhat = (xr - mk) * rk
                    dx = (rk * (g_ - g_.mean(axis=2, keepdims=True) - xhat * (g_ * xhat).mean(axis=2, keepdims=True))).reshape(shape)
                    dw = (go * xhat.reshape(shape)).sum(axis=(0, 2))
                exp = {"y": y, "mean": mean, "rstd": rstd, "dx": dx, "dweight": dw, "dbias": go.sum(axis=(0, 2))}
                if g == 4:
                    exp.pop("mean"), exp.pop("rstd")
                    w.write(nn_case(f"numpy_torch/instance_norm_{dtype}_2x4x5_affine_{kind}_bwd", "instance_norm", {"eps": 1e-5},
                                    {"x": x, "weight": wt, "bias": bs}, exp, dtype, tol, go))
                else:
                    w.write(nn_case(f"numpy_torch/group_norm_{dtype}_2x4x5_g2_affine_{kind}_bwd", "group_norm", {"num_groups": 2, "eps": 1e-5},
                                    {"x": x, "weight": wt, "bias": bs}, exp, dtype, tol, go))
            # rms_norm and layer_norm, lp: NaN in row 1.
            shape = (3, 8)
            x, ratio = gen_x(rng, shape, dtype, base_kind)
            if kind == "nan":
                x = poison(x, (1, 4), np.nan)
            wt, bs = rnd(rng, (8,), dtype, 1.0, 0.5), rnd(rng, (8,), dtype)
            go = rnd(rng, shape, dtype)
            with np.errstate(invalid="ignore"):
                y, mean, rstd = ref_layer_norm(x, 1, wt, bs, 1e-5)
                dx, dw, db = norm_backward(x, go, (1,), mean[:, None], rstd[:, None], wt, (0,), dtype)
            tol = cancel_tol(dtype, ratio, weight_max=float(np.abs(wt).max())) if kind == "near_eps" else None
            w.write(nn_case(f"numpy_torch/layer_norm_{dtype}_3x8_affine_{kind}_bwd", "layer_norm", {"normalized_shape": [8], "eps": 1e-5},
                            {"x": x, "weight": wt, "bias": bs}, {"y": y, "mean": mean, "rstd": rstd, "dx": dx, "dweight": dw, "dbias": db},
                            dtype, tol, go))
            if kind == "nan":
                with np.errstate(invalid="ignore"):
                    yr, rr = ref_rms_norm(x, 1, wt, 1e-5)
                    rk = rr[:, None]
                    gg = go * wt
                    dxr = rk * (gg - x * rk * rk * (gg * x).mean(axis=1, keepdims=True))
                    dwr = (go * x * rk).sum(axis=0)
                w.write(nn_case(f"numpy_torch/rms_norm_{dtype}_3x8_weight_nan_bwd", "rms_norm", {"normalized_shape": [8], "eps": 1e-5},
                                {"x": x, "weight": wt}, {"y": yr, "rstd": rr, "dx": dxr, "dweight": dwr}, dtype, None, go))
                for p in (1, 2):
                    with np.errstate(invalid="ignore"):
                        nrm = np.abs(x).sum(axis=1, keepdims=True) if p == 1 else np.sqrt((x * x).sum(axis=1, keepdims=True))
                        if p == 1:
                            dxl = go / nrm - np.sign(x) * (go * x).sum(axis=1, keepdims=True) / (nrm * nrm)
                        else:
                            yy = x / nrm
                            dxl = (go - yy * (go * yy).sum(axis=1, keepdims=True)) / nrm
                        yl = ref_lp(x, p, 1, 1e-12)
                    w.write(nn_case(f"numpy_torch/lp_normalize_{dtype}_3x8_p{p}_nan_bwd", "lp_normalize", {"p": p, "axis": 1, "eps": 1e-12},
                                    {"x": x}, {"y": yl, "dx": dxl}, dtype, None, go))
        # p = 1 backward with exact zeros inside non-zero rows (sign(0) = 0).
        x = rnd(rng, (3, 7), dtype)
        x[0, 2] = x[1, 0] = x[2, 6] = 0.0
        go = rnd(rng, (3, 7), dtype)
        nrm = np.abs(x).sum(axis=1, keepdims=True)
        dxl = go / nrm - np.sign(x) * (go * x).sum(axis=1, keepdims=True) / (nrm * nrm)
        w.write(nn_case(f"numpy_torch/lp_normalize_{dtype}_3x7_p1_inner_zeros_bwd", "lp_normalize", {"p": 1, "axis": -1, "eps": 1e-12},
                        {"x": x}, {"y": ref_lp(x, 1, -1, 1e-12), "dx": dxl}, dtype, None, go))


def gen_more_errors(w: Writer, rng):
    """Inputs PyTorch (or ONNX, numpy) refuses."""
    for dtype in ("f64", "f32"):
        E = lambda name, op, attrs, inputs, why: w.write(nn_case(f"numpy_torch/{op}_error_{name}_{dtype}", op, attrs, inputs, None, dtype, error=why))
        E("rank2", "instance_norm", {"eps": 1e-5}, {"x": rnd(rng, (3, 4), dtype)}, "instance_norm needs spatial dims (N, C, L...)")
        E("one_spatial_value", "instance_norm", {"eps": 1e-5}, {"x": rnd(rng, (3, 4, 1), dtype)}, "expected more than 1 spatial element when training")
        E("axes_out_of_range", "mean_variance_normalization", {"axes": [0, 3], "eps": 1e-9}, {"x": rnd(rng, (3, 4), dtype)}, "axis 3 out of range")
        E("axes_duplicate", "mean_variance_normalization", {"axes": [1, -1], "eps": 1e-9}, {"x": rnd(rng, (3, 4), dtype)}, "duplicate axis")
        E("axis_negative_out_of_range", "lp_normalize", {"p": 2, "axis": -3, "eps": 1e-12}, {"x": rnd(rng, (3, 4), dtype)}, "axis -3 out of range")
        E("bias_len", "group_norm", {"num_groups": 2, "eps": 1e-5}, {"x": rnd(rng, (2, 4, 3), dtype), "weight": rnd(rng, (4,), dtype),
                                                                        "bias": rnd(rng, (3,), dtype)}, "bias has 3 elements, x has 4 channels")
        E("running_mean_only", "batch_norm", {"training": False, "momentum": 0.1, "running_var_unbiased": True, "eps": 1e-5, "axis": 1},
          {"x": rnd(rng, (4, 3), dtype), "running_mean": rnd(rng, (3,), dtype)}, "running_var missing")
        E("grad_output_shape", "layer_norm", {"normalized_shape": [4], "eps": 1e-5}, {"x": rnd(rng, (3, 4), dtype)}, "unused")
        E("weight_len", "rms_norm", {"normalized_shape": [2, 3], "eps": 1e-5}, {"x": rnd(rng, (4, 2, 3), dtype), "weight": rnd(rng, (3,), dtype)},
          "weight has 3 elements, normalized_shape needs 6")
        E("training_batch1_nostats", "batch_norm", {"training": True, "momentum": 0.1, "running_var_unbiased": True, "eps": 1e-5, "axis": 1},
          {"x": rnd(rng, (1, 5), dtype)}, "training needs more than one value per channel")
    # Eval batch_norm far from the origin: running_mean at the data's offset, so
    # (x - running_mean) cancels; same bound as the training cancellation cases.
    for dtype in ("f64", "f32"):
        loc, sc = (1e6, 1e-3) if dtype == "f64" else (1e3, 1.0)
        x = rnd(rng, (6, 3, 5), dtype, loc, sc)
        rm = rnd(rng, (3,), dtype, loc, sc)
        rv = (np.abs(rnd(rng, (3,), dtype, sc * sc, 0.1 * sc * sc))).astype(NP[dtype]).astype(np.float64)
        wt, bs = rnd(rng, (3,), dtype, 1.0, 0.5), rnd(rng, (3,), dtype)
        eps = 1e-5 * sc * sc
        go = rnd(rng, (6, 3, 5), dtype)
        rk = bcast_channel(1 / np.sqrt(rv + eps), 3, 1)
        xh = (x - bcast_channel(rm, 3, 1)) * rk
        exp = {"y": ref_batch_norm_y(x, 1, rm, rv, wt, bs, eps), "dx": go * bcast_channel(wt, 3, 1) * rk,
               "dweight": (go * xh).sum(axis=(0, 2)), "dbias": go.sum(axis=(0, 2))}
        tol = cancel_tol(dtype, loc / sc, weight_max=float(np.abs(wt).max()))
        w.write(nn_case(f"numpy_torch/batch_norm_{dtype}_6x3x5_eval_affine_offset_bwd", "batch_norm",
                        {"training": False, "momentum": 0.1, "running_var_unbiased": True, "eps": eps, "axis": 1},
                        {"x": x, "weight": wt, "bias": bs, "running_mean": rm, "running_var": rv}, exp, dtype, tol, go))
        # mean_variance_normalization with eps = 0 on a constant group: 0 / 0 = NaN.
        xc, _ = gen_x(rng, (3, 5), dtype, "const")
        with np.errstate(divide="ignore", invalid="ignore"):
            ym = ref_mvn(xc, [1], 0.0)
        w.write(nn_case(f"numpy_torch/mean_variance_normalization_{dtype}_3x5_const_eps0", "mean_variance_normalization",
                        {"axes": [1], "eps": 0.0}, {"x": xc}, {"y": ym}, dtype))
    # grad_output of the wrong shape is a refusal too (rewrite the placeholder above).
    for dtype in ("f64", "f32"):
        path = os.path.join(w.outdir, f"numpy_torch/layer_norm_error_grad_output_shape_{dtype}.json")
        with open(path) as f:
            c = json.load(f)
        c["grad_output"] = tensor(rnd(rng, (3, 5), dtype), dtype)
        c["error"] = "grad_output has shape [3, 5], x has [3, 4]"
        with open(path, "w") as f:
            json.dump(c, f, indent=1)


# --- onnx family -------------------------------------------------------------


def f32(v):
    """ONNX stores float attributes as float32: the case gets the same value."""
    return float(np.float32(v))


def onnx_run(op_type, inputs, attrs, n_out, opset, domain=""):
    import onnx
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    names_in = [f"i{k}" if v is not None else "" for k, v in enumerate(inputs)]
    names_out = [f"o{k}" for k in range(n_out)]
    node = helper.make_node(op_type, names_in, names_out, **attrs)
    vin = [helper.make_tensor_value_info(n, TensorProto.DOUBLE, None) for n in names_in if n]
    vout = [helper.make_tensor_value_info(n, TensorProto.DOUBLE, None) for n in names_out]
    graph = helper.make_graph([node], "g", vin, vout)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(domain, opset)])
    sess = ReferenceEvaluator(model)
    feeds = {n: np.asarray(v, dtype=np.float64) for n, v in zip(names_in, inputs) if n}
    return sess.run(None, feeds)


def gen_onnx(w: Writer, rng):
    # LayerNormalization / RMSNormalization: every axis of ranks 1..5.
    for dtype in ("f32", "f64"):
        for shape in [(7,), (3, 1), (2, 5), (2, 3, 5), (1, 3, 2, 5), (2, 1, 3, 2, 3)]:
            for axis in range(-len(shape), len(shape)):
                for with_b in (True, False):
                    if not with_b and axis not in (-1, 0):
                        continue
                    x = rnd(rng, shape, dtype, 0.5, 2.0)
                    ns = list(shape[axis:])
                    sc = rnd(rng, ns, dtype, 1.0, 0.5)
                    b = rnd(rng, ns, dtype) if with_b else None
                    eps = f32(rng.choice([1e-5, 1e-3, 0.1]))
                    y, mean, inv = onnx_run("LayerNormalization", [x, sc, b], {"axis": axis, "epsilon": eps}, 3, 17)
                    lead = shape[: len(shape) - len(ns)]
                    exp = {"y": y, "mean": mean.reshape(lead), "rstd": inv.reshape(lead)}
                    tag = f"axis{axis}".replace("-", "_negative_")
                    name = f"onnx/gen_layer_normalization_{dtype}_{shape_tag(shape)}_{tag}{'' if with_b else '_nobias'}"
                    w.write(nn_case(name, "layer_norm", {"normalized_shape": ns, "eps": eps}, {"x": x, "weight": sc, "bias": b}, exp, dtype, ONNX_TOL[dtype]))
                    if with_b:
                        (yr,) = onnx_run("RMSNormalization", [x, sc], {"axis": axis, "epsilon": eps}, 1, 23)
                        name = f"onnx/gen_rms_normalization_{dtype}_{shape_tag(shape)}_{tag}"
                        w.write(nn_case(name, "rms_norm", {"normalized_shape": ns, "eps": eps}, {"x": x, "weight": sc}, {"y": yr}, dtype, ONNX_TOL[dtype]))
    # BatchNormalization opset 15, training_mode 0 and 1.
    for dtype in ("f32", "f64"):
        for shape in [(4, 3), (1, 2), (2, 3, 5), (2, 3, 4, 5), (1, 2, 3, 2, 2), (3, 1, 7)]:
            for training in (0, 1):
                for mom in (0.9, 0.5, 0.0, 1.0):
                    if training == 0 and mom != 0.9:
                        continue
                    if training == 1 and int(np.prod(shape)) // shape[1] < 2:
                        continue
                    c = shape[1]
                    x = rnd(rng, shape, dtype, 0.2, 1.3)
                    s, b = rnd(rng, (c,), dtype, 1.0, 0.5), rnd(rng, (c,), dtype)
                    m = rnd(rng, (c,), dtype)
                    v = (np.abs(rnd(rng, (c,), dtype, 1.0, 0.5)) + 0.1).astype(NP[dtype]).astype(np.float64)
                    eps = f32(rng.choice([1e-5, 1e-2]))
                    outs = onnx_run("BatchNormalization", [x, s, b, m, v], {"epsilon": eps, "momentum": mom, "training_mode": training},
                                    3 if training else 1, 15)
                    exp = {"y": outs[0]}
                    if training:
                        exp.update({"running_mean": outs[1], "running_var": outs[2]})
                    attrs = {"training": bool(training), "momentum": 1.0 - f32(mom), "running_var_unbiased": False, "eps": eps, "axis": 1}
                    name = f"onnx/gen_batchnorm_{dtype}_{shape_tag(shape)}_{'training_mode' if training else 'test'}_m{mom:g}"
                    w.write(nn_case(name, "batch_norm", attrs, {"x": x, "weight": s, "bias": b, "running_mean": m, "running_var": v}, exp, dtype, ONNX_TOL[dtype]))
    # GroupNormalization opset 21 (per-channel scale and bias), InstanceNormalization.
    for dtype in ("f32", "f64"):
        for shape, g in [((2, 4), 2), ((1, 6, 5), 3), ((2, 6, 5), 1), ((2, 6, 5), 6), ((3, 4, 2, 2), 2), ((1, 4, 2, 1, 3), 4)]:
            c = shape[1]
            x = rnd(rng, shape, dtype, 0.4, 1.1)
            s, b = rnd(rng, (c,), dtype, 1.0, 0.5), rnd(rng, (c,), dtype)
            eps = f32(rng.choice([1e-5, 1e-2]))
            # stash_type 11 (double): the default 1 computes the statistics in float32.
            (y,) = onnx_run("GroupNormalization", [x, s, b], {"epsilon": eps, "num_groups": g, "stash_type": 11}, 1, 21)
            name = f"onnx/gen_group_normalization_{dtype}_{shape_tag(shape)}_g{g}"
            w.write(nn_case(name, "group_norm", {"num_groups": g, "eps": eps}, {"x": x, "weight": s, "bias": b}, {"y": y}, dtype, ONNX_TOL[dtype]))
        for shape in [(1, 1, 3), (2, 3, 7), (2, 3, 1, 4), (1, 2, 3, 2, 2)]:
            c = shape[1]
            x = rnd(rng, shape, dtype, -0.3, 0.8)
            s, b = rnd(rng, (c,), dtype, 1.0, 0.5), rnd(rng, (c,), dtype)
            eps = f32(rng.choice([1e-5, 1e-2]))
            (y,) = onnx_run("InstanceNormalization", [x, s, b], {"epsilon": eps}, 1, 6)
            name = f"onnx/gen_instancenorm_{dtype}_{shape_tag(shape)}"
            w.write(nn_case(name, "instance_norm", {"eps": eps}, {"x": x, "weight": s, "bias": b}, {"y": y}, dtype, ONNX_TOL[dtype]))
    # LpNormalization (no eps in ONNX: the inputs have no zero vectors).
    for dtype in ("f32", "f64"):
        for shape in [(5,), (2, 3), (2, 3, 4), (2, 1, 3, 2)]:
            for axis in range(-len(shape), len(shape)):
                for p in (1, 2):
                    x = rnd(rng, shape, dtype, 0.1, 1.0)
                    if p == 2:
                        (y,) = onnx_run("LpNormalization", [x], {"axis": axis, "p": p}, 1, 1)
                    else:
                        # onnx's reference sums x**1 without abs (not the L1 norm
                        # its spec names): use the spec's formula.
                        y = x / np.abs(x).sum(axis=axis, keepdims=True)
                    name = f"onnx/gen_l{p}normalization_{dtype}_{shape_tag(shape)}_axis{axis}"
                    w.write(nn_case(name, "lp_normalize", {"p": p, "axis": axis, "eps": 1e-12}, {"x": x}, {"y": y}, dtype, ONNX_TOL[dtype]))
    # MeanVarianceNormalization (opset 13; its function adds 1e-9 to the std: close to eps 1e-9 under var).
    for dtype in ("f32", "f64"):
        for shape, axes in [((3, 3, 3, 1), None), ((2, 3, 4, 5), [0, 2, 3]), ((2, 3, 4), [2]), ((2, 3, 4), [0, 1]), ((2, 3, 4), [-1]),
                            ((4, 5), [1]), ((2, 2, 3, 2, 3), [1, 2, 3, 4])]:
            x = rnd(rng, shape, dtype, 1.0, 2.0)
            # Its function body's constant 1e-9 is float32, which the reference
            # evaluator will not add to doubles: evaluate the body in numpy float64.
            ax = tuple(a % x.ndim for a in (axes if axes is not None else [0, 2, 3]))
            mu = x.mean(axis=ax, keepdims=True)
            sd = np.sqrt((x * x).mean(axis=ax, keepdims=True) - mu * mu)
            y = (x - mu) / (sd + 1e-9)
            # The format's y = (x - mean) / sqrt(var + eps) with eps = 1e-9 differs
            # from ONNX's (x - mean) / (std + 1e-9) by about (1e-9 / s + 1e-9 / (2 s^2))
            # relatively: widen rtol by twice that, from the data (f64 only matters).
            gap = float(np.max(1e-9 / sd + 1e-9 / (2 * sd * sd)))
            tol = (max(ONNX_TOL[dtype][0], 2 * gap), ONNX_TOL[dtype][1])
            fa = {"axes": axes if axes is not None else [0, 2, 3], "eps": 1e-9}
            if axes is None:
                fa = {"eps": 1e-9}
            name = f"onnx/gen_mvn_{dtype}_{shape_tag(shape)}_axes{'default' if axes is None else '_'.join(map(str, axes))}"
            w.write(nn_case(name, "mean_variance_normalization", fa, {"x": x}, {"y": y}, dtype, tol))


# --- sklearn family ----------------------------------------------------------


def sk_datasets(rng):
    d = {}
    d["gauss_prime_cols"] = (rng.normal(2.0, 3.0, (37, 7)), rng.normal(2.0, 4.0, (11, 7)))
    d["one_col"] = (rng.normal(0, 1, (9, 1)), rng.normal(0, 1, (4, 1)))
    d["two_rows"] = (rng.normal(0, 1, (2, 3)), rng.normal(0, 1, (5, 3)))
    d["single_row"] = (rng.normal(0, 1, (1, 4)), rng.normal(0, 1, (3, 4)))
    f = rng.normal(0, 1, (30, 5))
    f[:, 1] = 0.1
    f[:, 3] = -7.25
    d["constant_cols"] = (f, rng.normal(0, 1, (6, 5)))
    f = rng.normal(1e6, 1e-3, (41, 3))
    d["offset_1e6_spread_1e-3"] = (f, rng.normal(1e6, 1e-3, (9, 3)))
    f = rng.normal(0, 1, (25, 6))
    mask = rng.random((25, 6)) < 0.2
    f[mask] = np.nan
    f[:, 5] = np.nan
    f[3, 5] = 1.5  # one observed value
    t = rng.normal(0, 1.5, (8, 6))
    t[2, 0] = np.nan
    d["nan_sparse_col"] = (f, t)
    f = rng.normal(0, 1, (20, 3))
    f[:, 2] = np.nan
    d["nan_all_col"] = (f, rng.normal(0, 1, (4, 3)))
    d["integers"] = (rng.integers(-5, 6, (19, 4)).astype(float), rng.integers(-8, 9, (7, 4)).astype(float))
    d["wide_range"] = (rng.normal(0, 1, (23, 4)) * np.array([1e-8, 1.0, 1e8, 1e150]), rng.normal(0, 1, (5, 4)) * np.array([1e-8, 1.0, 1e8, 1e150]))
    d["out_of_range_transform"] = (rng.uniform(0, 1, (15, 3)), rng.uniform(-2, 3, (10, 3)))
    z = rng.normal(0, 1, (12, 4))
    z[[0, 5], :] = 0.0
    d["zero_rows"] = (z, np.vstack([np.zeros((2, 4)), rng.normal(0, 1, (3, 4))]))
    return d


def sk_case(w, name, scaler, params, est, fit, trans, dtype, tol=None, attrs=()):
    fit = fit.astype(NP[dtype])
    trans = trans.astype(NP[dtype])
    est.fit(fit)
    out = est.transform(trans)
    fitted = {}
    for a in attrs:
        v = getattr(est, a, None)
        if v is not None:
            fitted[a] = tensor(np.asarray(v, dtype=np.float64), dtype)
    exp = {"fitted": fitted, "output": tensor(out, dtype)}
    if hasattr(est, "inverse_transform"):
        exp["inverse"] = tensor(est.inverse_transform(out), dtype)
    rt, at = tol or ((1e-7, 1e-9) if dtype == "f64" else (1e-5, 1e-6))
    c = {"name": name, "scaler": scaler, "params": params, "fit": tensor(fit, dtype), "transform": tensor(trans, dtype),
         "expected": exp, "tolerance": {"rtol": rt, "atol": at}}
    w.write(c)


def gen_sklearn(w: Writer, rng):
    import warnings

    from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, Normalizer, RobustScaler, StandardScaler

    warnings.simplefilter("ignore")
    data = sk_datasets(rng)
    for dname, (fit, trans) in data.items():
        has_nan = np.isnan(fit).any() or np.isnan(trans).any()
        ill = dname == "offset_1e6_spread_1e-3"
        for dtype in ("f64", "f32"):
            if dtype == "f32" and dname not in ("gauss_prime_cols", "nan_sparse_col", "constant_cols", "integers"):
                continue
            # Cancellation bound for the offset data: |x| / spread = 1e9.
            tol = (max(1e-7, 16 * EPS[dtype] * 1e9), max(1e-9, 16 * EPS[dtype] * 1e9)) if ill else None
            pre = f"sklearn/gen_{dname}_{dtype}"
            for wm, ws in [(True, True), (False, True), (True, False), (False, False)]:
                sk_case(w, f"{pre}_standard_mean{int(wm)}_std{int(ws)}", "standard", {"with_mean": wm, "with_std": ws},
                        StandardScaler(with_mean=wm, with_std=ws), fit, trans, dtype, tol, ("mean_", "var_", "scale_", "n_samples_seen_"))
            for fr, clip in [((0, 1), False), ((-1, 1), True), ((-3.5, 7), False), ((0.2, 0.8), True)]:
                sk_case(w, f"{pre}_minmax_{fr[0]:g}_{fr[1]:g}{'_clip' if clip else ''}", "minmax", {"feature_range": list(fr), "clip": clip},
                        MinMaxScaler(feature_range=fr, clip=clip), fit, trans, dtype, tol, ("scale_", "data_min_", "data_max_", "n_samples_seen_"))
            sk_case(w, f"{pre}_maxabs", "maxabs", {}, MaxAbsScaler(), fit, trans, dtype, tol, ("scale_", "max_abs_", "n_samples_seen_"))
            for qr, wc, wsc, uv in [((25, 75), True, True, False), ((5, 95), True, True, True), ((0, 100), True, True, False),
                                    ((30, 31), True, True, False), ((25, 75), False, True, True), ((25, 75), True, False, False),
                                    ((10.5, 89.5), True, True, False), ((25, 75), False, False, False)]:
                sk_case(w, f"{pre}_robust_q{qr[0]:g}_{qr[1]:g}_c{int(wc)}_s{int(wsc)}_uv{int(uv)}", "robust",
                        {"with_centering": wc, "with_scaling": wsc, "quantile_range": list(qr), "unit_variance": uv},
                        RobustScaler(with_centering=wc, with_scaling=wsc, quantile_range=qr, unit_variance=uv), fit, trans, dtype, tol,
                        ("scale_", "center_"))
            if not has_nan:
                for norm in ("l1", "l2", "max"):
                    sk_case(w, f"{pre}_normalizer_{norm}", "normalizer", {"norm": norm}, Normalizer(norm=norm), fit, trans, dtype, tol, ())
    # Defaults (empty params), many rows (exact percentiles), zero columns.
    big = rng.standard_t(3, (4001, 5)) * np.array([1.0, 10.0, 1e-3, 1e6, 1.0]) + np.array([0.0, -5.0, 1.0, 1e9, 0.0])
    big[rng.random(big.shape) < 0.05] = np.nan
    bt = rng.normal(0, 3, (9, 5))
    zc = rng.normal(0, 1, (13, 4))
    zc[:, 2] = 0.0
    for dname, (fit, trans) in {"many_rows": (big, bt), "zero_col": (zc, rng.normal(0, 1, (5, 4)))}.items():
        pre = f"sklearn/gen_{dname}_f64"
        # many_rows has a column at 1e9 with spread ~1e6: the inverse adds the mean
        # back, so both implementations round at 1e9 (bound 16 eps |mean|).
        tol = (1e-7, 16 * EPS["f64"] * 1e9) if dname == "many_rows" else None
        sk_case(w, f"{pre}_standard_defaults", "standard", {}, StandardScaler(), fit, trans, "f64", tol, ("mean_", "var_", "scale_", "n_samples_seen_"))
        sk_case(w, f"{pre}_minmax_defaults", "minmax", {}, MinMaxScaler(), fit, trans, "f64", tol, ("scale_", "data_min_", "data_max_", "n_samples_seen_"))
        sk_case(w, f"{pre}_maxabs_defaults", "maxabs", {}, MaxAbsScaler(), fit, trans, "f64", tol, ("scale_", "max_abs_", "n_samples_seen_"))
        sk_case(w, f"{pre}_robust_defaults", "robust", {}, RobustScaler(), fit, trans, "f64", tol, ("scale_", "center_"))
        sk_case(w, f"{pre}_robust_q1_99_uv", "robust", {"quantile_range": [1, 99], "unit_variance": True},
                RobustScaler(quantile_range=(1, 99), unit_variance=True), fit, trans, "f64", tol, ("scale_", "center_"))
        if not np.isnan(fit).any():
            sk_case(w, f"{pre}_normalizer_defaults", "normalizer", {}, Normalizer(), fit, trans, "f64", None, ())
    # Normalizer refuses NaN (scikit-learn's check_array raises).
    nanfit = rng.normal(0, 1, (4, 3))
    nanfit[1, 1] = np.nan
    w.write({"name": "sklearn/gen_error_normalizer_nan", "scaler": "normalizer", "params": {"norm": "l2"},
             "fit": tensor(nanfit, "f64"), "transform": tensor(nanfit, "f64"), "error": "Input X contains NaN",
             "tolerance": {"rtol": 1e-7, "atol": 1e-9}})
    # Every scaler refuses infinities (check_array: "Input X contains infinity"), in
    # fit or in transform.
    inffit = rng.normal(0, 1, (5, 3))
    inffit[2, 0] = np.inf
    okfit = rng.normal(0, 1, (5, 3))
    for sc in ("standard", "minmax", "maxabs", "robust", "normalizer"):
        for where, (f_, t_) in {"fit": (inffit, okfit), "transform": (okfit, inffit)}.items():
            w.write({"name": f"sklearn/gen_error_{sc}_inf_in_{where}", "scaler": sc, "params": {},
                     "fit": tensor(f_, "f64"), "transform": tensor(t_, "f64"), "error": "Input X contains infinity",
                     "tolerance": {"rtol": 1e-7, "atol": 1e-9}})
    # MinMax with the extra attributes scikit-learn sets (min_, data_range_).
    fit, trans = data["gauss_prime_cols"]
    sk_case(w, "sklearn/gen_gauss_prime_cols_f64_minmax_all_attrs", "minmax", {"feature_range": [0, 1], "clip": False},
            MinMaxScaler(), fit, trans, "f64", None, ("min_", "scale_", "data_min_", "data_max_", "data_range_", "n_samples_seen_"))
    # Error: feature_range min >= max.
    w.write({"name": "sklearn/gen_error_minmax_bad_range", "scaler": "minmax", "params": {"feature_range": [1, 0], "clip": False},
             "fit": tensor(fit, "f64"), "transform": tensor(trans, "f64"), "error": "feature_range min must be below max",
             "tolerance": {"rtol": 1e-7, "atol": 1e-9}})
    w.write({"name": "sklearn/gen_error_robust_bad_quantiles", "scaler": "robust",
             "params": {"with_centering": True, "with_scaling": True, "quantile_range": [80, 20], "unit_variance": False},
             "fit": tensor(fit, "f64"), "transform": tensor(trans, "f64"), "error": "quantile_range must be increasing",
             "tolerance": {"rtol": 1e-7, "atol": 1e-9}})
    w.write({"name": "sklearn/gen_error_transform_width", "scaler": "standard", "params": {"with_mean": True, "with_std": True},
             "fit": tensor(fit, "f64"), "transform": tensor(trans[:, :3], "f64"), "error": "transform has 3 columns, fit had 7",
             "tolerance": {"rtol": 1e-7, "atol": 1e-9}})


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir")
    ap.add_argument("--seed", type=int, default=20261201)
    ap.add_argument("--only", default="onnx,numpy_torch,sklearn")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    w = Writer(args.outdir)
    only = set(args.only.split(","))
    if "numpy_torch" in only:
        for gen in (gen_layer_norm, gen_rms_norm, gen_batch_norm, gen_group_norm, gen_instance_norm, gen_lp, gen_mvn, gen_extra, gen_extra_bwd, gen_more_errors):
            gen(w, rng)
    if "onnx" in only:
        gen_onnx(w, rng)
    if "sklearn" in only:
        gen_sklearn(w, rng)
    for k in sorted(w.counts):
        print(f"{k}: {w.counts[k]}")
    print(f"total: {sum(w.counts.values())}", file=sys.stderr)


if __name__ == "__main__":
    main()

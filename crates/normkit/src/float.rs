//! The element types normkit computes on.
//!
//! Every kernel is generic over [`Float`]. Each element type names the type its
//! statistics accumulate in ([`Float::Acc`]): `f64` for both `f32` and `f64` data.
//! Accumulating `f32` data in `f64` costs nothing measurable in a memory-bound
//! kernel and removes two failure modes of `f32` accumulation: overflow of the sum
//! of squares (values near 1e19 and above) and loss of the spread under a large
//! offset. `bf16`/`f16` will accumulate in `f32` when they arrive.

use std::fmt::{Debug, Display};

/// The floating-point type that statistics accumulate in.
pub trait AccFloat: num_traits::Float + Debug + Display + Default + Send + Sync + 'static {
    /// Converts a count to this type.
    fn from_count(n: u64) -> Self;
    /// Converts an `f64` (an `eps`, a momentum) to this type.
    fn from_f64_lossy(v: f64) -> Self;
}

impl AccFloat for f64 {
    #[inline]
    fn from_count(n: u64) -> Self {
        n as f64
    }
    #[inline]
    fn from_f64_lossy(v: f64) -> Self {
        v
    }
}

impl AccFloat for f32 {
    #[inline]
    fn from_count(n: u64) -> Self {
        n as f32
    }
    #[inline]
    fn from_f64_lossy(v: f64) -> Self {
        v as f32
    }
}

/// An element type of tensors that normkit normalizes (`f32`, `f64`).
pub trait Float:
    Copy
    + Debug
    + Display
    + Default
    + PartialEq
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + Send
    + Sync
    + 'static
{
    /// The type statistics over these elements accumulate in.
    type Acc: AccFloat;
    /// The name used in messages and file formats: `"f32"`, `"f64"`.
    const NAME: &'static str;
    /// Machine epsilon, as `f64` (`torch.finfo(dtype).eps`).
    const EPSILON: f64;
    /// One past the largest binary exponent of a finite value (`f32::MAX_EXP`).
    const MAX_EXP: i32;
    /// `self · a + b` with a single rounding (a fused multiply-add).
    fn mul_add(self, a: Self, b: Self) -> Self;
    /// Widens to the accumulation type (exact for `f32` and `f64`).
    fn to_acc(self) -> Self::Acc;
    /// Rounds from the accumulation type to the nearest element.
    fn from_acc(a: Self::Acc) -> Self;
    /// Rounds an `f64` to the nearest element.
    fn from_f64(v: f64) -> Self;
    /// Widens to `f64` (exact for `f32` and `f64`).
    fn to_f64(self) -> f64;
    /// Whether this is neither infinite nor NaN.
    fn is_finite(self) -> bool {
        self.to_f64().is_finite()
    }
}

impl Float for f32 {
    type Acc = f64;
    const NAME: &'static str = "f32";
    const EPSILON: f64 = f32::EPSILON as f64;
    const MAX_EXP: i32 = f32::MAX_EXP;
    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        f32::mul_add(self, a, b)
    }
    #[inline]
    fn to_acc(self) -> f64 {
        self as f64
    }
    #[inline]
    fn from_acc(a: f64) -> Self {
        a as f32
    }
    #[inline]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    #[inline]
    fn to_f64(self) -> f64 {
        self as f64
    }
}

impl Float for f64 {
    type Acc = f64;
    const NAME: &'static str = "f64";
    const EPSILON: f64 = f64::EPSILON;
    const MAX_EXP: i32 = f64::MAX_EXP;
    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        f64::mul_add(self, a, b)
    }
    #[inline]
    fn to_acc(self) -> f64 {
        self
    }
    #[inline]
    fn from_acc(a: f64) -> Self {
        a
    }
    #[inline]
    fn from_f64(v: f64) -> Self {
        v
    }
    #[inline]
    fn to_f64(self) -> f64 {
        self
    }
}

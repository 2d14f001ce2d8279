//! Module state under PyTorch's names: what a user saves after training and
//! restores later, like `torch.nn.Module.state_dict()` / `load_state_dict()`.
//!
//! Every module names its tensors as PyTorch does, parameters first, then
//! buffers, each present only where the module has it:
//!
//! | module | tensors |
//! |---|---|
//! | [`BatchNorm`], [`InstanceNorm`] | `weight`, `bias` (affine); `running_mean`, `running_var`, `num_batches_tracked` (running statistics) |
//! | [`GroupNorm`], [`LayerNorm`] | `weight`, `bias` |
//! | [`RmsNorm`] | `weight` |
//!
//! `num_batches_tracked` is a 0-dimensional `i64` tensor, as PyTorch stores it;
//! every other tensor has the module's element type and shape (`[C]`, or
//! `normalized_shape` for LayerNorm and RMSNorm).
//!
//! With the `safetensors` feature, `Stateful::save_safetensors` and
//! `Stateful::load_safetensors` write and read these tensors as a
//! safetensors file, the format `safetensors.torch.save_file(model.state_dict())`
//! writes, so a BatchNorm trained in PyTorch loads here with its running
//! statistics and gives the same eval output.
//!
//! ```
//! use normkit::{BatchNorm, Stateful, Tensor};
//! let mut bn = BatchNorm::<f32>::new(2);
//! bn.forward(Tensor::new(&[3, 2], vec![1.0f32, 10.0, 2.0, 20.0, 3.0, 30.0])?.view())?;
//! let state = bn.state_dict().with_prefix("bn1.");
//! assert_eq!(state.names(), ["bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked"]);
//!
//! let mut restored = BatchNorm::<f32>::new(2);
//! restored.load_state_dict(&state, "bn1.")?;
//! assert_eq!(restored, bn);
//! # Ok::<(), normkit::Error>(())
//! ```

#[cfg(feature = "safetensors")]
mod files;

#[cfg(feature = "safetensors")]
pub use files::{read_safetensors, write_safetensors};

use crate::error::{Error, Result};
use crate::float::Float;
use crate::modules::{BatchNorm, GroupNorm, InstanceNorm, LayerNorm, RmsNorm};
use crate::tensor::Tensor;

/// One tensor of a module's state: floating-point in the module's element type
/// (parameters, running statistics), or 64-bit integer (`num_batches_tracked`).
#[derive(Clone, Debug, PartialEq)]
pub enum StateTensor<T> {
    /// A parameter or running statistic.
    Float(Tensor<T>),
    /// A counter, stored as PyTorch stores it (`torch.int64`).
    I64(Tensor<i64>),
}

impl<T: Float> StateTensor<T> {
    /// The tensor's shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            StateTensor::Float(t) => t.shape(),
            StateTensor::I64(t) => t.shape(),
        }
    }

    /// The element type's name as safetensors writes it: `"F32"`, `"F64"`, `"I64"`.
    pub fn dtype_name(&self) -> String {
        match self {
            StateTensor::Float(_) => T::NAME.to_uppercase(),
            StateTensor::I64(_) => "I64".to_owned(),
        }
    }
}

/// Named tensors in a fixed order: what [`Stateful::state_dict`] returns and
/// [`Stateful::load_state_dict`] takes. Names are unique; inserting a name again
/// replaces its tensor in place.
#[derive(Clone, Debug, PartialEq)]
pub struct StateDict<T> {
    entries: Vec<(String, StateTensor<T>)>,
    origin: String,
}

impl<T: Float> Default for StateDict<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Float> StateDict<T> {
    /// An empty state.
    pub fn new() -> Self {
        StateDict { entries: Vec::new(), origin: "state dict".to_owned() }
    }

    /// Where the state came from (a file's path, or `"state dict"`), as errors name it.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Sets where the state came from, for error messages.
    pub fn set_origin(&mut self, origin: impl Into<String>) {
        self.origin = origin.into();
    }

    /// Adds a tensor, or replaces the tensor of that name.
    pub fn insert(&mut self, name: impl Into<String>, tensor: StateTensor<T>) {
        let name = name.into();
        match self.entries.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = tensor,
            None => self.entries.push((name, tensor)),
        }
    }

    /// The tensor of that name.
    pub fn get(&self, name: &str) -> Option<&StateTensor<T>> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// The names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The entries, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &StateTensor<T>)> {
        self.entries.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is no tensor.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The same tensors with `prefix` before every name (`"bn1."` makes
    /// `weight` `bn1.weight`, as a submodule's names appear in its parent's state).
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        for (name, _) in &mut self.entries {
            name.insert_str(0, prefix);
        }
        self
    }

    /// Adds every tensor of `other` (replacing tensors of the same names): the
    /// states of several modules in one, e.g. each [`with_prefix`](Self::with_prefix)ed.
    pub fn merge(&mut self, other: StateDict<T>) {
        for (name, tensor) in other.entries {
            self.insert(name, tensor);
        }
    }
}

/// A module whose parameters and running statistics can be saved and restored
/// under PyTorch's names (see the [module documentation](self)).
pub trait Stateful<T: Float> {
    /// The module's tensors under PyTorch's names, unprefixed, in PyTorch's order
    /// (parameters, then buffers), copied.
    fn state_dict(&self) -> StateDict<T>;

    /// Replaces the module's tensors by `state`'s tensors named `prefix + name`,
    /// strictly, as PyTorch's `load_state_dict(strict=True)`: every tensor the
    /// module has must be there with its shape and dtype, and no other name may
    /// start with `prefix` (names that do not are ignored, so one state can hold
    /// several modules). `num_batches_tracked` must not be negative. On error
    /// the module is unchanged.
    fn load_state_dict(&mut self, state: &StateDict<T>, prefix: &str) -> Result<()>;

    /// Writes [`state_dict`](Self::state_dict), every name prefixed by `prefix`,
    /// to a safetensors file at `path` (with metadata `format: pt`, as PyTorch's
    /// `safetensors.torch.save_file` writes). The file is written to a temporary
    /// file beside it and renamed, so a failed save leaves no partial file; an
    /// existing file is replaced.
    #[cfg(feature = "safetensors")]
    fn save_safetensors<P: AsRef<std::path::Path>>(&self, path: P, prefix: &str) -> Result<()>
    where
        Self: Sized,
    {
        write_safetensors(path, &self.state_dict().with_prefix(prefix))
    }

    /// Loads the tensors named `prefix + name` from a safetensors file at `path`
    /// (for example one written by PyTorch with `safetensors.torch.save_file`),
    /// strictly as [`load_state_dict`](Self::load_state_dict). Tensors outside
    /// `prefix` are not decoded, whatever their dtype. On error the module is
    /// unchanged.
    #[cfg(feature = "safetensors")]
    fn load_safetensors<P: AsRef<std::path::Path>>(&mut self, path: P, prefix: &str) -> Result<()>
    where
        Self: Sized,
    {
        let state = read_safetensors::<T, _>(path, prefix)?;
        self.load_state_dict(&state, prefix)
    }
}

// ---------------------------------------------------------------- slots

/// One named place in a module's state.
enum Slot<'a, T> {
    /// A float tensor of the given shape, present when `Some`.
    Float(&'static str, &'a mut Option<Tensor<T>>, Vec<usize>),
    /// A counter, present when the flag is set.
    Count(&'static str, &'a mut u64, bool),
}

impl<T: Float> Slot<'_, T> {
    fn name(&self) -> &'static str {
        match self {
            Slot::Float(name, ..) | Slot::Count(name, ..) => name,
        }
    }

    fn present(&self) -> bool {
        match self {
            Slot::Float(_, t, _) => t.is_some(),
            Slot::Count(_, _, present) => *present,
        }
    }
}

/// The state of a module's present slots, in order.
fn save_slots<T: Float>(slots: Vec<Slot<'_, T>>) -> StateDict<T> {
    let mut state = StateDict::new();
    for slot in slots {
        match slot {
            Slot::Float(name, Some(t), _) => state.insert(name, StateTensor::Float(t.clone())),
            Slot::Count(name, n, true) => {
                let v = i64::try_from(*n).unwrap_or(i64::MAX);
                state.insert(name, StateTensor::I64(Tensor::from_parts(vec![], vec![v])));
            }
            _ => {}
        }
    }
    state
}

/// What a validated slot will receive.
enum NewValue<T> {
    Float(Tensor<T>),
    Count(u64),
}

/// Checks every present slot against `state` (strictly), then assigns them all.
fn load_slots<T: Float>(slots: Vec<Slot<'_, T>>, state: &StateDict<T>, prefix: &str) -> Result<()> {
    let origin = state.origin().to_owned();
    let expected: Vec<String> = slots.iter().filter(|s| s.present()).map(|s| format!("{prefix}{}", s.name())).collect();
    if let Some(name) = state.names().into_iter().find(|n| n.starts_with(prefix) && !expected.iter().any(|e| e == n)) {
        return Err(Error::UnexpectedTensor { name: name.to_owned(), origin, expected });
    }
    let mut values = Vec::with_capacity(slots.len());
    for slot in slots.iter().filter(|s| s.present()) {
        let name = format!("{prefix}{}", slot.name());
        let tensor = state.get(&name).ok_or_else(|| Error::MissingTensor {
            name: name.clone(),
            origin: origin.clone(),
            expected: expected.clone(),
        })?;
        let dtype_error = |want: String| Error::TensorDtype {
            name: name.clone(),
            origin: origin.clone(),
            expected: want,
            got: tensor.dtype_name(),
        };
        let shape_error = |want: &[usize]| Error::shape(&format!("{origin}: tensor {name:?}"), want, tensor.shape());
        values.push(match (slot, tensor) {
            (Slot::Float(_, _, shape), StateTensor::Float(t)) => {
                if t.shape() != shape.as_slice() {
                    return Err(shape_error(shape));
                }
                NewValue::Float(t.clone())
            }
            (Slot::Count(..), StateTensor::I64(t)) => {
                let [v] = t.data() else {
                    return Err(shape_error(&[]));
                };
                if !t.shape().is_empty() {
                    return Err(shape_error(&[]));
                }
                let v = u64::try_from(*v)
                    .map_err(|_| Error::invalid(&name, format!("{v} in {origin} is negative: it counts batches")))?;
                NewValue::Count(v)
            }
            (Slot::Float(..), _) => return Err(dtype_error(T::NAME.to_uppercase())),
            (Slot::Count(..), _) => return Err(dtype_error("I64".to_owned())),
        });
    }
    let present = slots.into_iter().filter(|s| s.present());
    for (slot, value) in present.zip(values) {
        match (slot, value) {
            (Slot::Float(_, place, _), NewValue::Float(t)) => *place = Some(t),
            (Slot::Count(_, place, _), NewValue::Count(v)) => *place = v,
            // Each value was built from its own slot above, so the kinds agree.
            _ => {}
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- modules

/// BatchNorm and InstanceNorm share PyTorch's `_NormBase` state.
macro_rules! norm_base_slots {
    ($m:expr, $c:expr) => {{
        let tracked = $m.running_mean.is_some() || $m.running_var.is_some();
        vec![
            Slot::Float("weight", &mut $m.weight, vec![$c]),
            Slot::Float("bias", &mut $m.bias, vec![$c]),
            Slot::Float("running_mean", &mut $m.running_mean, vec![$c]),
            Slot::Float("running_var", &mut $m.running_var, vec![$c]),
            Slot::Count("num_batches_tracked", &mut $m.num_batches_tracked, tracked),
        ]
    }};
}

/// `Stateful` for modules with PyTorch's `_NormBase` state ([`norm_base_slots`]).
macro_rules! impl_norm_base_stateful {
    ($($module:ident),+) => {$(
        impl<T: Float> Stateful<T> for $module<T> {
            fn state_dict(&self) -> StateDict<T> {
                let mut m = self.clone();
                let c = m.num_features();
                save_slots(norm_base_slots!(m, c))
            }

            fn load_state_dict(&mut self, state: &StateDict<T>, prefix: &str) -> Result<()> {
                let c = self.num_features();
                load_slots(norm_base_slots!(self, c), state, prefix)
            }
        }
    )+};
}

impl_norm_base_stateful!(BatchNorm, InstanceNorm);

impl<T: Float> Stateful<T> for GroupNorm<T> {
    fn state_dict(&self) -> StateDict<T> {
        let mut m = self.clone();
        let c = m.num_channels();
        save_slots(vec![Slot::Float("weight", &mut m.weight, vec![c]), Slot::Float("bias", &mut m.bias, vec![c])])
    }

    fn load_state_dict(&mut self, state: &StateDict<T>, prefix: &str) -> Result<()> {
        let c = self.num_channels();
        let slots =
            vec![Slot::Float("weight", &mut self.weight, vec![c]), Slot::Float("bias", &mut self.bias, vec![c])];
        load_slots(slots, state, prefix)
    }
}

impl<T: Float> Stateful<T> for LayerNorm<T> {
    fn state_dict(&self) -> StateDict<T> {
        let mut m = self.clone();
        let s = m.normalized_shape().to_vec();
        save_slots(vec![Slot::Float("weight", &mut m.weight, s.clone()), Slot::Float("bias", &mut m.bias, s)])
    }

    fn load_state_dict(&mut self, state: &StateDict<T>, prefix: &str) -> Result<()> {
        let s = self.normalized_shape().to_vec();
        let slots = vec![Slot::Float("weight", &mut self.weight, s.clone()), Slot::Float("bias", &mut self.bias, s)];
        load_slots(slots, state, prefix)
    }
}

impl<T: Float> Stateful<T> for RmsNorm<T> {
    fn state_dict(&self) -> StateDict<T> {
        let mut m = self.clone();
        let s = m.normalized_shape().to_vec();
        save_slots(vec![Slot::Float("weight", &mut m.weight, s)])
    }

    fn load_state_dict(&mut self, state: &StateDict<T>, prefix: &str) -> Result<()> {
        let s = self.normalized_shape().to_vec();
        load_slots(vec![Slot::Float("weight", &mut self.weight, s)], state, prefix)
    }
}

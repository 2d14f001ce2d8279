//! Module state under PyTorch's names: round trips through `state_dict` and
//! safetensors files for every module, a BatchNorm2d state written by Python in
//! PyTorch's format (`tests/fixtures/make_bn_fixture.py`) loading and giving the
//! recorded eval output, and every error path (missing, unexpected, misshapen and
//! mistyped tensors, unreadable files), each leaving the module unchanged.

mod layers_support;

use layers_support::*;
use normkit::state::{read_safetensors, write_safetensors};
use normkit::{
    BatchNorm, Error, GroupNorm, InstanceNorm, LayerNorm, RmsNorm, StateDict, StateTensor, Stateful, Tensor,
};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// A fresh directory for one test's files.
fn scratch(test: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("normkit-state-{}-{test}-{}", std::process::id(), rand::random::<u32>()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn t32(shape: &[usize], v: &[f64]) -> Tensor<f32> {
    Tensor::new(shape, narrow(v)).unwrap()
}

fn float<T: normkit::Float>(state: &StateDict<T>, name: &str) -> Tensor<T> {
    match state.get(name) {
        Some(StateTensor::Float(t)) => t.clone(),
        other => panic!("{name}: {other:?}"),
    }
}

/// A BatchNorm<f32> with random affine parameters after `steps` training batches.
fn trained_batch_norm(c: usize, steps: u64) -> BatchNorm<f32> {
    let seed = rand::random::<u32>() as u64;
    let mut bn = BatchNorm::<f32>::new(c);
    bn.weight = Some(t32(&[c], &random_vec(c, seed, 1.0, 0.5)));
    bn.bias = Some(t32(&[c], &random_vec(c, seed + 1, 0.0, 1.0)));
    for k in 0..steps {
        bn.forward(t32(&[4, c, 3], &random_vec(12 * c, seed + 2 + k, k as f64, 2.0)).view()).unwrap();
    }
    bn
}

// ---------------------------------------------------------------- round trips

#[test]
fn batch_norm_state_has_pytorch_names_and_round_trips() {
    let bn = trained_batch_norm(3, 4);
    let state = bn.state_dict();
    assert_eq!(state.names(), ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]);
    assert_eq!(state.get("num_batches_tracked"), Some(&StateTensor::I64(Tensor::new(&[], vec![4]).unwrap())));
    assert_eq!(float(&state, "running_var"), *bn.running_var.as_ref().unwrap());

    let mut fresh = BatchNorm::<f32>::new(3);
    fresh.load_state_dict(&state, "").unwrap();
    assert_eq!(fresh, bn);

    // Through a file, under a prefix.
    let dir = scratch("bn");
    let path = dir.join("bn.safetensors");
    bn.save_safetensors(&path, "bn1.").unwrap();
    let mut fresh = BatchNorm::<f32>::new(3);
    fresh.load_safetensors(&path, "bn1.").unwrap();
    assert_eq!(fresh, bn);
    let back = read_safetensors::<f32, _>(&path, "").unwrap();
    assert_eq!(back.len(), 5);
    assert_eq!(back.get("bn1.num_batches_tracked").map(StateTensor::shape), Some(&[][..]));
    assert_eq!(back.get("bn1.weight").map(|t| t.dtype_name()), Some("F32".to_owned()));
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temporary file is left");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn every_module_round_trips_through_a_file() {
    let dir = scratch("all");
    let seed = rand::random::<u32>() as u64;
    let path = |name: &str| dir.join(format!("{name}.safetensors"));

    // f64 BatchNorm without affine, channels last, a cumulative average.
    let mut bn = BatchNorm::<f64>::new(4).affine(false).axis(-1).momentum(None);
    for k in 0..3 {
        bn.forward(Tensor::new(&[5, 4], random_vec(20, seed + k, 1.0, 3.0)).unwrap().view()).unwrap();
    }
    assert_eq!(bn.state_dict().names(), ["running_mean", "running_var", "num_batches_tracked"]);
    bn.save_safetensors(path("bn64"), "").unwrap();
    let mut fresh = BatchNorm::<f64>::new(4).affine(false).axis(-1).momentum(None);
    fresh.load_safetensors(path("bn64"), "").unwrap();
    assert_eq!(fresh, bn);
    assert_eq!(read_safetensors::<f64, _>(path("bn64"), "").unwrap().get("running_mean").unwrap().dtype_name(), "F64");

    // BatchNorm without running statistics: parameters only.
    let plain = BatchNorm::<f32>::new(2).track_running_stats(false);
    assert_eq!(plain.state_dict().names(), ["weight", "bias"]);

    // InstanceNorm: nothing by default; affine and running statistics when asked.
    assert!(InstanceNorm::<f32>::new(3).state_dict().is_empty());
    let mut inst = InstanceNorm::<f32>::new(3).affine(true).track_running_stats(true);
    inst.weight = Some(t32(&[3], &random_vec(3, seed, 1.0, 0.5)));
    inst.forward(t32(&[2, 3, 4], &random_vec(24, seed + 9, 2.0, 1.0)).view()).unwrap();
    assert_eq!(inst.state_dict().names(), ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]);
    inst.save_safetensors(path("inst"), "norm.").unwrap();
    let mut fresh = InstanceNorm::<f32>::new(3).affine(true).track_running_stats(true);
    fresh.load_safetensors(path("inst"), "norm.").unwrap();
    assert_eq!(fresh, inst);

    // GroupNorm, LayerNorm (no bias), RMSNorm.
    let mut gn = GroupNorm::<f32>::new(2, 4).unwrap();
    gn.bias = Some(t32(&[4], &random_vec(4, seed + 3, 0.0, 1.0)));
    gn.save_safetensors(path("gn"), "gn.").unwrap();
    let mut fresh = GroupNorm::<f32>::new(2, 4).unwrap();
    fresh.load_safetensors(path("gn"), "gn.").unwrap();
    assert_eq!(fresh, gn);

    let mut ln = LayerNorm::<f32>::new(&[2, 3]).unwrap().bias(false);
    ln.weight = Some(t32(&[2, 3], &random_vec(6, seed + 4, 1.0, 0.5)));
    assert_eq!(ln.state_dict().names(), ["weight"]);
    ln.save_safetensors(path("ln"), "").unwrap();
    let mut fresh = LayerNorm::<f32>::new(&[2, 3]).unwrap().bias(false);
    fresh.load_safetensors(path("ln"), "").unwrap();
    assert_eq!(fresh, ln);

    let mut rms = RmsNorm::<f64>::new(&[5]).unwrap();
    rms.weight = Some(Tensor::new(&[5], random_vec(5, seed + 5, 1.0, 0.5)).unwrap());
    rms.save_safetensors(path("rms"), "").unwrap();
    let mut fresh = RmsNorm::<f64>::new(&[5]).unwrap();
    fresh.load_safetensors(path("rms"), "").unwrap();
    assert_eq!(fresh, rms);

    // Several modules in one file, each under its prefix.
    let mut all = bn.state_dict().with_prefix("a.");
    all.merge(rms.state_dict().with_prefix("b."));
    write_safetensors(path("two"), &all).unwrap();
    let mut fresh_bn = BatchNorm::<f64>::new(4).affine(false).axis(-1);
    let mut fresh_rms = RmsNorm::<f64>::new(&[5]).unwrap();
    fresh_bn.load_safetensors(path("two"), "a.").unwrap();
    fresh_rms.load_safetensors(path("two"), "b.").unwrap();
    assert_eq!((fresh_bn.running_var, fresh_rms.weight), (bn.running_var.clone(), rms.weight.clone()));
    std::fs::remove_dir_all(dir).unwrap();
}

// ---------------------------------------------------------------- PyTorch's file

/// The state PyTorch's BatchNorm2d(3) holds after three training batches
/// (written in PyTorch's format by `make_bn_fixture.py`) loads, and eval mode
/// gives the recorded output.
#[test]
fn batch_norm_trained_in_pytorch_loads_and_gives_its_eval_output() {
    let data = read_safetensors::<f32, _>(fixture("bn2d_data.safetensors"), "").unwrap();
    let mut bn = BatchNorm::<f32>::new(3);
    bn.load_safetensors(fixture("bn2d_state.safetensors"), "bn1.").unwrap();
    assert_eq!(bn.num_batches_tracked, 3);
    bn.eval();
    let x = float(&data, "x_eval");
    let (y, _) = bn.forward(x.view()).unwrap();
    let want = float(&data, "y_eval");
    // Both sides compute in f64 and round once to f32.
    assert_close("y_eval", &widen(y.data()), &widen(want.data()), 1e-12, f32::EPSILON as f64);

    // normkit, trained on the same batches from PyTorch's initial state, reaches
    // the same running statistics.
    let mut ours = BatchNorm::<f32>::new(3);
    ours.weight = bn.weight.clone();
    ours.bias = bn.bias.clone();
    for k in 0..3 {
        ours.forward(float(&data, &format!("train{k}")).view()).unwrap();
    }
    assert_eq!(ours.num_batches_tracked, 3);
    let (rm, rv) = (ours.running_mean.as_ref().unwrap(), ours.running_var.as_ref().unwrap());
    let (want_rm, want_rv) = (bn.running_mean.as_ref().unwrap(), bn.running_var.as_ref().unwrap());
    assert_close("running_mean", &widen(rm.data()), &widen(want_rm.data()), 0.0, 4.0 * f32::EPSILON as f64);
    assert_close("running_var", &widen(rv.data()), &widen(want_rv.data()), 0.0, 4.0 * f32::EPSILON as f64);

    // The float16 `conv.weight` beside it is another module's: not decoded unless asked.
    let e = read_safetensors::<f32, _>(fixture("bn2d_state.safetensors"), "").unwrap_err();
    assert!(matches!(&e, Error::TensorDtype { name, .. } if name == "conv.weight"), "{e}");
}

// ---------------------------------------------------------------- errors

#[test]
fn bad_state_is_an_error_naming_the_tensor_and_changes_nothing() {
    let bn = trained_batch_norm(3, 2);
    let good = bn.state_dict().with_prefix("bn1.");
    let mut target = BatchNorm::<f32>::new(3);
    let before = target.clone();
    let load = |target: &mut BatchNorm<f32>, state: &StateDict<f32>| target.load_state_dict(state, "bn1.");

    // Missing.
    let mut state = StateDict::new();
    for (name, t) in good.iter().filter(|(n, _)| *n != "bn1.running_var") {
        state.insert(name, t.clone());
    }
    let e = load(&mut target, &state).unwrap_err();
    assert!(matches!(&e, Error::MissingTensor { name, .. } if name == "bn1.running_var"), "{e}");
    assert!(e.to_string().contains("bn1.running_var"), "{e}");

    // Unexpected under the prefix (other prefixes are ignored).
    let mut state = good.clone();
    state.insert("bn1.extra", StateTensor::Float(t32(&[3], &[0.0; 3])));
    let e = load(&mut target, &state).unwrap_err();
    assert!(matches!(&e, Error::UnexpectedTensor { name, .. } if name == "bn1.extra"), "{e}");
    let mut state = good.clone();
    state.insert("bn2.extra", StateTensor::Float(t32(&[3], &[0.0; 3])));
    let mut ok = BatchNorm::<f32>::new(3);
    ok.load_state_dict(&state, "bn1.").unwrap();
    let mut untracked = BatchNorm::<f32>::new(3).track_running_stats(false);
    let e = untracked.load_state_dict(&good, "bn1.").unwrap_err();
    assert!(matches!(&e, Error::UnexpectedTensor { .. }), "{e}");

    // Wrong shape.
    let mut state = good.clone();
    state.insert("bn1.running_mean", StateTensor::Float(t32(&[4], &[0.0; 4])));
    let e = load(&mut target, &state).unwrap_err();
    assert!(matches!(&e, Error::ShapeMismatch { .. }) && e.to_string().contains("bn1.running_mean"), "{e}");
    let mut state = good.clone();
    state.insert("bn1.num_batches_tracked", StateTensor::I64(Tensor::new(&[1], vec![2]).unwrap()));
    let e = load(&mut target, &state).unwrap_err();
    assert!(e.to_string().contains("bn1.num_batches_tracked"), "{e}");

    // Wrong kind: a float counter, an integer parameter; a negative count.
    let mut state = good.clone();
    state.insert("bn1.num_batches_tracked", StateTensor::Float(Tensor::new(&[], vec![2.0f32]).unwrap()));
    let e = load(&mut target, &state).unwrap_err();
    assert!(
        matches!(&e, Error::TensorDtype { name, expected, got, .. }
        if name == "bn1.num_batches_tracked" && expected == "I64" && got == "F32"),
        "{e}"
    );
    let mut state = good.clone();
    state.insert("bn1.weight", StateTensor::I64(Tensor::new(&[3], vec![1, 1, 1]).unwrap()));
    let e = load(&mut target, &state).unwrap_err();
    assert!(matches!(&e, Error::TensorDtype { name, .. } if name == "bn1.weight"), "{e}");
    let mut state = good.clone();
    state.insert("bn1.num_batches_tracked", StateTensor::I64(Tensor::new(&[], vec![-1]).unwrap()));
    let e = load(&mut target, &state).unwrap_err();
    assert!(e.to_string().contains("negative"), "{e}");

    assert_eq!(target, before, "a refused load changes nothing");
    load(&mut target, &good).unwrap();
    assert_eq!(target, bn);
}

#[test]
fn bad_files_are_errors_naming_the_file_and_tensor() {
    let dir = scratch("files");
    let mut bn = BatchNorm::<f64>::new(3);
    let before = bn.clone();

    // An f32 file into an f64 module: the dtype, with the file and tensor named.
    let e = bn.load_safetensors(fixture("bn2d_state.safetensors"), "bn1.").unwrap_err();
    assert!(matches!(&e, Error::TensorDtype { expected, got, .. } if expected == "F64 or I64" && got == "F32"), "{e}");
    assert!(e.to_string().contains("bn2d_state.safetensors") && e.to_string().contains("bn1."), "{e}");
    // Wrong prefix: every tensor missing, the file named.
    let mut bn32 = BatchNorm::<f32>::new(3);
    let e = bn32.load_safetensors(fixture("bn2d_state.safetensors"), "bn2.").unwrap_err();
    assert!(
        matches!(&e, Error::MissingTensor { name, origin, .. } if name == "bn2.weight" && origin.contains("bn2d_state")),
        "{e}"
    );
    // Wrong channel count.
    let mut bn4 = BatchNorm::<f32>::new(4);
    let e = bn4.load_safetensors(fixture("bn2d_state.safetensors"), "bn1.").unwrap_err();
    assert!(e.to_string().contains("[4]") && e.to_string().contains("[3]"), "{e}");

    // Missing, empty and corrupt files.
    let missing = dir.join("missing.safetensors");
    let e = bn.load_safetensors(&missing, "").unwrap_err();
    assert!(matches!(&e, Error::File { path, .. } if path.contains("missing.safetensors")), "{e}");
    for (name, bytes) in [("empty", vec![]), ("junk", b"not a safetensors file at all".to_vec())] {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        let e = bn.load_safetensors(&p, "").unwrap_err();
        assert!(matches!(&e, Error::File { .. }) && e.to_string().contains(name), "{e}");
    }
    // A header that lies about the data length.
    let mut truncated = std::fs::read(fixture("bn2d_state.safetensors")).unwrap();
    truncated.truncate(truncated.len() - 3);
    let p = dir.join("truncated");
    std::fs::write(&p, truncated).unwrap();
    assert!(matches!(bn32.load_safetensors(&p, "bn1."), Err(Error::File { .. })));
    assert_eq!(bn, before);

    // Writes that cannot happen leave nothing behind: into a missing directory,
    // and over a directory (the rename fails after the temporary file is written).
    let e = bn.save_safetensors(dir.join("no/such/dir/bn.safetensors"), "").unwrap_err();
    assert!(matches!(&e, Error::File { path, .. } if path.contains("no/such/dir")), "{e}");
    let sub = dir.join("occupied");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("keep"), b"x").unwrap();
    assert!(bn.save_safetensors(&sub, "").is_err());
    let mut left: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    left.sort();
    assert_eq!(left, ["empty", "junk", "occupied", "truncated"]);
    std::fs::remove_dir_all(dir).unwrap();
}

//! `normkit scale` end to end: the binary on small CSV and Parquet files; bad
//! input gives one line naming file, line and column, exit status 2, and
//! writes nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn normkit(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_normkit")).current_dir(dir).arg("scale").args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The directory's file names, sorted (to see that nothing was left behind).
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

const DATA: &str = "id,price,weight,name\n1,1.5,10,apple\n2,,20,\"pear, green\"\n3,3.5,NA,plum\n4,2,40,fig\n";

/// Asserts a failed run: status 2, one line naming each of `needles`, and the
/// directory as it was.
fn assert_refused(dir: &Path, args: &[&str], needles: &[&str]) {
    let before = listing(dir);
    let o = normkit(dir, args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: {err:?} lacks {n:?}");
    }
    assert_eq!(listing(dir), before, "{args:?} left files behind");
}

#[test]
fn fit_transform_writes_scaled_columns_and_keeps_the_rest() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "d.csv", DATA);
    let o = normkit(d.path(), &["fit-transform", "d.csv", "-o", "o.csv", "--scaler", "standard", "--params", "p.json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = std::fs::read_to_string(d.path().join("o.csv")).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "id,price,weight,name");
    let p: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("p.json")).unwrap()).unwrap();
    // price: values 1.5, 3.5, 2 -> mean 7/3, biased std sqrt(13/18).
    let (m, s) = (p["attributes"]["mean_"][1].as_f64().unwrap(), p["attributes"]["scale_"][1].as_f64().unwrap());
    assert!((m - 7.0 / 3.0).abs() <= 4.0 * f64::EPSILON && (s - (13.0f64 / 18.0).sqrt()).abs() <= 2.0 * f64::EPSILON);
    let price: Vec<&str> = lines[1..].iter().map(|l| l.split(',').nth(1).unwrap()).collect();
    assert_eq!(price[1], "", "missing stays missing, as it was written");
    // Both files hold shortest round-trip text: the CSV value is exactly (x - mean_) / scale_.
    assert_eq!(price[0].parse::<f64>().unwrap(), (1.5 - m) / s);
    assert_eq!(price[2].parse::<f64>().unwrap(), (3.5 - m) / s);
    assert!(lines[2].ends_with("\"pear, green\""), "text passes through in place: {}", lines[2]);
    assert!(lines[3].contains(",NA,"), "a missing marker keeps its text: {}", lines[3]);
    assert_eq!(p["format"], "normkit-scale-params");
    assert_eq!(p["version"], 1);
    assert_eq!(p["feature_names_in_"], serde_json::json!(["id", "price", "weight"]));
    assert_eq!(p["dtypes"], serde_json::json!(["int64", "float64", "int64"]));
    assert_eq!(p["attributes"]["n_samples_seen_"], serde_json::json!([4, 3, 3]));
    assert_eq!(p["attributes"]["mean_"][0].as_f64(), Some(2.5));

    // transform with the saved parameters gives the same file; inverse gives the data back.
    let o = normkit(d.path(), &["transform", "d.csv", "-o", "t.csv", "--params", "p.json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(d.path().join("t.csv")).unwrap(), out);
    let o = normkit(d.path(), &["inverse", "o.csv", "-o", "back.csv", "--params", "p.json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let back = std::fs::read_to_string(d.path().join("back.csv")).unwrap();
    for (a, b) in back.lines().skip(1).zip(DATA.lines().skip(1)) {
        let (a, b) = (a.split(',').nth(1).unwrap(), b.split(',').nth(1).unwrap());
        if b.is_empty() {
            assert_eq!(a, "");
        } else {
            let (x, y) = (a.parse::<f64>().unwrap(), b.parse::<f64>().unwrap());
            assert!((x - y).abs() <= 4.0 * f64::EPSILON * y.abs().max(m), "{x} vs {y}");
        }
    }
    assert_eq!(std::fs::read_to_string(d.path().join("d.csv")).unwrap(), DATA, "the input is untouched");
}

#[test]
fn fit_saves_params_for_chosen_columns_and_scaler_flags() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "d.csv", DATA);
    let o = normkit(
        d.path(),
        &[
            "fit",
            "d.csv",
            "--scaler",
            "minmax",
            "--feature-range",
            "-1,1",
            "--columns",
            "weight,price",
            "--params",
            "m.json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let p: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("m.json")).unwrap()).unwrap();
    assert_eq!(p["scaler"], "minmax");
    assert_eq!(p["params"]["feature_range"], serde_json::json!([-1.0, 1.0]));
    assert_eq!(p["feature_names_in_"], serde_json::json!(["weight", "price"]));
    assert_eq!(p["attributes"]["data_min_"], serde_json::json!([10.0, 1.5]));
    assert_eq!(p["attributes"]["data_max_"], serde_json::json!([40.0, 3.5]));
    assert_eq!(p["attributes"]["n_samples_seen_"], serde_json::json!(4));
    // A flag of another scaler is refused.
    assert_refused(
        d.path(),
        &["fit", "d.csv", "--scaler", "standard", "--clip", "true", "--params", "x.json"],
        &["--clip"],
    );
}

#[test]
fn bad_input_is_one_line_exit_2_and_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    write(dir, "ragged.csv", "a,b\n1,2\n3,4\n5\n6,7\n");
    assert_refused(
        dir,
        &["fit-transform", "ragged.csv", "-o", "o.csv", "--scaler", "standard"],
        &["ragged.csv", "line 4"],
    );
    // Ragged after the first batch: the output was being written when it failed.
    let mut big = String::from("a,b\n");
    for i in 0..3000 {
        big.push_str(&format!("{i},{}\n", i * 2));
    }
    big.push_str("1,2,3\n");
    write(dir, "late.csv", &big);
    assert_refused(
        dir,
        &["fit-transform", "late.csv", "-o", "o.csv", "--scaler", "robust", "--batch-rows", "100"],
        &["late.csv", "line 3002"],
    );
    write(dir, "text.csv", "a,b\n1,2\n3,x7\n");
    assert_refused(
        dir,
        &["fit-transform", "text.csv", "-o", "o.csv", "--scaler", "standard", "--columns", "a,b"],
        &["text.csv", "line 3", "column \"b\"", "x7"],
    );
    write(dir, "empty.csv", "a,b\n");
    assert_refused(dir, &["fit", "empty.csv", "--scaler", "standard", "--params", "p.json"], &["empty.csv", "no rows"]);
    write(dir, "inf.csv", "a\n1\ninf\n");
    assert_refused(
        dir,
        &["fit", "inf.csv", "--scaler", "maxabs", "--params", "p.json"],
        &["inf.csv", "line 3", "\"a\""],
    );
    write(dir, "d.csv", DATA);
    assert_refused(
        dir,
        &["fit-transform", "d.csv", "-o", "o.csv", "--scaler", "standard", "--columns", "price,size"],
        &["d.csv", "line 1", "\"size\""],
    );
    // Parameters fitted on other columns.
    write(dir, "other.csv", "x,y\n1,2\n3,4\n");
    let o = normkit(dir, &["fit", "other.csv", "--scaler", "standard", "--params", "other.json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_refused(
        dir,
        &["transform", "d.csv", "-o", "o.csv", "--params", "other.json"],
        &["d.csv", "line 1", "\"x\"", "other.json"],
    );
    assert_refused(dir, &["transform", "d.csv", "-o", "d.csv", "--params", "other.json"], &["d.csv"]);
    // Never over the input.
    let o = normkit(dir, &["fit", "d.csv", "--scaler", "standard", "--params", "p.json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_refused(dir, &["transform", "d.csv", "-o", "d.csv", "--params", "p.json"], &["d.csv", "input"]);
    assert_eq!(std::fs::read_to_string(dir.join("d.csv")).unwrap(), DATA);
    write(dir, "bad.json", "{\"format\": \"normkit-scale-params\", \"version\": 99}");
    assert_refused(dir, &["transform", "d.csv", "-o", "o.csv", "--params", "bad.json"], &["bad.json"]);
}

#[test]
fn parquet_fit_transform_round_trips() {
    use arrow_array::{Array, ArrayRef, Float64Array, Int32Array, RecordBatch, StringArray};
    use std::sync::Arc;
    let d = tempfile::tempdir().unwrap();
    let batch = RecordBatch::try_from_iter(vec![
        ("k", Arc::new(Int32Array::from(vec![Some(1), None, Some(5), Some(7)])) as ArrayRef),
        ("s", Arc::new(StringArray::from(vec!["a", "b", "c", "d"])) as ArrayRef),
        ("v", Arc::new(Float64Array::from(vec![0.5, f64::NAN, -2.0, 8.0])) as ArrayRef),
    ])
    .unwrap();
    let path = d.path().join("in.parquet");
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let o = normkit(
        d.path(),
        &["fit-transform", "in.parquet", "-o", "out.parquet", "--scaler", "maxabs", "--params", "p.json"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = normkit(d.path(), &["inverse", "out.parquet", "-o", "back.parquet", "--params", "p.json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let read = |name: &str| {
        let f = std::fs::File::open(d.path().join(name)).unwrap();
        let mut r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).unwrap().build().unwrap();
        r.next().unwrap().unwrap()
    };
    let out = read("out.parquet");
    let k = out.column(0).as_any().downcast_ref::<Float64Array>().unwrap();
    assert!(k.is_null(1), "null stays null");
    assert_eq!((k.value(0), k.value(2), k.value(3)), (1.0 / 7.0, 5.0 / 7.0, 1.0));
    assert_eq!(out.column(1).as_ref(), batch.column(1).as_ref(), "text passes through");
    let v = out.column(2).as_any().downcast_ref::<Float64Array>().unwrap();
    assert!(v.value(1).is_nan(), "NaN stays NaN");
    assert_eq!(v.value(3), 1.0);
    let back = read("back.parquet");
    let k = back.column(0).as_any().downcast_ref::<Float64Array>().unwrap();
    assert_eq!((k.value(0), k.value(2), k.value(3)), (1.0, 5.0, 7.0));
    assert!(k.is_null(1));
}

/// scikit-learn's Normalizer refuses NaN ("Input X contains NaN"): a missing
/// value in a selected column is named by file, line and column, in the fit,
/// the fit-transform and the transform with saved parameters; unselected
/// columns may have missing values.
#[test]
fn normalizer_refuses_missing_values_naming_the_line() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    // A quoted field over two lines (line 3 to 4) so that lines and rows differ,
    // then batches of 100 rows: the missing value is on line 257 (row 255), in batch 3.
    let mut text = String::from("a,b,note\n1,2,\"two\nlines\"\n");
    for i in 0..300 {
        let b = if i == 253 { String::new() } else { format!("{}", i + 1) };
        text.push_str(&format!("{i},{b},\n"));
    }
    write(dir, "gap.csv", &text);
    for args in [
        &["fit-transform", "gap.csv", "-o", "o.csv", "--scaler", "normalizer", "--batch-rows", "100"][..],
        &["fit", "gap.csv", "--scaler", "normalizer", "--params", "p.json", "--batch-rows", "100"],
    ] {
        assert_refused(dir, args, &["gap.csv", "line 257", "column \"b\"", "NaN"]);
    }
    // Fitted on clean data, then given the gap.
    write(dir, "clean.csv", "a,b,note\n1,2,\n3,4,x\n");
    let o = normkit(dir, &["fit", "clean.csv", "--scaler", "normalizer", "--columns", "a,b", "--params", "n.json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_refused(
        dir,
        &["transform", "gap.csv", "-o", "o.csv", "--params", "n.json", "--batch-rows", "100"],
        &["gap.csv", "line 257", "column \"b\""],
    );
    // Missing values in a column the normalizer does not use are fine.
    let o = normkit(dir, &["fit-transform", "gap.csv", "-o", "o.csv", "--scaler", "normalizer", "--columns", "a"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Parquet: a null on row 3 of the second batch of 2 (row 5 of the file), in
    // the fit and in the transform.
    use arrow_array::{ArrayRef, Float64Array, RecordBatch};
    use std::sync::Arc;
    let batch = RecordBatch::try_from_iter(vec![
        ("x", Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0, 4.0, 5.0])) as ArrayRef),
        ("y", Arc::new(Float64Array::from(vec![Some(1.0), Some(2.0), Some(3.0), Some(4.0), None])) as ArrayRef),
    ])
    .unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(dir.join("gap.parquet")).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    assert_refused(
        dir,
        &["fit", "gap.parquet", "--scaler", "normalizer", "--params", "q.json", "--batch-rows", "2"],
        &["gap.parquet", "row 5", "column \"y\"", "NaN"],
    );
    write(dir, "xy.csv", "x,y\n1,2\n");
    let o = normkit(dir, &["fit", "xy.csv", "--scaler", "normalizer", "--params", "xy.json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_refused(
        dir,
        &["transform", "gap.parquet", "-o", "o.parquet", "--params", "xy.json", "--batch-rows", "2"],
        &["gap.parquet", "row 5", "column \"y\""],
    );
}

/// SplitMix64 from a fresh seed: the `--approx` test's data (printed on failure).
struct SplitMix(u64);

impl SplitMix {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `--approx` end to end: one pass with a KLL sketch per column; `center_` and
/// `scale_` are within twice the sketch's documented rank error (1.33% of the
/// column's count, at 99% confidence per quantile) of the exact fit's, the file
/// says the quantiles are approximate, and `--approx` with another scaler is
/// refused.
#[test]
fn approx_robust_fit_is_within_the_rank_bound_of_the_exact_fit() {
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(7, |d| d.as_nanos() as u64);
    let mut rng = SplitMix(seed);
    let n = 30_000;
    // a: uniform with 5% missing; b: 1e15 + integers (ties); c: Cauchy (heavy tails).
    let mut cols: [Vec<f64>; 3] = [vec![], vec![], vec![]];
    let mut text = String::from("a,b,c,name\n");
    for i in 0..n {
        let a = if rng.uniform() < 0.05 { f64::NAN } else { rng.uniform() * 200.0 - 100.0 };
        let b = 1e15 + (rng.uniform() * 500.0).floor();
        let c = (std::f64::consts::PI * (rng.uniform() - 0.5)).tan();
        let field = |x: f64| if x.is_nan() { String::new() } else { format!("{x}") };
        text.push_str(&format!("{},{},{},r{i}\n", field(a), field(b), field(c)));
        for (col, x) in cols.iter_mut().zip([a, b, c]) {
            col.push(x);
        }
    }
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "d.csv", &text);
    let run = |args: &[&str]| {
        let o = normkit(d.path(), args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    };
    let json = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(d.path().join(name)).unwrap()).unwrap()
    };
    for (qr, qlo, qhi) in [("25,75", 25.0, 75.0), ("5,99", 5.0, 99.0)] {
        run(&["fit", "d.csv", "--scaler", "robust", "--quantile-range", qr, "--approx", "--params", "a.json"]);
        run(&["fit", "d.csv", "--scaler", "robust", "--quantile-range", qr, "--params", "e.json"]);
        let (a, e) = (json("a.json"), json("e.json"));
        assert_eq!(a["quantiles"]["method"], "approximate");
        assert_eq!(a["quantiles"]["sketch"], "kll");
        assert_eq!(a["quantiles"]["k"], 200);
        let eps = a["quantiles"]["normalized_rank_error"].as_f64().unwrap();
        assert!((eps - 0.0133).abs() < 1e-4, "{eps}");
        assert!(e.get("quantiles").is_none(), "an exact fit has no \"quantiles\": {e}");
        for (j, col) in cols.iter().enumerate() {
            let mut v: Vec<f64> = col.iter().copied().filter(|x| !x.is_nan()).collect();
            v.sort_by(f64::total_cmp);
            let m = 2.0 * eps * v.len() as f64 + 2.0; // allowed ranks
            let at = |r: f64| v[(r.max(0.0) as usize).min(v.len() - 1)];
            let n1 = (v.len() - 1) as f64;
            // center_: the value at a rank within m of the median's.
            let (ac, ec) =
                (a["attributes"]["center_"][j].as_f64().unwrap(), e["attributes"]["center_"][j].as_f64().unwrap());
            let h = n1 / 2.0;
            assert!(
                at((h - m).floor()) <= ac && ac <= at((h + m).ceil()),
                "seed {seed} column {j}: center_ {ac}, exact {ec}"
            );
            // scale_: q_hi - q_lo, each moved by at most m ranks.
            let (acs, ecs) =
                (a["attributes"]["scale_"][j].as_f64().unwrap(), e["attributes"]["scale_"][j].as_f64().unwrap());
            let (hl, hh) = (n1 * qlo / 100.0, n1 * qhi / 100.0);
            let ends = [at((hh - m).floor()), at((hl + m).ceil()), at((hh + m).ceil()), at((hl - m).floor())];
            let tol = 8.0 * f64::EPSILON * ends.iter().fold(0.0f64, |s, x| s.max(x.abs()));
            let (lo, hi) = (ends[0] - ends[1] - tol, ends[2] - ends[3] + tol);
            assert!(
                lo <= acs && acs <= hi,
                "seed {seed} column {j} {qr}: scale_ {acs} not in [{lo}, {hi}], exact {ecs}"
            );
            assert!(lo <= ecs && ecs <= hi, "the exact scale_ {ecs} is in the band too");
        }
    }
    // fit-transform --approx writes the scaled file; transform reads the approximate parameters.
    run(&["fit-transform", "d.csv", "-o", "o.csv", "--scaler", "robust", "--approx", "--params", "p.json"]);
    run(&["transform", "d.csv", "-o", "t.csv", "--params", "p.json"]);
    let out = std::fs::read_to_string(d.path().join("o.csv")).unwrap();
    assert_eq!(out.lines().count(), n + 1);
    let again = std::fs::read_to_string(d.path().join("t.csv")).unwrap();
    for (i, (x, y)) in out.lines().zip(again.lines()).enumerate() {
        assert_eq!(x, y, "line {}: transform with the saved parameters differs from fit-transform", i + 1);
    }
    // --approx belongs to the robust scaler.
    for scaler in ["standard", "minmax"] {
        assert_refused(
            d.path(),
            &["fit", "d.csv", "--scaler", scaler, "--approx", "--params", "x.json"],
            &["--approx", "robust", scaler],
        );
        assert_refused(
            d.path(),
            &["fit-transform", "d.csv", "-o", "x.csv", "--scaler", scaler, "--approx"],
            &["--approx", "robust"],
        );
    }
}

/// Found by an outside review (2026-12-03): each of these once exited 0 with
/// an input, output or parameters file overwritten or silently wrong.
#[test]
fn clashing_paths_and_duplicate_names_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    write(dir, "d.csv", DATA);
    // --params the input, or the output: refused before anything is written.
    assert_refused(dir, &["fit", "d.csv", "--scaler", "standard", "--params", "d.csv"], &["d.csv", "input"]);
    assert_refused(
        dir,
        &["fit-transform", "d.csv", "-o", "o.csv", "--scaler", "standard", "--params", "./o.csv"],
        &["o.csv", "output"],
    );
    let o = normkit(dir, &["fit", "d.csv", "--scaler", "standard", "--params", "p.json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_refused(dir, &["transform", "d.csv", "-o", "p.json", "--params", "p.json"], &["p.json", "output"]);
    assert_eq!(std::fs::read_to_string(dir.join("d.csv")).unwrap(), DATA);
    // Two columns named "a": parameters are matched by name, so refused.
    write(dir, "dup.csv", "a,a,b\n1,10,5\n2,20,6\n3,30,7\n");
    for args in [
        &["fit-transform", "dup.csv", "-o", "o.csv", "--scaler", "minmax"][..],
        &["fit", "dup.csv", "--scaler", "minmax", "--params", "q.json"],
        &["fit-transform", "dup.csv", "-o", "o.csv", "--scaler", "minmax", "--columns", "a"],
    ] {
        assert_refused(dir, args, &["dup.csv", "2 columns are named \"a\""]);
    }
    // Only "b" is scaled: the two columns named "a" pass through untouched.
    let o = normkit(dir, &["fit-transform", "dup.csv", "-o", "o.csv", "--scaler", "minmax", "--columns", "b"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(dir.join("o.csv")).unwrap(), "a,a,b\n1,10,0.0\n2,20,0.5\n3,30,1.0\n");
    // A mean that overflows f64 is refused, not written as null with NaN output.
    write(dir, "huge.csv", "a,b\n1e308,1\n-1e308,2\n1.5e308,3\n");
    assert_refused(
        dir,
        &["fit-transform", "huge.csv", "-o", "o2.csv", "--scaler", "standard"],
        &["\"a\"", "overflows"],
    );
}

/// An infinite fitted attribute (scikit-learn allows `quantile_range=(50, 50)`
/// with `unit_variance`: `scale_` = inf) is saved as "inf" and read back, so
/// fit then transform gives what fit-transform gives.
#[test]
fn infinite_attributes_survive_the_params_file() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    write(dir, "d.csv", "a,b\n1,4\n2,5\n7,9\n");
    let robust = ["--scaler", "robust", "--quantile-range", "50,50", "--unit-variance", "true"];
    let o = normkit(dir, &[&["fit-transform", "d.csv", "-o", "ft.csv", "--params", "p.json"][..], &robust].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let params = std::fs::read_to_string(dir.join("p.json")).unwrap();
    assert!(params.contains("\"inf\""), "{params}");
    let o = normkit(dir, &["transform", "d.csv", "-o", "t.csv", "--params", "p.json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (ft, t) =
        (std::fs::read_to_string(dir.join("ft.csv")).unwrap(), std::fs::read_to_string(dir.join("t.csv")).unwrap());
    assert_eq!(ft, t);
    assert!(!t.contains("NaN") && !t.contains("nan"), "{t}");
}

/// Outputs get the mode `File::create` gives (not 0600), and a replaced file
/// keeps its own.
#[cfg(unix)]
#[test]
fn outputs_get_the_usual_file_mode() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    write(dir, "d.csv", DATA);
    let mode = |name: &str| std::fs::metadata(dir.join(name)).unwrap().permissions().mode() & 0o777;
    std::fs::File::create(dir.join("probe")).unwrap();
    let o = normkit(dir, &["fit-transform", "d.csv", "-o", "o.csv", "--scaler", "maxabs", "--params", "p.json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!((mode("o.csv"), mode("p.json")), (mode("probe"), mode("probe")));
    std::fs::set_permissions(dir.join("o.csv"), std::fs::Permissions::from_mode(0o640)).unwrap();
    let o = normkit(dir, &["transform", "d.csv", "-o", "o.csv", "--params", "p.json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(mode("o.csv"), 0o640);
}

/// Ctrl-C while the output is being written: exit status 130 and no
/// temporary file left (a killed process runs no destructors; see
/// `normkit_cli::signals`).
#[cfg(unix)]
#[test]
fn an_interrupted_run_leaves_no_temporary_file() {
    use std::time::{Duration, Instant};
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let mut big = String::from("a,b\n");
    for i in 0..1_500_000u64 {
        big.push_str(&format!("{i},{}\n", i % 977));
    }
    write(dir, "big.csv", &big);
    let is_tmp = |n: &String| n.starts_with(".normkit-");
    let mut child = Command::new(env!("CARGO_BIN_EXE_normkit"))
        .current_dir(dir)
        .args(["scale", "fit-transform", "big.csv", "-o", "o.csv", "--scaler", "standard", "-q"])
        .spawn()
        .unwrap();
    let start = Instant::now();
    // Wait for the temporary output to appear (after the fit's pass).
    while !listing(dir).iter().any(is_tmp) {
        assert!(child.try_wait().unwrap().is_none(), "finished before its output was seen: make big.csv bigger");
        assert!(start.elapsed() < Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(2));
    }
    let killed = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert_eq!(listing(dir), vec!["big.csv".to_owned()]);
}

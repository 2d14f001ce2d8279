//! MNIST-format data: the IDX file format (optionally gzipped), the train/test
//! split, and the bundled default data set.

use super::TrainError;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The bundled default data (see `data/README.md`): 10,000 MNIST digits.
const BUNDLED_IMAGES: &[u8] = include_bytes!("../../../../../data/mnist10k-images-idx3-ubyte.gz");
const BUNDLED_LABELS: &[u8] = include_bytes!("../../../../../data/mnist10k-labels-idx1-ubyte.gz");

/// Where a single file holding both splits is cut by default: the first 8,000
/// samples train, the rest test.
pub const DEFAULT_TRAIN_SIZE: usize = 8000;

/// An IDX array of unsigned bytes: its dimensions and data (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct Idx {
    /// Dimensions, outermost first (`[n, rows, cols]` for images, `[n]` for labels).
    pub dims: Vec<usize>,
    /// `Π dims` bytes.
    pub data: Vec<u8>,
}

/// Parses an IDX file's bytes (gzip-compressed or not: detected by the gzip
/// magic `1f 8b`). The header is two zero bytes, the type code `0x08` (unsigned
/// byte), the number of dimensions, then each dimension as a big-endian `u32`.
/// `what` names the file in errors; `want_dims` is the rank expected (3 for
/// images, 1 for labels).
pub fn parse_idx(what: &str, bytes: &[u8], want_dims: u8) -> Result<Idx, TrainError> {
    let bad = |reason: String| TrainError::Data(format!("{what}: {reason}"));
    let raw;
    let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .map_err(|e| bad(format!("cannot decompress (gzip): {e}")))?;
        raw = out;
        &raw[..]
    } else {
        bytes
    };
    let Some(header) = bytes.get(..4) else {
        return Err(bad(format!("truncated: {} bytes, too short for an IDX header", bytes.len())));
    };
    let magic = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let want_magic = 0x0800 | u32::from(want_dims);
    if magic != want_magic {
        return Err(bad(format!(
            "wrong magic number 0x{magic:08x}, expected 0x{want_magic:08x} (an IDX file of unsigned bytes with {want_dims} dimension(s))"
        )));
    }
    let header_len = 4 + 4 * usize::from(want_dims);
    let Some(dim_bytes) = bytes.get(4..header_len) else {
        return Err(bad(format!("truncated: {} bytes, the header needs {header_len}", bytes.len())));
    };
    let dims: Vec<usize> =
        dim_bytes.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize).collect();
    let count = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let Some(count) = count else { return Err(bad(format!("dimensions {dims:?} overflow"))) };
    let data = &bytes[header_len..];
    if data.len() < count {
        return Err(bad(format!("truncated: dimensions {dims:?} need {count} bytes of data, found {}", data.len())));
    }
    if data.len() > count {
        return Err(bad(format!(
            "{} bytes of data after the {count} that dimensions {dims:?} hold",
            data.len() - count
        )));
    }
    Ok(Idx { dims, data: data.to_vec() })
}

/// Labelled images, pixels scaled to `[0, 1]`.
#[derive(Debug, Clone)]
pub struct Split {
    /// `n · rows · cols` pixels in `[0, 1]`.
    pub images: Vec<f32>,
    /// `n` class indices.
    pub labels: Vec<u32>,
}

impl Split {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// A training and a test split of images of `rows × cols` with `classes` classes.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Training samples.
    pub train: Split,
    /// Test samples.
    pub test: Split,
    /// Image height.
    pub rows: usize,
    /// Image width.
    pub cols: usize,
    /// Number of classes (largest label + 1).
    pub classes: usize,
    /// Where the data came from, for messages.
    pub source: String,
    /// The IDX files of `--data` (none for the bundled digits): no output may
    /// replace them.
    pub files: Vec<PathBuf>,
}

/// One IDX pair (images, labels) checked against each other.
fn pair(images: Idx, labels: Idx, what: &str) -> Result<(Split, usize, usize), TrainError> {
    let &[n, rows, cols] = images.dims.as_slice() else {
        return Err(TrainError::Data(format!("{what}: images have dimensions {:?}, expected 3", images.dims)));
    };
    if labels.dims != [n] {
        return Err(TrainError::Data(format!(
            "{what}: {n} images but {} labels",
            labels.dims.first().copied().unwrap_or(0)
        )));
    }
    if n == 0 || rows == 0 || cols == 0 {
        return Err(TrainError::Data(format!("{what}: no data (images of dimensions {:?})", images.dims)));
    }
    let images = images.data.iter().map(|&p| f32::from(p) / 255.0).collect();
    let labels = labels.data.iter().map(|&l| u32::from(l)).collect();
    Ok((Split { images, labels }, rows, cols))
}

/// Cuts one split into the first `train_size` samples and the rest.
fn cut(all: Split, train_size: usize, pixels: usize, what: &str) -> Result<(Split, Split), TrainError> {
    if train_size == 0 || train_size >= all.len() {
        return Err(TrainError::Data(format!(
            "{what}: cannot split {} samples into {train_size} for training and the rest for testing (--train-size)",
            all.len()
        )));
    }
    let (ti, vi) = all.images.split_at(train_size * pixels);
    let (tl, vl) = all.labels.split_at(train_size);
    Ok((Split { images: ti.to_vec(), labels: tl.to_vec() }, Split { images: vi.to_vec(), labels: vl.to_vec() }))
}

fn dataset(train: Split, test: Split, rows: usize, cols: usize, source: String) -> Result<Dataset, TrainError> {
    let max = train.labels.iter().chain(&test.labels).copied().max().unwrap_or(0);
    let classes = max as usize + 1;
    if classes < 2 {
        return Err(TrainError::Data(format!("{source}: all labels are 0, nothing to classify")));
    }
    Ok(Dataset { train, test, rows, cols, classes, source, files: Vec::new() })
}

/// The bundled 10,000 MNIST digits, split at `train_size` (default 8,000).
pub fn bundled(train_size: Option<usize>) -> Result<Dataset, TrainError> {
    let images = parse_idx("bundled images", BUNDLED_IMAGES, 3)?;
    let labels = parse_idx("bundled labels", BUNDLED_LABELS, 1)?;
    let (all, rows, cols) = pair(images, labels, "bundled data")?;
    let (train, test) = cut(all, train_size.unwrap_or(DEFAULT_TRAIN_SIZE), rows * cols, "bundled data")?;
    dataset(train, test, rows, cols, "bundled MNIST 10k".to_string())
}

/// The IDX files of one prefix: `PREFIX-images-idx3-ubyte[.gz]` and
/// `PREFIX-labels-idx1-ubyte[.gz]`.
#[derive(Debug)]
struct Files {
    prefix: String,
    images: PathBuf,
    labels: Option<PathBuf>,
}

const IMAGES_SUFFIX: &str = "-images-idx3-ubyte";
const LABELS_SUFFIX: &str = "-labels-idx1-ubyte";

fn read(path: &Path) -> Result<Vec<u8>, TrainError> {
    std::fs::read(path).map_err(|e| TrainError::Data(format!("cannot read {}: {e}", path.display())))
}

/// Reads `--data DIR`: every `PREFIX-images-idx3-ubyte[.gz]` with its
/// `PREFIX-labels-idx1-ubyte[.gz]`. One prefix: a file holding both splits, cut
/// at `train_size` (default 8,000). Two prefixes: the one whose name starts with
/// `train` is the training set (the first `train_size` of it, when given), the
/// other the test set (as MNIST's `train-*` and `t10k-*`).
pub fn load_dir(dir: &Path, train_size: Option<usize>) -> Result<Dataset, TrainError> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| TrainError::Data(format!("cannot read --data {}: {e}", dir.display())))?;
    let mut found: Vec<Files> = Vec::new();
    let mut labels: Vec<(String, PathBuf)> = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        let stem = name.strip_suffix(".gz").unwrap_or(name);
        if let Some(prefix) = stem.strip_suffix(IMAGES_SUFFIX) {
            found.push(Files { prefix: prefix.to_string(), images: path.clone(), labels: None });
        } else if let Some(prefix) = stem.strip_suffix(LABELS_SUFFIX) {
            labels.push((prefix.to_string(), path.clone()));
        }
    }
    found.sort_by(|a, b| a.prefix.cmp(&b.prefix));
    if let Some(w) = found.windows(2).find(|w| w[0].prefix == w[1].prefix) {
        return Err(TrainError::Data(format!(
            "--data {}: both {} and {} hold the images of '{}'; keep one",
            dir.display(),
            w[0].images.display(),
            w[1].images.display(),
            w[0].prefix
        )));
    }
    let files: Vec<PathBuf> =
        found.iter().map(|f| f.images.clone()).chain(labels.iter().map(|(_, p)| p.clone())).collect();
    let mut dataset = load_found(dir, &mut found, &labels, train_size)?;
    dataset.files = files;
    Ok(dataset)
}

/// The data set of the image files `found` in `dir` and the `labels` files
/// beside them (see [`load_dir`]).
fn load_found(
    dir: &Path,
    found: &mut [Files],
    labels: &[(String, PathBuf)],
    train_size: Option<usize>,
) -> Result<Dataset, TrainError> {
    for f in found.iter_mut() {
        f.labels = labels.iter().find(|(p, _)| *p == f.prefix).map(|(_, path)| path.clone());
    }
    let load = |f: &Files| -> Result<(Split, usize, usize), TrainError> {
        let Some(lpath) = &f.labels else {
            return Err(TrainError::Data(format!(
                "{}: no labels file {}{LABELS_SUFFIX}[.gz] beside it",
                f.images.display(),
                f.prefix
            )));
        };
        let images = parse_idx(&f.images.display().to_string(), &read(&f.images)?, 3)?;
        let labels = parse_idx(&lpath.display().to_string(), &read(lpath)?, 1)?;
        pair(images, labels, &f.prefix)
    };
    let source = dir.display().to_string();
    match &*found {
        [] => Err(TrainError::Data(format!(
            "--data {}: no *{IMAGES_SUFFIX}[.gz] file found (MNIST-format IDX files expected)",
            dir.display()
        ))),
        [one] => {
            let (all, rows, cols) = load(one)?;
            let (train, test) = cut(all, train_size.unwrap_or(DEFAULT_TRAIN_SIZE), rows * cols, &one.prefix)?;
            dataset(train, test, rows, cols, source)
        }
        [a, b] => {
            let (train_files, test_files) = if b.prefix.starts_with("train") { (b, a) } else { (a, b) };
            if !train_files.prefix.starts_with("train") {
                return Err(TrainError::Data(format!(
                    "--data {}: two data sets ({} and {}) and neither is named train-*",
                    dir.display(),
                    a.prefix,
                    b.prefix
                )));
            }
            let (mut train, rows, cols) = load(train_files)?;
            let (test, trows, tcols) = load(test_files)?;
            if (rows, cols) != (trows, tcols) {
                return Err(TrainError::Data(format!(
                    "--data {}: training images are {rows}x{cols} but test images are {trows}x{tcols}",
                    dir.display()
                )));
            }
            if let Some(n) = train_size {
                if n == 0 || n > train.len() {
                    return Err(TrainError::Data(format!(
                        "--train-size {n}: the training set has {} samples",
                        train.len()
                    )));
                }
                train.images.truncate(n * rows * cols);
                train.labels.truncate(n);
            }
            dataset(train, test, rows, cols, source)
        }
        more => Err(TrainError::Data(format!(
            "--data {}: {} data sets ({}); expected one (split by --train-size) or a train-* and a test one",
            dir.display(),
            more.len(),
            more.iter().map(|f| f.prefix.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

//! Reading and writing CSV and Parquet files batch by batch, so that memory stays
//! bounded whatever the file's size.
//!
//! - [`Table::open`] reads a file's columns (a CSV's header and its first
//!   [`SAMPLE_ROWS`] rows, or a Parquet schema) and tells which are numeric;
//! - [`Table::source`] serves the selected columns as a [`BatchSource`] for
//!   [`crate::fit()`]; each pass reads the file again from the start;
//! - [`Table::apply`] transforms (or inverts) the selected columns into a new
//!   file, the other columns passed through untouched and in place.
//!
//! Reading runs on its own thread, one batch ahead of the parsing and the
//! transform (which use rayon's threads, columns or rows in parallel), so a
//! pass costs about as much as its slowest stage.
//!
//! # Missing values and numbers
//! In a CSV, an empty field and pandas' default missing markers (`NaN`, `nan`,
//! `NA`, `N/A`, `NULL`, `null`, `None`, `<NA>`, ...) are missing; in Parquet a
//! null or a NaN. Fit skips them; transform keeps them where they are (a CSV
//! field keeps its text, a Parquet null stays null). Any other field of a
//! selected column must parse as a float (Rust's `f64` grammar: `1`, `-2.5e3`,
//! `.5`): otherwise the error names the file, the line and the column. Infinite
//! values are refused, as scikit-learn refuses them.
//!
//! Transformed CSV values are written in the shortest form that reads back to
//! the same `f64` (Ryu); Parquet columns that are scaled become nullable
//! `Float64`.
//!
//! # Atomic output
//! Output goes to a temporary file in the destination's directory, renamed over
//! the destination only once complete: a failed run leaves no partial file, and
//! the input is never written.

use crate::atomic::{same_file, AtomicFile};
use crate::error::{Result, ScaleError};
use crate::fit::BatchSource;
use crate::fitted::Fitted;
use arrow_array::{Array, ArrayRef, Float64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use csv::ByteRecord;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use rayon::prelude::*;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, sync_channel, SyncSender};
use std::sync::Arc;

/// Rows of a CSV read to decide which columns are numeric.
pub const SAMPLE_ROWS: usize = 1000;

/// Rows per batch by default (about 6 MiB of CSV text for 20 columns).
pub const DEFAULT_BATCH_ROWS: usize = 16 * 1024;

/// The on-disk format of a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated values with a header line.
    Csv,
    /// Apache Parquet.
    Parquet,
}

impl Format {
    /// The format a file's extension names (`.csv`, `.parquet`/`.pq`), if any.
    pub fn from_extension(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "csv" => Some(Format::Csv),
            "parquet" | "pq" => Some(Format::Parquet),
            _ => None,
        }
    }

    /// `csv` or `parquet`.
    pub fn from_name(name: &str) -> Result<Format> {
        match name.to_ascii_lowercase().as_str() {
            "csv" => Ok(Format::Csv),
            "parquet" => Ok(Format::Parquet),
            other => Err(ScaleError::param("format", format!("{other:?} is neither csv nor parquet"))),
        }
    }

    /// `forced` if given, else the format of `path`'s extension.
    pub fn of(path: &Path, forced: Option<Format>) -> Result<Format> {
        forced.or_else(|| Format::from_extension(path)).ok_or_else(|| {
            ScaleError::param(
                "format",
                format!(
                    "{}: cannot tell the format from the extension (use .csv or .parquet, or --format)",
                    path.display()
                ),
            )
        })
    }
}

/// Called with (units done, units in all) as a pass advances: bytes for a CSV,
/// rows for Parquet.
pub type Progress = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// One column of a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnInfo {
    /// Its name (the CSV header's field, the Parquet field's name).
    pub name: String,
    /// Its type as numpy names it (`float64`, `int64`, ...; `object` for text).
    pub dtype: String,
    /// Whether it holds numbers (and so is scaled by default).
    pub numeric: bool,
}

/// A CSV or Parquet file, its columns known, ready to be read in passes.
pub struct Table {
    path: PathBuf,
    format: Format,
    columns: Vec<ColumnInfo>,
    header: ByteRecord,
    /// Rows per batch.
    pub batch_rows: usize,
    /// Reports the progress of each pass.
    pub progress: Option<Progress>,
}

/// Which way [`Table::apply`] maps values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// [`Fitted::transform`].
    Transform,
    /// [`Fitted::inverse_transform`].
    Inverse,
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> ScaleError + '_ {
    move |source| ScaleError::Io { path: path.to_path_buf(), source }
}

fn format_err(path: &Path) -> impl Fn(&dyn std::fmt::Display) -> ScaleError + '_ {
    move |e| ScaleError::Format { file: display(path), reason: e.to_string() }
}

fn csv_err(path: &Path, e: csv::Error) -> ScaleError {
    let file = display(path);
    match e.kind() {
        csv::ErrorKind::UnequalLengths { pos, expected_len, len } => ScaleError::Ragged {
            file,
            line: pos.as_ref().map_or(0, csv::Position::line),
            reason: format!("{len} fields, the header has {expected_len}"),
        },
        _ => match e.into_kind() {
            csv::ErrorKind::Io(source) => ScaleError::Io { path: path.to_path_buf(), source },
            kind => ScaleError::Format { file, reason: format!("{kind:?}") },
        },
    }
}

fn open_csv(path: &Path) -> Result<csv::Reader<File>> {
    let file = File::open(path).map_err(io_err(path))?;
    Ok(csv::ReaderBuilder::new().has_headers(true).flexible(false).buffer_capacity(1 << 20).from_reader(file))
}

fn open_parquet(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    let file = File::open(path).map_err(io_err(path))?;
    ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| format_err(path)(&e))
}

/// pandas' default markers of a missing value (`read_csv`'s `na_values`).
const NA_MARKERS: &[&[u8]] = &[
    b"#N/A",
    b"#N/A N/A",
    b"#NA",
    b"-1.#IND",
    b"-1.#QNAN",
    b"-NaN",
    b"-nan",
    b"1.#IND",
    b"1.#QNAN",
    b"<NA>",
    b"N/A",
    b"NA",
    b"NULL",
    b"NaN",
    b"None",
    b"n/a",
    b"nan",
    b"null",
];

/// A CSV field read as a number.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Field64 {
    Missing,
    Value(f64),
    NotANumber,
}

fn parse_field(raw: &[u8]) -> Field64 {
    let t = raw.trim_ascii();
    if t.is_empty() {
        return Field64::Missing;
    }
    // lexical's parser (correctly rounded, and faster than std's), with std's
    // grammar as a fallback so that any float Rust reads is read.
    let parsed =
        lexical_core::parse::<f64>(t).ok().or_else(|| std::str::from_utf8(t).ok().and_then(|s| s.parse::<f64>().ok()));
    match parsed {
        Some(v) if v.is_nan() => Field64::Missing,
        Some(v) => Field64::Value(v),
        None if NA_MARKERS.contains(&t) => Field64::Missing,
        None => Field64::NotANumber,
    }
}

fn is_missing_field(raw: &[u8]) -> bool {
    parse_field(raw) == Field64::Missing
}

/// numpy's name of an arrow type (`object` for text, the arrow name otherwise).
fn numpy_dtype(dt: &DataType) -> (String, bool) {
    let (name, numeric) = match dt {
        DataType::Int8 => ("int8", true),
        DataType::Int16 => ("int16", true),
        DataType::Int32 => ("int32", true),
        DataType::Int64 => ("int64", true),
        DataType::UInt8 => ("uint8", true),
        DataType::UInt16 => ("uint16", true),
        DataType::UInt32 => ("uint32", true),
        DataType::UInt64 => ("uint64", true),
        DataType::Float16 => ("float16", true),
        DataType::Float32 => ("float32", true),
        DataType::Float64 => ("float64", true),
        DataType::Decimal128(..) | DataType::Decimal256(..) => ("decimal", true),
        DataType::Boolean => ("bool", false),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ("object", false),
        other => return (other.to_string(), false),
    };
    (name.to_owned(), numeric)
}

/// Runs `produce` on its own thread, handing what it sends to `consume` in
/// order; stops both at the first error. `produce` sees a send fail once
/// `consume` has stopped, and should return then.
fn pipeline<T: Send>(
    produce: impl FnOnce(SyncSender<Result<T>>) + Send,
    mut consume: impl FnMut(T) -> Result<()>,
) -> Result<()> {
    let (tx, rx) = sync_channel::<Result<T>>(2);
    std::thread::scope(|s| {
        s.spawn(move || produce(tx));
        for item in rx {
            consume(item?)?;
        }
        Ok(())
    })
}

/// A batch of CSV records; `records[..len]` are this batch's.
#[derive(Default)]
struct CsvBatch {
    records: Vec<ByteRecord>,
    len: usize,
    /// Byte offset reached in the file.
    bytes: u64,
}

/// Reads the CSV at `path` in batches of `batch_rows` records, calling `f` on
/// each in order (batch buffers are reused).
fn csv_batches(path: &Path, batch_rows: usize, mut f: impl FnMut(&CsvBatch) -> Result<()>) -> Result<()> {
    let batch_rows = batch_rows.max(1);
    let (back_tx, back_rx) = channel::<CsvBatch>();
    pipeline(
        move |tx| {
            let mut rdr = match open_csv(path) {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            loop {
                let mut b = back_rx.try_recv().unwrap_or_default();
                b.len = 0;
                while b.len < batch_rows {
                    if b.records.len() == b.len {
                        b.records.push(ByteRecord::new());
                    }
                    let Some(rec) = b.records.get_mut(b.len) else { break };
                    match rdr.read_byte_record(rec) {
                        Ok(true) => b.len += 1,
                        Ok(false) => break,
                        Err(e) => {
                            let _ = tx.send(Err(csv_err(path, e)));
                            return;
                        }
                    }
                }
                b.bytes = rdr.position().byte();
                let last = b.len < batch_rows;
                if b.len > 0 && tx.send(Ok(b)).is_err() {
                    return;
                }
                if last {
                    return;
                }
            }
        },
        |b| {
            f(&b)?;
            let _ = back_tx.send(b);
            Ok(())
        },
    )
}

impl Table {
    /// Opens `path` as `format`: reads a CSV's header and first [`SAMPLE_ROWS`]
    /// rows (a column is numeric when every field there is a number or missing),
    /// or a Parquet file's schema.
    pub fn open(path: &Path, format: Format) -> Result<Table> {
        let (columns, header) = match format {
            Format::Csv => Self::csv_columns(path)?,
            Format::Parquet => {
                let b = open_parquet(path)?;
                let cols = b
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| {
                        let (dtype, numeric) = numpy_dtype(f.data_type());
                        ColumnInfo { name: f.name().clone(), dtype, numeric }
                    })
                    .collect();
                (cols, ByteRecord::new())
            }
        };
        Ok(Table { path: path.to_path_buf(), format, columns, header, batch_rows: DEFAULT_BATCH_ROWS, progress: None })
    }

    fn csv_columns(path: &Path) -> Result<(Vec<ColumnInfo>, ByteRecord)> {
        let mut rdr = open_csv(path)?;
        let header = rdr.byte_headers().map_err(|e| csv_err(path, e))?.clone();
        if header.is_empty() {
            return Err(ScaleError::Empty(format!("{}: line 1: no header (the file is empty)", display(path))));
        }
        // Per column: every field so far a number or missing; every number an integer.
        let mut numeric = vec![true; header.len()];
        let mut integer = vec![true; header.len()];
        let mut seen = vec![false; header.len()];
        let mut rec = ByteRecord::new();
        for _ in 0..SAMPLE_ROWS {
            if !rdr.read_byte_record(&mut rec).map_err(|e| csv_err(path, e))? {
                break;
            }
            for (j, field) in rec.iter().enumerate() {
                match parse_field(field) {
                    Field64::Missing => {}
                    Field64::Value(v) => {
                        if let Some(s) = seen.get_mut(j) {
                            *s = true;
                        }
                        if v.fract() != 0.0 || field.iter().any(|c| matches!(c, b'.' | b'e' | b'E')) {
                            if let Some(i) = integer.get_mut(j) {
                                *i = false;
                            }
                        }
                    }
                    Field64::NotANumber => {
                        if let Some(n) = numeric.get_mut(j) {
                            *n = false;
                        }
                    }
                }
            }
        }
        let columns = header
            .iter()
            .zip(numeric.iter().zip(integer.iter().zip(&seen)))
            .map(|(name, (&num, (&int, &seen)))| ColumnInfo {
                name: String::from_utf8_lossy(name).into_owned(),
                dtype: match (num, int) {
                    (false, _) => "object",
                    // pandas reads a column with no value as float64.
                    (true, true) if seen => "int64",
                    (true, _) => "float64",
                }
                .to_owned(),
                numeric: num,
            })
            .collect();
        Ok((columns, header))
    }

    /// The file read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Its columns, in file order.
    pub fn columns(&self) -> &[ColumnInfo] {
        &self.columns
    }

    /// The indices of the columns to scale: those named (in the order given), or
    /// every numeric column when `names` is `None`.
    pub fn select(&self, names: Option<&[String]>) -> Result<Vec<usize>> {
        let Some(names) = names else {
            let sel: Vec<usize> = (0..self.columns.len()).filter(|&j| self.columns[j].numeric).collect();
            for &j in &sel {
                self.check_unique_name(j)?;
            }
            if sel.is_empty() {
                return Err(ScaleError::Empty(format!(
                    "{}: no numeric column (the file has: {})",
                    display(&self.path),
                    self.column_list()
                )));
            }
            return Ok(sel);
        };
        let mut sel = Vec::with_capacity(names.len());
        for name in names {
            let j = self.index_of(name)?;
            if sel.contains(&j) {
                return Err(ScaleError::param("columns", format!("{name:?} is named twice")));
            }
            // A CSV column is checked value by value as it is read (the error
            // names the line); a Parquet column has one type.
            let c = &self.columns[j];
            if self.format == Format::Parquet && !c.numeric {
                return Err(ScaleError::NotNumeric {
                    file: display(&self.path),
                    column: c.name.clone(),
                    dtype: c.dtype.clone(),
                });
            }
            sel.push(j);
        }
        if sel.is_empty() {
            return Err(ScaleError::param("columns", "no column named"));
        }
        Ok(sel)
    }

    /// The index of the column called `name`.
    /// Refuses a name that more than one column has: a scaled column is
    /// matched by name (in saved parameters too), so two would be confused.
    pub fn index_of(&self, name: &str) -> Result<usize> {
        let j = self.columns.iter().position(|c| c.name == name).ok_or_else(|| ScaleError::UnknownColumn {
            file: display(&self.path),
            place: self.header_place(),
            column: name.to_owned(),
            available: self.column_list(),
        })?;
        self.check_unique_name(j)?;
        Ok(j)
    }

    /// Refuses column `j` when another column has its name.
    fn check_unique_name(&self, j: usize) -> Result<()> {
        let name = &self.columns[j].name;
        let count = self.columns.iter().filter(|c| c.name == *name).count();
        if count > 1 {
            return Err(ScaleError::Format {
                file: display(&self.path),
                reason: format!(
                    "{}: {count} columns are named {name:?}; columns are matched by name, so give each a name of its own",
                    self.header_place()
                ),
            });
        }
        Ok(())
    }

    fn header_place(&self) -> &'static str {
        match self.format {
            Format::Csv => "line 1 (the header)",
            Format::Parquet => "schema",
        }
    }

    fn column_list(&self) -> String {
        self.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
    }

    fn report(&self, done: u64, total: u64) {
        if let Some(p) = &self.progress {
            p(done, total);
        }
    }

    fn file_len(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    /// The selected columns (`sel`, indices from [`Table::select`]) as a source of batches.
    pub fn source(&self, sel: &[usize]) -> TableSource<'_> {
        TableSource { table: self, sel: sel.to_vec() }
    }

    /// Parses the selected columns of a CSV batch into `out` (one `Vec` per
    /// selected column, NaN = missing), chunks of rows in parallel, each record
    /// read once. The first bad value in file order is the error.
    fn parse_csv_columns(&self, b: &CsvBatch, sel: &[usize], out: &mut Vec<Vec<f64>>) -> Result<()> {
        let records = b.records.get(..b.len).unwrap_or_default();
        let chunk = records.len().div_ceil(2 * rayon::current_num_threads()).max(512);
        let parts: Vec<Result<Vec<Vec<f64>>>> = records
            .par_chunks(chunk)
            .map(|recs| {
                let mut cols = vec![Vec::with_capacity(recs.len()); sel.len()];
                for r in recs {
                    for (col, &j) in cols.iter_mut().zip(sel) {
                        let raw = r.get(j).unwrap_or_default();
                        match parse_field(raw) {
                            Field64::Missing => col.push(f64::NAN),
                            Field64::Value(v) if v.is_finite() => col.push(v),
                            bad => {
                                let text = String::from_utf8_lossy(raw);
                                let reason = if bad == Field64::NotANumber {
                                    format!("{text:?} is not a number")
                                } else {
                                    format!("{text:?} is infinite (scikit-learn refuses infinity)")
                                };
                                let line = r.position().map_or(0, csv::Position::line);
                                return Err(self.bad_value("line", line, j, reason));
                            }
                        }
                    }
                }
                Ok(cols)
            })
            .collect();
        out.resize_with(sel.len(), Vec::new);
        out.iter_mut().for_each(Vec::clear);
        for part in parts {
            for (o, c) in out.iter_mut().zip(part?) {
                o.extend_from_slice(&c);
            }
        }
        Ok(())
    }

    /// [`ScaleError::NonFinite`] from the scaler, on the batch whose records
    /// are `records` (CSV) and whose first row is row `first_row` (1-based) of
    /// the numbering the scaler used, as [`ScaleError::BadValue`] naming this
    /// file, its line (CSV) or row (Parquet) and the column; other errors pass.
    fn locate(&self, e: ScaleError, sel: &[usize], records: Option<&[ByteRecord]>, first_row: u64) -> ScaleError {
        let ScaleError::NonFinite { row, column, value } = e else { return e };
        let j = sel.get(column).copied().unwrap_or(usize::MAX);
        let reason = crate::error::refusal(value);
        match records {
            Some(recs) => {
                let at = usize::try_from(row.saturating_sub(first_row)).ok();
                let line = at.and_then(|i| recs.get(i)).and_then(ByteRecord::position).map_or(0, csv::Position::line);
                self.bad_value("line", line, j, reason)
            }
            None => self.bad_value("row", row, j, reason),
        }
    }

    fn bad_value(&self, unit: &'static str, line: u64, j: usize, reason: String) -> ScaleError {
        ScaleError::BadValue {
            file: display(&self.path),
            unit,
            line,
            column: self.columns.get(j).map_or_else(String::new, |c| c.name.clone()),
            reason,
        }
    }

    /// A Parquet column as f64 values, null = NaN; infinite values are refused
    /// (`first_row` is the 1-based row of the batch's first row).
    fn parquet_values(&self, arr: &ArrayRef, j: usize, first_row: u64) -> Result<Vec<f64>> {
        let cast = arrow_cast::cast(arr, &DataType::Float64).map_err(|e| {
            self.bad_value("row", first_row, j, format!("cannot read {} as numbers: {e}", arr.data_type()))
        })?;
        let f = cast.as_any().downcast_ref::<Float64Array>().ok_or_else(|| {
            self.bad_value("row", first_row, j, format!("cannot read {} as numbers", arr.data_type()))
        })?;
        let mut v = f.values().to_vec();
        if let Some(nulls) = f.nulls() {
            for (x, valid) in v.iter_mut().zip(nulls.iter()) {
                if !valid {
                    *x = f64::NAN;
                }
            }
        }
        if let Some(i) = v.iter().position(|x| x.is_infinite()) {
            return Err(self.bad_value(
                "row",
                first_row + i as u64,
                j,
                format!("{} is infinite (scikit-learn refuses infinity)", v[i]),
            ));
        }
        Ok(v)
    }

    /// Writes `output` (as `out_format`): this table with the selected columns
    /// (`sel`, in the order the scaler was fitted on) mapped by `fitted` in
    /// `direction`, the other columns untouched and in place. Atomic: a failure
    /// leaves no file at `output`.
    pub fn apply(
        &self,
        sel: &[usize],
        fitted: &Fitted,
        direction: Direction,
        output: &Path,
        out_format: Format,
    ) -> Result<()> {
        check_not_input(&self.path, output)?;
        let tmp = AtomicFile::new(output).map_err(io_err(output))?;
        let map = |cols: &mut [Vec<f64>]| match direction {
            Direction::Transform => fitted.transform(cols),
            Direction::Inverse => fitted.inverse_transform(cols),
        };
        let file = tmp.file().try_clone().map_err(io_err(output))?;
        match (self.format, out_format) {
            (Format::Csv, Format::Csv) => self.csv_to_csv(sel, &map, file, output)?,
            (Format::Parquet, Format::Parquet) => self.parquet_to_parquet(sel, &map, file, output)?,
            (from, to) => {
                return Err(ScaleError::param(
                    "format",
                    format!("{from:?} input to {to:?} output is not supported: keep the input's format"),
                ))
            }
        }
        tmp.commit().map_err(io_err(output))
    }

    fn csv_to_csv(
        &self,
        sel: &[usize],
        map: &(dyn Fn(&mut [Vec<f64>]) -> Result<()> + Sync),
        file: File,
        output: &Path,
    ) -> Result<()> {
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let write_err = io_err(output);
        // Position of each file column among the selected ones.
        let mut pos_of: Vec<Option<usize>> = vec![None; self.columns.len()];
        for (p, &j) in sel.iter().enumerate() {
            if let Some(slot) = pos_of.get_mut(j) {
                *slot = Some(p);
            }
        }
        let mut head = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
        head.write_byte_record(&self.header).map_err(|e| format_err(output)(&e))?;
        out.write_all(&head.into_inner().map_err(|e| format_err(output)(&e))?).map_err(&write_err)?;
        let total = self.file_len();
        let mut cols: Vec<Vec<f64>> = Vec::new();
        csv_batches(&self.path, self.batch_rows, |b| {
            self.parse_csv_columns(b, sel, &mut cols)?;
            let records = b.records.get(..b.len).unwrap_or_default();
            map(&mut cols).map_err(|e| self.locate(e, sel, Some(records), 1))?;
            let chunk = records.len().div_ceil(4 * rayon::current_num_threads()).max(256);
            let cols = &cols;
            let pos_of = &pos_of;
            let texts: Vec<Result<Vec<u8>>> = records
                .par_chunks(chunk)
                .enumerate()
                .map(|(c, recs)| format_rows(recs, c * chunk, cols, pos_of).map_err(|e| format_err(output)(&e)))
                .collect();
            for t in texts {
                out.write_all(&t?).map_err(&write_err)?;
            }
            self.report(b.bytes, total);
            Ok(())
        })?;
        let file = out.into_inner().map_err(|e| write_err(e.into_error()))?;
        file.sync_all().map_err(write_err)
    }

    fn parquet_to_parquet(
        &self,
        sel: &[usize],
        map: &(dyn Fn(&mut [Vec<f64>]) -> Result<()> + Sync),
        file: File,
        output: &Path,
    ) -> Result<()> {
        let builder = open_parquet(&self.path)?;
        let total = u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
        let in_schema = builder.schema().clone();
        let fields: Vec<Field> = in_schema
            .fields()
            .iter()
            .enumerate()
            .map(|(j, f)| {
                if sel.contains(&j) {
                    Field::new(f.name(), DataType::Float64, true).with_metadata(f.metadata().clone())
                } else {
                    f.as_ref().clone()
                }
            })
            .collect();
        let schema = Arc::new(Schema::new_with_metadata(fields, in_schema.metadata().clone()));
        let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
        let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(|e| format_err(output)(&e))?;
        let reader = builder.with_batch_size(self.batch_rows.max(1)).build().map_err(|e| format_err(&self.path)(&e))?;
        let mut rows = 0u64;
        pipeline(
            |tx| {
                for b in reader {
                    if tx.send(b.map_err(|e| format_err(&self.path)(&e))).is_err() {
                        return;
                    }
                }
            },
            |batch| {
                let mut arrays: Vec<ArrayRef> = batch.columns().to_vec();
                let mut vals = Vec::with_capacity(sel.len());
                for &j in sel {
                    let arr = arrays.get(j).ok_or_else(|| format_err(&self.path)(&"a batch lacks a column"))?;
                    vals.push(self.parquet_values(arr, j, rows + 1)?);
                }
                // The scaler counts rows from 1 in each batch; the file from 1.
                map(&mut vals).map_err(|e| match e {
                    ScaleError::NonFinite { row, column, value } => {
                        self.locate(ScaleError::NonFinite { row: rows + row, column, value }, sel, None, 1)
                    }
                    e => e,
                })?;
                for (&j, v) in sel.iter().zip(vals) {
                    if let Some(slot) = arrays.get_mut(j) {
                        let nulls = slot.logical_nulls();
                        *slot = Arc::new(Float64Array::new(v.into(), nulls));
                    }
                }
                let out = RecordBatch::try_new(schema.clone(), arrays).map_err(|e| format_err(output)(&e))?;
                writer.write(&out).map_err(|e| format_err(output)(&e))?;
                rows += batch.num_rows() as u64;
                self.report(rows, total);
                Ok(())
            },
        )?;
        let file = writer.into_inner().map_err(|e| format_err(output)(&e))?;
        file.sync_all().map_err(io_err(output))
    }
}

/// CSV text of `recs` (rows `first..` of the batch): selected fields replaced by
/// their mapped values (shortest round-trip form), missing ones and the other
/// columns as they were.
fn format_rows(
    recs: &[ByteRecord],
    first: usize,
    cols: &[Vec<f64>],
    pos_of: &[Option<usize>],
) -> std::result::Result<Vec<u8>, csv::Error> {
    let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::with_capacity(recs.len() * 256));
    let mut rec = ByteRecord::new();
    let mut num = ryu::Buffer::new();
    for (i, r) in recs.iter().enumerate() {
        rec.clear();
        for (j, field) in r.iter().enumerate() {
            match pos_of.get(j).copied().flatten().and_then(|p| cols.get(p)?.get(first + i)) {
                Some(&v) if !(v.is_nan() && is_missing_field(field)) => rec.push_field(num.format(v).as_bytes()),
                _ => rec.push_field(field),
            }
        }
        w.write_byte_record(&rec)?;
    }
    w.into_inner().map_err(|e| e.into_error().into())
}

/// Refuses to write over the input.
fn check_not_input(input: &Path, output: &Path) -> Result<()> {
    if same_file(input, output) {
        return Err(ScaleError::param(
            "output",
            format!("{} is the input file: normkit never writes over its input", output.display()),
        ));
    }
    Ok(())
}

/// The selected columns of a [`Table`], read batch by batch (see [`Table::source`]).
pub struct TableSource<'a> {
    table: &'a Table,
    sel: Vec<usize>,
}

impl BatchSource for TableSource<'_> {
    fn n_columns(&self) -> usize {
        self.sel.len()
    }

    fn pass(&mut self, f: &mut dyn FnMut(&[Vec<f64>]) -> Result<()>) -> Result<()> {
        let t = self.table;
        match t.format {
            Format::Csv => {
                let total = t.file_len();
                let mut cols = Vec::new();
                let mut rows = 0u64;
                csv_batches(&t.path, t.batch_rows, |b| {
                    t.parse_csv_columns(b, &self.sel, &mut cols)?;
                    // The fit counts rows from 1 at the start of the pass.
                    let records = b.records.get(..b.len).unwrap_or_default();
                    f(&cols).map_err(|e| t.locate(e, &self.sel, Some(records), rows + 1))?;
                    rows += records.len() as u64;
                    t.report(b.bytes, total);
                    Ok(())
                })
            }
            Format::Parquet => {
                let builder = open_parquet(&t.path)?;
                let total = u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
                let mask = ProjectionMask::roots(builder.parquet_schema(), self.sel.iter().copied());
                let names: Vec<&str> = self.sel.iter().map(|&j| t.columns[j].name.as_str()).collect();
                let reader = builder
                    .with_projection(mask)
                    .with_batch_size(t.batch_rows.max(1))
                    .build()
                    .map_err(|e| format_err(&t.path)(&e))?;
                let mut rows = 0u64;
                pipeline(
                    |tx| {
                        for b in reader {
                            if tx.send(b.map_err(|e| format_err(&t.path)(&e))).is_err() {
                                return;
                            }
                        }
                    },
                    |batch| {
                        let schema = batch.schema();
                        let mut cols = Vec::with_capacity(names.len());
                        for (&j, name) in self.sel.iter().zip(&names) {
                            let k = schema.index_of(name).map_err(|e| format_err(&t.path)(&e))?;
                            cols.push(t.parquet_values(batch.column(k), j, rows + 1)?);
                        }
                        f(&cols).map_err(|e| t.locate(e, &self.sel, None, 1))?;
                        rows += batch.num_rows() as u64;
                        t.report(rows, total);
                        Ok(())
                    },
                )
            }
        }
    }
}

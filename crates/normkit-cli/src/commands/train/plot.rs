//! Plots of training runs with plotters: test accuracy against steps (one curve
//! per run), and, like Ioffe & Szegedy's Figure 1(b, c), the 15th/50th/85th
//! percentiles of the input to one nonlinearity of the last hidden layer (one
//! panel per run). SVG or PNG by the file's extension; text uses the bundled
//! DejaVu Sans (no system font library needed).

use super::config::Activation;
use super::run::RunResult;
use super::TrainError;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

const FONT: &[u8] = include_bytes!("../../../assets/DejaVuSans.ttf");
const SIZE: (u32, u32) = (1000, 720);
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

/// The image formats `--plot` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Scalable vector graphics.
    Svg,
    /// PNG bitmap.
    Png,
}

/// The format of `path` from its extension.
pub fn format_of(path: &Path) -> Result<Format, TrainError> {
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("svg") => Ok(Format::Svg),
        Some("png") => Ok(Format::Png),
        _ => {
            Err(TrainError::Usage(format!("--plot {}: unknown format (use a .svg or .png file name)", path.display())))
        }
    }
}

fn err(e: impl std::fmt::Display) -> TrainError {
    TrainError::Run(format!("plot: {e}"))
}

/// Draws `runs` to `path` (atomically: a temporary file, then a rename).
pub fn draw(path: &Path, runs: &[RunResult], title: &str, activation: Activation) -> Result<(), TrainError> {
    let format = format_of(path)?;
    // Registering twice is harmless; a font that fails to parse is a build defect.
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| err("bundled font is invalid"))?;
    let bytes = encode(format, runs, title, activation)?;
    super::write_atomically(path, &bytes)
}

/// Renders the plot into the bytes of a file in `format`.
fn encode(format: Format, runs: &[RunResult], title: &str, activation: Activation) -> Result<Vec<u8>, TrainError> {
    match format {
        Format::Svg => {
            let mut svg = String::new();
            {
                let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
                render(&root, runs, title, activation)?;
                root.present().map_err(err)?;
            }
            Ok(svg.into_bytes())
        }
        Format::Png => {
            let mut rgb = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
            {
                let root = BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area();
                render(&root, runs, title, activation)?;
                root.present().map_err(err)?;
            }
            png_bytes(&rgb)
        }
    }
}

/// Step numbers as integers (`20000`, not `20000.0`).
fn steps_label(x: &f64) -> String {
    format!("{}", x.round() as i64)
}

/// The PNG file of an RGB image of `SIZE`.
fn png_bytes(rgb: &[u8]) -> Result<Vec<u8>, TrainError> {
    let mut bytes = Vec::new();
    let mut enc = png::Encoder::new(&mut bytes, SIZE.0, SIZE.1);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Best);
    enc.set_adaptive_filter(png::AdaptiveFilterType::Adaptive);
    let mut w = enc.write_header().map_err(err)?;
    w.write_image_data(rgb).map_err(err)?;
    w.finish().map_err(err)?;
    Ok(bytes)
}

fn render<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    runs: &[RunResult],
    title: &str,
    activation: Activation,
) -> Result<(), TrainError>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, ("sans-serif", 18)).map_err(err)?;
    let (top, bottom) = root.split_vertically(SIZE.1 / 2);
    let max_step = runs.iter().flat_map(|r| r.evals.iter().map(|e| e.step)).max().unwrap_or(1).max(1);

    // (a) Test accuracy against steps.
    let lo = runs.iter().flat_map(|r| r.evals.iter().skip(1).map(|e| e.test_accuracy)).fold(1.0f64, f64::min);
    let y0 = ((lo * 20.0).floor() / 20.0).clamp(0.0, 0.95);
    let mut chart = ChartBuilder::on(&top)
        .caption("test accuracy", ("sans-serif", 15))
        .margin(10)
        .margin_right(20)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..max_step as f64, y0..1.0f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .x_desc("training steps")
        .y_desc("accuracy")
        .x_label_formatter(&steps_label)
        .draw()
        .map_err(err)?;
    for (i, r) in runs.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let label = if r.label.is_empty() { "test accuracy".to_string() } else { r.label.clone() };
        let points: Vec<(f64, f64)> =
            r.evals.iter().filter(|e| e.step > 0).map(|e| (e.step as f64, e.test_accuracy)).collect();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;

    // (b, c) Percentiles of the input to one unit's nonlinearity of the last
    // hidden layer, one panel per run, on a shared y range.
    let act = match activation {
        Activation::Sigmoid => "sigmoid",
        Activation::Relu => "relu",
        Activation::Tanh => "tanh",
    };
    let (mut ylo, mut yhi) = (f64::INFINITY, f64::NEG_INFINITY);
    for e in runs.iter().flat_map(|r| &r.evals) {
        ylo = ylo.min(e.probe[0]);
        yhi = yhi.max(e.probe[2]);
    }
    if !(ylo.is_finite() && yhi.is_finite()) || ylo >= yhi {
        (ylo, yhi) = (-1.0, 1.0);
    }
    let pad = 0.05 * (yhi - ylo);
    let panels = bottom.split_evenly((1, runs.len().max(1)));
    for (i, (panel, r)) in panels.iter().zip(runs).enumerate() {
        let name = if r.label.is_empty() { String::new() } else { format!(" ({})", r.label) };
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("input to one {act} of the last hidden layer{name}"), ("sans-serif", 14))
            .margin(10)
            .margin_right(20)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..max_step as f64, (ylo - pad)..(yhi + pad))
            .map_err(err)?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .x_desc("training steps")
            .y_desc("15th, 50th (thick), 85th percentile")
            .x_labels(5)
            .x_label_formatter(&steps_label)
            .draw()
            .map_err(err)?;
        let color = COLORS[i % COLORS.len()];
        for (k, width) in [1, 3, 1].into_iter().enumerate() {
            let points: Vec<(f64, f64)> = r.evals.iter().map(|e| (e.step as f64, e.probe[k])).collect();
            chart.draw_series(LineSeries::new(points, color.stroke_width(width))).map_err(err)?;
        }
    }
    Ok(())
}

//! The latency distribution as an SVG percentile plot (HdrHistogram style: latency against
//! "number of nines", so the tail gets as much room as the median).
//!
//! plotters' SVG backend writes text as `<text>` elements, so no font is loaded or needed.
use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

use crate::error::LoadError;

/// One line of the plot.
pub struct Series<'a> {
    pub label: String,
    pub histogram: &'a Histogram<u64>,
}

const COLOURS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// 0 → "0%", 1 → "90%", 2 → "99%", 3 → "99.9%".
fn percentile_label(nines: f64) -> String {
    let percent = 100.0 * (1.0 - 10f64.powf(-nines));
    let decimals = (nines - 2.0).ceil().clamp(0.0, 6.0);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let decimals = decimals as usize;
    format!("{percent:.decimals$}%")
}

/// Log-axis ticks fall on powers of ten: "0.1 ms", "1 ms", "10 ms", "100 ms".
fn axis_ms(value: f64) -> String {
    if value >= 1.0 {
        format!("{value:.0} ms")
    } else {
        format!("{} ms", format!("{value:.3}").trim_end_matches('0'))
    }
}

/// Points (nines, milliseconds) from the median outward to the histogram's resolution.
fn points(histogram: &Histogram<u64>, max_nines: f64) -> Vec<(f64, f64)> {
    let steps = 200;
    (0..=steps)
        .map(|i| {
            let nines = max_nines * f64::from(i) / f64::from(steps);
            let quantile = 1.0 - 10f64.powf(-nines);
            #[allow(clippy::cast_precision_loss)]
            let ms = histogram.value_at_quantile(quantile) as f64 / 1000.0;
            (nines, ms.max(0.001))
        })
        .collect()
}

/// Renders the series to an SVG document.
pub fn render(title: &str, series: &[Series<'_>]) -> Result<String, String> {
    let series: Vec<&Series<'_>> = series.iter().filter(|s| !s.histogram.is_empty()).collect();
    let most = series.iter().map(|s| s.histogram.len()).max().unwrap_or(1);
    // As many nines as the samples support (1000 samples: 99.9 %), at least two, at most five.
    #[allow(clippy::cast_precision_loss)]
    let max_nines = (most as f64).log10().floor().clamp(2.0, 5.0);
    let lines: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| points(s.histogram, max_nines))
        .collect();
    let lowest = lines
        .iter()
        .flatten()
        .map(|p| p.1)
        .fold(f64::INFINITY, f64::min);
    let highest = lines.iter().flatten().map(|p| p.1).fold(0.0, f64::max);
    let (low, high) = if lowest.is_finite() {
        (lowest * 0.8, (highest * 1.25).max(lowest * 2.0))
    } else {
        (0.1, 10.0)
    };

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(16)
            // Room for the last percentile label, centred on the right edge.
            .margin_right(48)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..max_nines, (low..high).log_scale())
            .map_err(|e| e.to_string())?;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let x_labels = max_nines as usize + 1;
        chart
            .configure_mesh()
            .x_labels(x_labels)
            .x_label_formatter(&|x| percentile_label(*x))
            .y_label_formatter(&|y| axis_ms(*y))
            .x_desc("percentile")
            .y_desc("latency")
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, (s, line)) in series.iter().zip(lines).enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            chart
                .draw_series(LineSeries::new(line, colour.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(s.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// Writes the plot to `path` (its directory must exist).
pub fn write(path: &Path, title: &str, series: &[Series<'_>]) -> Result<(), LoadError> {
    let svg = render(title, series)
        .map_err(|e| LoadError::Invalid(format!("drawing the latency plot failed: {e}")))?;
    std::fs::write(path, svg).map_err(|source| LoadError::Write {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_axis_reads_as_nines() {
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(1.0), "90%");
        assert_eq!(percentile_label(2.0), "99%");
        assert_eq!(percentile_label(3.0), "99.9%");
        assert_eq!(percentile_label(4.0), "99.99%");
        assert_eq!(axis_ms(100.0), "100 ms");
        assert_eq!(axis_ms(0.1), "0.1 ms");
    }

    #[test]
    fn renders_an_svg_with_both_series() {
        let mut fast = crate::stats::histogram();
        let mut slow = crate::stats::histogram();
        for i in 1..=5000u64 {
            fast.record(200 + i).expect("in range");
            slow.record(5_000 + 7 * i).expect("in range");
        }
        let svg = render(
            "latency",
            &[
                Series {
                    label: "ingest".into(),
                    histogram: &fast,
                },
                Series {
                    label: "end to end".into(),
                    histogram: &slow,
                },
            ],
        )
        .expect("renders");
        assert!(svg.starts_with("<svg"), "{}", &svg[..40.min(svg.len())]);
        assert!(svg.contains("end to end") && svg.contains("99.9%"));
        let empty = render("nothing", &[]).expect("renders without data");
        assert!(empty.contains("nothing"));
    }
}

//! SVG charts of a run (plotters, SVG backend only: no fonts are loaded,
//! text is left to the SVG viewer).

use std::path::Path;

use plotters::prelude::*;

use super::report::Series;
use crate::bench::BenchError;

const SIZE: (u32, u32) = (960, 480);

fn err(path: &Path) -> impl Fn(String) -> BenchError + '_ {
    move |e| BenchError::Failed(format!("{}: {e}", path.display()))
}

/// Lines per second written, seen by the live tail and archived (by the
/// second their object was complete).
pub fn throughput(series: &Series, path: &Path, title: &str) -> Result<(), BenchError> {
    let lines: [(&str, &[u64], RGBColor); 3] = [
        ("written", &series.written, BLUE),
        ("live tail", &series.live_tail, GREEN),
        ("archived (object complete)", &series.archived, RED),
    ];
    let secs = lines.iter().map(|l| l.1.len()).max().unwrap_or(0).max(1) as f64;
    let top = lines.iter().flat_map(|l| l.1.iter()).copied().max().unwrap_or(0).max(1) as f64 * 1.1;
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..secs, 0f64..top)?;
        chart.configure_mesh().x_desc("seconds since the load started").y_desc("lines per second").draw()?;
        for (label, values, color) in lines {
            chart
                .draw_series(LineSeries::new(values.iter().enumerate().map(|(i, v)| (i as f64, *v as f64)), color))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| err(path)(e.to_string()))
}

/// p50 and p99 latency (log scale) by the second the lines were written.
pub fn latency(series: &Series, path: &Path, title: &str) -> Result<(), BenchError> {
    let lines: [(&str, &[Option<f64>], RGBColor); 4] = [
        ("archive p50", &series.archive_p50_ms, RED),
        ("archive p99", &series.archive_p99_ms, MAGENTA),
        ("live tail p50", &series.tail_p50_ms, GREEN),
        ("live tail p99", &series.tail_p99_ms, CYAN),
    ];
    let secs = lines.iter().map(|l| l.1.len()).max().unwrap_or(0).max(1) as f64;
    let values = || lines.iter().flat_map(|l| l.1.iter().flatten().copied());
    let top = values().fold(1.0f64, f64::max) * 1.5;
    let bottom = values().filter(|v| *v > 0.0).fold(top, f64::min).clamp(0.01, 1.0) * 0.8;
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..secs, (bottom..top).log_scale())?;
        chart.configure_mesh().x_desc("second the lines were written").y_desc("latency, ms (log)").draw()?;
        for (label, values, color) in lines {
            let points = values.iter().enumerate().filter_map(|(i, v)| v.map(|v| (i as f64, v.max(bottom))));
            chart
                .draw_series(LineSeries::new(points, color))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| err(path)(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg() {
        let dir = tempfile::tempdir().unwrap();
        let s = Series {
            written: vec![10, 20, 30],
            live_tail: vec![9, 21, 30],
            archived: vec![0, 30, 30],
            archive_p50_ms: vec![Some(900.0), None, Some(1200.0)],
            archive_p99_ms: vec![Some(2000.0), None, Some(2500.0)],
            tail_p50_ms: vec![Some(0.5), Some(0.7), Some(0.4)],
            tail_p99_ms: vec![Some(3.0), Some(5.0), Some(2.0)],
        };
        throughput(&s, &dir.path().join("t.svg"), "t").unwrap();
        latency(&s, &dir.path().join("l.svg"), "l").unwrap();
        for f in ["t.svg", "l.svg"] {
            let text = std::fs::read_to_string(dir.path().join(f)).unwrap();
            assert!(text.contains("<svg") && text.contains("</svg>"), "{f}");
        }
        // No data at all still draws empty charts.
        throughput(&Series::default(), &dir.path().join("e.svg"), "e").unwrap();
        latency(&Series::default(), &dir.path().join("e2.svg"), "e").unwrap();
    }
}

//! The report's plots, as SVG (`plotters`): latency (p99 per second) and throughput over time
//! per stream, and the daily-limit usage over time with the batch threshold.
use std::path::Path;

use plotters::prelude::*;

use crate::report::Report;

type Result = std::result::Result<(), Box<dyn std::error::Error>>;

/// Writes `latency.svg`, `throughput.svg` and, when the quota was sampled, `limit.svg` into
/// `dir`; returns the files written.
pub fn write(report: &Report, dir: &Path) -> std::result::Result<Vec<String>, String> {
    let mut written = Vec::new();
    let mut plot = |name: &str, f: &dyn Fn(&Path) -> Result| {
        let path = dir.join(name);
        f(&path).map_err(|e| format!("cannot draw {}: {e}", path.display()))?;
        written.push(name.to_owned());
        Ok::<(), String>(())
    };
    plot("latency.svg", &|p| {
        per_second(
            report,
            p,
            "p99 latency per second (ms, from the scheduled time)",
            |s| s.p99_ms,
        )
    })?;
    plot("throughput.svg", &|p| {
        per_second(report, p, "answers per second", |s| s.completed as f64)
    })?;
    if !report.limit_samples.is_empty() {
        plot("limit.svg", &|p| limit(report, p))?;
    }
    Ok(written)
}

fn per_second(
    report: &Report,
    path: &Path,
    title: &str,
    value: impl Fn(&crate::latency::Second) -> f64,
) -> Result {
    let root = SVGBackend::new(path, (960, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let x_max = report
        .timelines
        .values()
        .map(|t| t.len())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let y_max = report
        .timelines
        .values()
        .flatten()
        .map(&value)
        .fold(0.0, f64::max)
        .max(1e-3)
        * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{}: {title}", report.scenario), ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the start")
        .draw()?;
    for (i, (name, seconds)) in report.timelines.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                seconds.iter().map(|s| (s.second as f64, value(s))),
                color.stroke_width(2),
            ))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn limit(report: &Report, path: &Path) -> Result {
    let samples = &report.limit_samples;
    let root = SVGBackend::new(path, (960, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let x_max = samples.last().map_or(1.0, |s| s.at_s).max(1.0);
    let y_max = samples
        .iter()
        .map(|s| s.used as f64 / s.limit.max(1) as f64 * 100.0)
        .fold(100.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "{}: daily messaging limit usage (%); shaded: batch mode",
                report.scenario
            ),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the start")
        .y_desc("% of the limit")
        .draw()?;
    // Batch mode as shaded spans between samples.
    chart.draw_series(samples.windows(2).filter(|w| w[0].batch_mode).map(|w| {
        Rectangle::new(
            [(w[0].at_s, 0.0), (w[1].at_s, y_max)],
            RGBColor(255, 200, 0).mix(0.25).filled(),
        )
    }))?;
    let threshold = samples.last().map_or(0.0, |s| s.threshold * 100.0);
    chart
        .draw_series(LineSeries::new(
            [(0.0, threshold), (x_max, threshold)],
            RGBColor(230, 120, 0).stroke_width(2),
        ))?
        .label(format!("batch threshold ({threshold:.0}%)"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RGBColor(230, 120, 0)));
    chart
        .draw_series(LineSeries::new(
            [(0.0, 100.0), (x_max, 100.0)],
            RED.stroke_width(2),
        ))?
        .label("the limit")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .draw_series(LineSeries::new(
            samples
                .iter()
                .map(|s| (s.at_s, s.used as f64 / s.limit.max(1) as f64 * 100.0)),
            BLUE.stroke_width(2),
        ))?
        .label("customers counted")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

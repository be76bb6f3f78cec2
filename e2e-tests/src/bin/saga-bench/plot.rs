//! The sweep as a picture: completed against offered rate on the left, p50 and p99 latency
//! against offered rate on the right. An SVG, so it needs no fonts and reads in a browser or
//! on GitHub.

use std::path::Path;

use e2e_tests::TestResult;
use plotters::prelude::*;

/// One rate of the sweep, as plotted.
pub struct Point {
    pub offered: f64,
    pub completed: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

pub fn sweep(path: &Path, points: &[Point]) -> TestResult {
    let root = SVGBackend::new(path, (1100, 450)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(550);
    let top_rate = points
        .iter()
        .map(|p| p.offered.max(p.completed))
        .fold(1.0, f64::max)
        * 1.1;

    let mut throughput = ChartBuilder::on(&left)
        .caption("completed vs offered (sagas/s)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..top_rate, 0.0..top_rate)?;
    throughput
        .configure_mesh()
        .x_desc("offered/s")
        .y_desc("completed/s")
        .draw()?;
    throughput
        .draw_series(LineSeries::new(
            [(0.0, 0.0), (top_rate, top_rate)],
            BLACK.mix(0.25),
        ))?
        .label("offered = completed")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK.mix(0.25)));
    throughput
        .draw_series(LineSeries::new(
            points.iter().map(|p| (p.offered, p.completed)),
            BLUE.stroke_width(2),
        ))?
        .label("completed")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLUE.stroke_width(2)));
    throughput.draw_series(
        points
            .iter()
            .map(|p| Circle::new((p.offered, p.completed), 3, BLUE.filled())),
    )?;
    throughput
        .configure_series_labels()
        .border_style(BLACK.mix(0.3))
        .background_style(WHITE)
        .draw()?;

    // Latency spans orders of magnitude past saturation: a log scale keeps both ends legible.
    let top_ms = points.iter().map(|p| p.p99_ms).fold(10.0, f64::max) * 1.5;
    let mut latency = ChartBuilder::on(&right)
        .caption("send → OrderConfirmed (ms, log)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..top_rate, (1.0..top_ms).log_scale())?;
    latency
        .configure_mesh()
        .x_desc("offered/s")
        .y_desc("ms")
        .draw()?;
    for (name, colour, value) in [
        ("p50", GREEN, (|p: &Point| p.p50_ms) as fn(&Point) -> f64),
        ("p99", RED, |p: &Point| p.p99_ms),
    ] {
        latency
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.offered, value(p).max(1.0))),
                colour.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], colour.stroke_width(2)));
        latency.draw_series(
            points
                .iter()
                .map(|p| Circle::new((p.offered, value(p).max(1.0)), 3, colour.filled())),
        )?;
    }
    latency
        .configure_series_labels()
        .border_style(BLACK.mix(0.3))
        .background_style(WHITE)
        .draw()?;
    root.present()?;
    Ok(())
}

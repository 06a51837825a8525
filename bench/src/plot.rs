//! The delay plot: p50 and p99 publish-to-receive delay against subscriber count, per server.
//!
//! plotters' SVG backend without its font features: text is written as SVG `<text>` elements
//! (sized by plotters' built-in estimate), which the viewer draws with its own fonts, so no
//! system font is needed to produce the file.

use plotters::prelude::*;

use crate::scenario::Outcome;

const COLORS: [RGBColor; 5] = [
    RGBColor(200, 40, 40),
    RGBColor(30, 110, 200),
    RGBColor(40, 150, 60),
    RGBColor(150, 90, 20),
    RGBColor(130, 60, 170),
];
/// The floor (floor.rs), drawn in grey: a reference line, not a competitor.
const FLOOR_COLOR: RGBColor = RGBColor(120, 120, 120);

/// Writes the plot of the fan-out outcomes (scenarios named `fanout-*`) to `path`.
pub fn delay_svg(
    outcomes: &[Outcome],
    servers: &[String],
    path: &std::path::Path,
) -> Result<(), String> {
    let fan: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.scenario.starts_with("fanout-") && o.delay_ms.count > 0)
        .collect();
    if fan.is_empty() {
        return Err("no fan-out figures to plot".into());
    }
    let max_x = fan.iter().map(|o| o.subscribers).max().unwrap_or(1) as f64 * 1.05;
    let max_y = fan.iter().map(|o| o.delay_ms.p99).fold(1.0, f64::max) * 2.0;
    let min_y = fan
        .iter()
        .map(|o| o.delay_ms.p50)
        .fold(max_y, f64::min)
        .max(0.01)
        / 2.0;
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    let e = |e: DrawingAreaErrorKind<_>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Publish-to-receive delay (solid: p99, thin: p50)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..max_x, (min_y..max_y).log_scale())
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("subscribers")
        .y_desc("delay, ms (log scale)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y}"))
        .draw()
        .map_err(e)?;
    let others = servers.iter().filter(|s| *s != crate::servers::FLOOR);
    let floor = servers.iter().filter(|s| *s == crate::servers::FLOOR);
    let colored = others
        .enumerate()
        .map(|(i, s)| (s, COLORS[i % COLORS.len()]))
        .chain(floor.map(|s| (s, FLOOR_COLOR)));
    for (server, color) in colored {
        let mut points: Vec<(f64, f64, f64)> = fan
            .iter()
            .filter(|o| &o.server == server)
            .map(|o| {
                (
                    o.subscribers as f64,
                    o.delay_ms.p50.max(min_y),
                    o.delay_ms.p99.max(min_y),
                )
            })
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.0, p.2)),
                color.stroke_width(3),
            ))
            .map_err(e)?
            .label(server.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.0, p.1)),
                color.stroke_width(1),
            ))
            .map_err(e)?;
        chart
            .draw_series(
                points
                    .iter()
                    .map(|p| Circle::new((p.0, p.2), 4, color.filled())),
            )
            .map_err(e)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

//! The ladder's PNG plots, drawn in Rust (plotters' bitmap backend and the review app's panels
//! and bitmap font): latency and memory per rung, and quality against speed.

use super::report::RungRow;
use anyhow::Result;
use plotters::prelude::*;
use wanrt_review::plot::{axis_from_zero, encode_png, render_panels, text, Panel};

/// A rung's value on a panel, with its interval.
type PanelValue = (Option<f64>, Option<[f64; 2]>);

/// `latency.png`: per rung the transformer step (median, min–max), end-to-end time per video and
/// peak memory, each on its own axis with the baseline marked.
pub fn latency_memory(rows: &[RungRow]) -> Result<Vec<u8>> {
    let (blue, green, orange) = (RGBColor(31, 100, 180), RGBColor(40, 150, 70), RGBColor(220, 110, 20));
    let panel = |title: &str, color, get: &dyn Fn(&RungRow) -> PanelValue| {
        let values: Vec<_> = rows.iter().map(|r| (r.name.clone(), get(r))).collect();
        let (lo, hi, ticks) = axis_from_zero(
            values.iter().flat_map(|(_, (v, ci))| v.iter().copied().chain(ci.iter().flatten().copied())),
        );
        Panel {
            title: title.to_string(),
            reference: values.first().and_then(|(_, (v, _))| *v),
            rows: values.into_iter().map(|(n, (v, ci))| (n, v, ci)).collect(),
            lo,
            hi,
            ticks,
            color,
        }
    };
    let step = panel("Transformer step, s (median, min-max)", &blue, &|r| {
        (r.step_spread.map(|s| s.median), r.step_spread.map(|s| [s.min, s.max]))
    });
    let e2e = panel("End to end per video, s (mean)", &green, &|r| (r.end_to_end_seconds, None));
    let mem = panel("Peak memory, MiB", &orange, &|r| (r.peak_memory_bytes.map(|b| b as f64 / 1048576.0), None));
    render_panels("wanrt bench --ladder: speed and memory", &[step, e2e, mem])
}

const W: u32 = 960;
const H: u32 = 560;
const MARGIN: i32 = 80;

/// `quality_speed.png`: each rung at (denoising speedup per step over the baseline — the step
/// cache's skipped passes included —, PSNR vs baseline in dB), labelled: up and to the right is
/// better. Rungs without both values are left out.
pub fn quality_speed(rows: &[RungRow]) -> Result<Vec<u8>> {
    let points: Vec<(&str, f64, f64)> = rows
        .iter()
        .filter_map(|r| Some((r.name.as_str(), r.denoise_speedup?, r.quality.psnr.as_ref()?.value)))
        .filter(|p| p.1.is_finite() && p.2.is_finite())
        .collect();
    let (_, xmax, xticks) = axis_from_zero(points.iter().map(|p| p.1).chain([1.0]));
    let (_, ymax, yticks) = axis_from_zero(points.iter().map(|p| p.2).chain([10.0]));
    let mut buf = vec![255u8; (W * H * 3) as usize];
    {
        let area = BitMapBackend::with_buffer(&mut buf, (W, H)).into_drawing_area();
        area.fill(&WHITE).map_err(|e| anyhow::anyhow!("plot: {e}"))?;
        let (black, grey, blue) = (RGBColor(20, 20, 20), RGBColor(210, 210, 210), RGBColor(31, 100, 180));
        let (x0, x1, y0, y1) = (MARGIN, W as i32 - 40, H as i32 - MARGIN, 70);
        let px = |x: f64| x0 + ((x / xmax) * (x1 - x0) as f64).round() as i32;
        let py = |y: f64| y0 - ((y / ymax) * (y0 - y1) as f64).round() as i32;
        text(&area, "wanrt bench --ladder: quality vs speed", 16, 12, 2, &black);
        for &t in &xticks {
            let _ = area.draw(&PathElement::new(vec![(px(t), y0), (px(t), y1)], grey));
            text(&area, &format!("{t:.1}x"), px(t) - 12, y0 + 8, 1, &black);
        }
        for &t in &yticks {
            let _ = area.draw(&PathElement::new(vec![(x0, py(t)), (x1, py(t))], grey));
            text(&area, &format!("{t:.0}"), x0 - 36, py(t) - 4, 1, &black);
        }
        text(
            &area,
            "denoising speedup per step vs baseline (step cache included)",
            (x0 + x1) / 2 - 240,
            y0 + 28,
            1,
            &black,
        );
        text(&area, "PSNR vs baseline (dB)", 8, y1 - 22, 1, &black);
        let _ =
            area.draw(&PathElement::new(vec![(px(1.0), y0), (px(1.0), y1)], RGBColor(120, 120, 120).stroke_width(2)));
        for (name, x, y) in &points {
            let _ = area.draw(&Circle::new((px(*x), py(*y)), 6, blue.filled()));
            text(&area, name, px(*x) + 10, py(*y) - 4, 1, &black);
        }
        if points.is_empty() {
            text(&area, "no rung has both a speedup and a PSNR", x0 + 20, (y0 + y1) / 2, 2, &black);
        }
        area.present().map_err(|e| anyhow::anyhow!("plot: {e}"))?;
    }
    encode_png(&buf, W, H)
}

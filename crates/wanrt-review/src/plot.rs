//! The results plot as PNG: Bradley–Terry log-strengths per criterion and mean Likert per
//! variant, each with its 95% interval.
//!
//! Geometry is drawn with plotters' bitmap backend; text uses the public-domain 8×8
//! bitmap font of the `font8x8` crate, so no system font library (fontconfig/freetype)
//! is needed to build or run.

use plotters::prelude::*;

use crate::stats::Stats;

const W: u32 = 960;
const LEFT: i32 = 260;
const RIGHT: i32 = 40;
const ROW: i32 = 26;

/// Draws text with the 8×8 font scaled by `scale`, top-left at (x, y).
pub fn text<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    s: &str,
    x: i32,
    y: i32,
    scale: i32,
    color: &RGBColor,
) {
    let mut cx = x;
    for ch in s.chars() {
        let code = if ch.is_ascii() { ch as usize } else { b'?' as usize };
        {
            let rows = font8x8::legacy::BASIC_LEGACY[code];
            for (ry, bits) in rows.iter().enumerate() {
                for rx in 0..8 {
                    if bits & (1 << rx) != 0 {
                        let x0 = cx + rx * scale;
                        let y0 = y + ry as i32 * scale;
                        for dy in 0..scale {
                            for dx in 0..scale {
                                let _ = area.draw_pixel((x0 + dx, y0 + dy), color);
                            }
                        }
                    }
                }
            }
        }
        cx += 8 * scale;
    }
}

/// A horizontal "forest" panel: one row per (label, estimate, interval) on a shared axis.
pub struct Panel<'a> {
    pub title: String,
    pub rows: Vec<(String, Option<f64>, Option<[f64; 2]>)>,
    pub lo: f64,
    pub hi: f64,
    pub ticks: Vec<f64>,
    /// A vertical line (e.g. 0, or the baseline's value).
    pub reference: Option<f64>,
    pub color: &'a RGBColor,
}

fn panel_height(p: &Panel) -> i32 {
    40 + p.rows.len() as i32 * ROW + 30
}

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, plotters::coord::Shift>, y: i32, p: &Panel) {
    let black = RGBColor(20, 20, 20);
    let grey = RGBColor(200, 200, 200);
    text(area, &p.title, 16, y + 8, 2, &black);
    let top = y + 36;
    let bottom = top + p.rows.len() as i32 * ROW;
    let x_of = |v: f64| -> i32 {
        let t = ((v - p.lo) / (p.hi - p.lo)).clamp(0.0, 1.0);
        LEFT + (t * (W as i32 - LEFT - RIGHT) as f64).round() as i32
    };
    for &t in &p.ticks {
        let x = x_of(t);
        let _ = area.draw(&PathElement::new(vec![(x, top), (x, bottom)], grey));
        let label = tick_label(t);
        text(area, &label, x - label.len() as i32 * 4, bottom + 6, 1, &black);
    }
    if let Some(r) = p.reference {
        let x = x_of(r);
        let _ = area.draw(&PathElement::new(vec![(x, top), (x, bottom)], RGBColor(120, 120, 120).stroke_width(2)));
    }
    for (i, (label, est, ci)) in p.rows.iter().enumerate() {
        let cy = top + i as i32 * ROW + ROW / 2;
        let shown: String = label.chars().take(28).collect();
        text(area, &shown, 16, cy - 4, 1, &black);
        if let Some([a, b]) = ci {
            let _ = area.draw(&PathElement::new(vec![(x_of(*a), cy), (x_of(*b), cy)], p.color.stroke_width(3)));
            for v in [a, b] {
                let _ =
                    area.draw(&PathElement::new(vec![(x_of(*v), cy - 6), (x_of(*v), cy + 6)], p.color.stroke_width(2)));
            }
        }
        match est {
            Some(e) => {
                let _ = area.draw(&Circle::new((x_of(*e), cy), 6, p.color.filled()));
            }
            None => text(area, "no data", LEFT + 8, cy - 4, 1, &RGBColor(150, 150, 150)),
        }
    }
}

/// `0.25` → "0.25", `2.0` → "2", `0.0125` → "0.0125": no more digits than the tick has.
fn tick_label(t: f64) -> String {
    let s = format!("{t:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// An axis from 0 to a round value above every value, with about five ticks.
pub fn axis_from_zero(values: impl Iterator<Item = f64>) -> (f64, f64, Vec<f64>) {
    let max = values.filter(|v| v.is_finite()).fold(0.0f64, f64::max);
    if max <= 0.0 {
        return (0.0, 1.0, vec![0.0, 0.5, 1.0]);
    }
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * mag).find(|s| s * 5.0 >= max).unwrap_or(10.0 * mag);
    let n = (max / step).ceil() as usize;
    let ticks: Vec<f64> = (0..=n).map(|i| i as f64 * step).collect();
    (0.0, *ticks.last().expect("n ≥ 0"), ticks)
}

fn nice_range(values: impl Iterator<Item = f64>) -> (f64, f64, Vec<f64>) {
    let m = values.filter(|v| v.is_finite()).fold(0.5f64, |m, v| m.max(v.abs()));
    let m = (m * 2.0).ceil() / 2.0;
    let step = if m <= 1.0 {
        0.25
    } else if m <= 3.0 {
        0.5
    } else {
        1.0
    };
    let mut ticks = Vec::new();
    let mut t = -m;
    while t <= m + 1e-9 {
        ticks.push(t);
        t += step;
    }
    (-m, m, ticks)
}

/// Renders the plot of `stats` to PNG bytes.
pub fn render_png(study: &str, stats: &Stats) -> anyhow::Result<Vec<u8>> {
    let blue = RGBColor(31, 100, 180);
    let orange = RGBColor(220, 110, 20);
    let mut bt_rows = Vec::new();
    for c in &stats.criteria {
        for s in &c.bradley_terry {
            let est = (c.n_votes > 0).then_some(s.log_strength);
            bt_rows.push((format!("{} / {}", c.label, s.variant), est, s.ci));
        }
    }
    let (lo, hi, ticks) =
        nice_range(bt_rows.iter().flat_map(|(_, e, ci)| e.iter().copied().chain(ci.iter().flatten().copied())));
    let bt = Panel {
        title: "Bradley-Terry log-strength (95% CI)".into(),
        rows: bt_rows,
        lo,
        hi,
        ticks,
        reference: Some(0.0),
        color: &blue,
    };
    let lk = Panel {
        title: "Mean Likert score 1-5 (95% CI)".into(),
        rows: stats.likert.iter().map(|l| (format!("{} (n={})", l.variant, l.n), l.mean, l.ci)).collect(),
        lo: 1.0,
        hi: 5.0,
        ticks: vec![1.0, 2.0, 3.0, 4.0, 5.0],
        reference: None,
        color: &orange,
    };
    render_panels(&format!("wanrt review: {study}"), &[bt, lk])
}

/// A title over stacked panels, as PNG bytes.
pub fn render_panels(title: &str, panels: &[Panel]) -> anyhow::Result<Vec<u8>> {
    let h = (40 + panels.iter().map(panel_height).sum::<i32>() + 10) as u32;
    let mut buf = vec![255u8; (W * h * 3) as usize];
    {
        let area = BitMapBackend::with_buffer(&mut buf, (W, h)).into_drawing_area();
        area.fill(&WHITE).map_err(|e| anyhow::anyhow!("plot: {e}"))?;
        let title: String = title.chars().take(56).collect();
        text(&area, &title, 16, 10, 2, &RGBColor(0, 0, 0));
        let mut y = 40;
        for p in panels {
            draw_panel(&area, y, p);
            y += panel_height(p);
        }
        area.present().map_err(|e| anyhow::anyhow!("plot: {e}"))?;
    }
    encode_png(&buf, W, h)
}

/// RGB8 pixels → PNG bytes.
pub fn encode_png(rgb: &[u8], width: u32, height: u32) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header()?;
        w.write_image_data(rgb)?;
        w.finish()?;
    }
    Ok(out)
}

#[cfg(test)]
mod axis_tests {
    use super::*;

    #[test]
    fn axes_end_on_a_round_value_above_the_data() {
        let (lo, hi, ticks) = axis_from_zero([0.37, 0.12].into_iter());
        assert_eq!((lo, ticks.len()), (0.0, 5));
        assert!((hi - 0.4).abs() < 1e-12, "{hi}");
        let (_, hi, ticks) = axis_from_zero([7.3].into_iter());
        assert_eq!((hi, ticks.len()), (8.0, 5));
        assert_eq!(axis_from_zero(std::iter::empty()).1, 1.0);
        assert_eq!((tick_label(0.25), tick_label(2.0), tick_label(-0.0)), ("0.25".into(), "2".into(), "0".into()));
    }
}

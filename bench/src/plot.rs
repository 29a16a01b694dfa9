//! The PNG of `compare`: forwarding rate per system, and one-way latency
//! percentiles per system at each load.
//!
//! Shapes are drawn by plotters' bitmap backend into a pixel buffer; it is
//! built without its font features (they need system font packages), so
//! labels are drawn here from the 8x8 bitmap font of `font8x8` (ASCII),
//! and the png crate encodes the buffer.

use plotters::prelude::*;
use std::io::BufWriter;
use std::path::Path;

/// What the plot shows.
#[derive(Debug, Clone)]
pub struct PlotData {
    /// Title line (ASCII; other characters are drawn as '?').
    pub title: String,
    /// System names, in order.
    pub systems: Vec<String>,
    /// Per system: median rate and every run's, in Mpps.
    pub rates_mpps: Vec<(f64, Vec<f64>)>,
    /// Loads in % of the kernel's rate.
    pub loads: Vec<u32>,
    /// Per system, per load: p50, p90, p99, p99.9 in µs, if measured.
    pub latency_us: Vec<Vec<Option<[f64; 4]>>>,
}

const W: u32 = 1280;
const H: u32 = 600;
const COLORS: [RGBColor; 4] = [
    RGBColor(0x4c, 0x72, 0xb0),
    RGBColor(0xdd, 0x84, 0x52),
    RGBColor(0x55, 0xa8, 0x68),
    RGBColor(0xc4, 0x4e, 0x52),
];
const GREY: RGBColor = RGBColor(0xcc, 0xcc, 0xcc);
const INK: RGBColor = RGBColor(0x22, 0x22, 0x22);

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;
type DrawResult = Result<(), String>;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn rect(a: &Area, x0: i32, y0: i32, x1: i32, y1: i32, c: RGBColor) -> DrawResult {
    a.draw(&Rectangle::new([(x0, y0), (x1, y1)], c.filled()))
        .map_err(err)
}

/// Width of `s` in pixels at `scale`.
fn text_width(s: &str, scale: i32) -> i32 {
    s.chars().count() as i32 * 8 * scale
}

/// Draws `s` with its top-left corner at (x, y).
fn text(a: &Area, x: i32, y: i32, s: &str, scale: i32, c: RGBColor) -> DrawResult {
    for (i, ch) in s.chars().enumerate() {
        let glyph = font8x8::legacy::BASIC_LEGACY[if ch.is_ascii() {
            ch as usize
        } else {
            b'?' as usize
        }];
        let gx = x + i as i32 * 8 * scale;
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) != 0 {
                    let px = gx + col * scale;
                    let py = y + row as i32 * scale;
                    if scale == 1 {
                        a.draw_pixel((px, py), &c).map_err(err)?;
                    } else {
                        rect(a, px, py, px + scale - 1, py + scale - 1, c)?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// A round step for about five ticks up to `max`.
fn tick_step(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let m = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

fn num(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// A panel: axes with ticks in (x0, y0)-(x1, y1), values 0..top, or on a
/// log scale lo..top.
struct Panel {
    x0: i32,
    y0: i32,
    x1: i32,
    y1: i32,
    lo: f64,
    top: f64,
    log: bool,
}

impl Panel {
    fn new(
        a: &Area,
        (x0, y0, x1, y1): (i32, i32, i32, i32),
        (min, max): (f64, f64),
        log: bool,
        title: &str,
    ) -> Result<Panel, String> {
        text(a, x0 - 40, y0 - 28, title, 1, INK)?;
        let p = if log {
            let lo = 10f64.powf(min.max(1e-3).log10().floor());
            let top = 10f64.powf(max.max(lo * 10.0).log10().ceil());
            Panel {
                x0,
                y0,
                x1,
                y1,
                lo,
                top,
                log,
            }
        } else {
            let step = tick_step(max);
            let top = (max / step).ceil().max(1.0) * step;
            Panel {
                x0,
                y0,
                x1,
                y1,
                lo: 0.0,
                top,
                log,
            }
        };
        let mut ticks = Vec::new();
        if log {
            let mut v = p.lo;
            while v <= p.top * 1.001 {
                ticks.push(v);
                v *= 10.0;
            }
        } else {
            let step = tick_step(max);
            let mut v = 0.0;
            while v <= p.top + step / 2.0 {
                ticks.push(v);
                v += step;
            }
        }
        for v in ticks {
            let y = p.y(v);
            rect(a, x0, y, x1, y, GREY)?;
            let label = num(v);
            text(a, x0 - 6 - text_width(&label, 1), y - 4, &label, 1, INK)?;
        }
        rect(a, x0, y0, x0, y1, INK)?;
        rect(a, x0, y1, x1, y1, INK)?;
        Ok(p)
    }

    fn y(&self, v: f64) -> i32 {
        let f = if self.log {
            (v.max(self.lo).log10() - self.lo.log10()) / (self.top.log10() - self.lo.log10())
        } else {
            v / self.top
        };
        self.y1 - (f.clamp(0.0, 1.0) * (self.y1 - self.y0) as f64) as i32
    }
}

fn draw(a: &Area, d: &PlotData) -> DrawResult {
    a.fill(&WHITE).map_err(err)?;
    let scale = if text_width(&d.title, 2) <= W as i32 - 40 {
        2
    } else {
        1
    };
    text(a, 20, 14, &d.title, scale, INK)?;
    // Legend.
    let mut lx = 20;
    for (i, s) in d.systems.iter().enumerate() {
        rect(a, lx, 44, lx + 12, 56, COLORS[i % COLORS.len()])?;
        text(a, lx + 18, 46, s, 1, INK)?;
        lx += 18 + text_width(s, 1) + 30;
    }

    // Forwarding rate.
    let max = d
        .rates_mpps
        .iter()
        .flat_map(|(m, runs)| std::iter::once(*m).chain(runs.iter().copied()))
        .fold(0.0, f64::max);
    let p = Panel::new(
        a,
        (70, 110, 430, 540),
        (0.0, max),
        false,
        "forwarding rate, Mpps (median; dots: runs)",
    )?;
    let n = d.rates_mpps.len().max(1) as i32;
    let slot = (p.x1 - p.x0) / n;
    for (i, (m, runs)) in d.rates_mpps.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let x0 = p.x0 + i as i32 * slot + slot / 6;
        let x1 = p.x0 + (i as i32 + 1) * slot - slot / 6;
        rect(a, x0, p.y(*m), x1, p.y1 - 1, c)?;
        let label = num(*m);
        text(
            a,
            (x0 + x1 - text_width(&label, 1)) / 2,
            p.y(*m) - 12,
            &label,
            1,
            INK,
        )?;
        for r in runs {
            let y = p.y(*r);
            let xc = (x0 + x1) / 2;
            rect(a, xc - 2, y - 2, xc + 2, y + 2, INK)?;
        }
        let name = &d.systems[i];
        text(
            a,
            (x0 + x1 - text_width(name, 1)) / 2,
            p.y1 + 8,
            name,
            1,
            INK,
        )?;
    }

    // Latency, one panel per load.
    let loads = d.loads.len().max(1) as i32;
    let left = 470;
    let width = (W as i32 - left - 20) / loads;
    let names = ["p50", "p90", "p99", "p99.9"];
    for (li, load) in d.loads.iter().enumerate() {
        let values: Vec<f64> = d
            .latency_us
            .iter()
            .filter_map(|per_load| per_load.get(li).copied().flatten())
            .flat_map(|v| v.into_iter())
            .collect();
        let max = values.iter().copied().fold(0.0, f64::max);
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let x0 = left + li as i32 * width + 50;
        let p = Panel::new(
            a,
            (x0, 110, x0 + width - 70, 540),
            (if min.is_finite() { min } else { 1.0 }, max),
            true,
            &format!("latency at {load}% load, us (log)"),
        )?;
        let group = (p.x1 - p.x0) / names.len() as i32;
        let bar = (group - 10) / d.systems.len().max(1) as i32;
        for (k, name) in names.iter().enumerate() {
            let gx = p.x0 + k as i32 * group + 5;
            for (si, per_load) in d.latency_us.iter().enumerate() {
                if let Some(v) = per_load.get(li).copied().flatten() {
                    let bx = gx + si as i32 * bar;
                    rect(
                        a,
                        bx,
                        p.y(v[k]),
                        bx + bar - 2,
                        p.y1 - 1,
                        COLORS[si % COLORS.len()],
                    )?;
                }
            }
            text(
                a,
                gx + (group - 10 - text_width(name, 1)) / 2,
                p.y1 + 8,
                name,
                1,
                INK,
            )?;
        }
    }
    Ok(())
}

/// Draws `d` into a PNG file at `path`.
pub fn write_png(path: &Path, d: &PlotData) -> Result<(), String> {
    let mut buf = vec![0u8; (W * H * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (W, H)).into_drawing_area();
        draw(&root, d)?;
        root.present().map_err(err)?;
    }
    let file = std::fs::File::create(path).map_err(err)?;
    let mut enc = png::Encoder::new(BufWriter::new(file), W, H);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().map_err(err)?;
    w.write_image_data(&buf).map_err(err)?;
    w.finish().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        assert_eq!(tick_step(10.0), 2.0);
        assert_eq!(tick_step(0.9), 0.2);
        assert_eq!(tick_step(37.0), 10.0);
        assert_eq!(tick_step(0.0), 1.0);
    }

    #[test]
    fn writes_a_png_with_the_bars() {
        let d = PlotData {
            title: "test".into(),
            systems: vec!["kernel router".into(), "XDP forward".into(), "xdpip".into()],
            rates_mpps: vec![(0.3, vec![0.29, 0.31]), (1.2, vec![1.2]), (0.5, vec![0.5])],
            loads: vec![10, 50],
            latency_us: vec![
                vec![
                    Some([10.0, 20.0, 40.0, 80.0]),
                    Some([12.0, 25.0, 50.0, 90.0]),
                ],
                vec![Some([5.0, 8.0, 12.0, 20.0]), None],
                vec![Some([7.0, 9.0, 30.0, 60.0]), Some([9.0, 11.0, 35.0, 70.0])],
            ],
        };
        let dir = std::env::temp_dir().join(format!("xdpip-plot-{}.png", std::process::id()));
        write_png(&dir, &d).unwrap();
        let bytes = std::fs::read(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        // Decode it again: the XDP bar's colour is there.
        let dec = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut r = dec.read_info().unwrap();
        let mut px = vec![0; r.output_buffer_size().unwrap()];
        r.next_frame(&mut px).unwrap();
        let c = COLORS[1];
        assert!(px.chunks(3).any(|p| p == [c.0, c.1, c.2]));
    }
}

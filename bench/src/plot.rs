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

/// The image is at least this large; it grows when the legend or the bars
/// need more room.
const MIN_W: i32 = 1280;
const MIN_H: i32 = 600;
const MARGIN: i32 = 20;
/// Left edge of the rate panel's axis (its tick labels sit left of it).
const RATE_X0: i32 = 70;
/// Below this the 400-odd pixels of a panel would squeeze the log scale.
const MIN_PLOT_H: i32 = 400;
const LEGEND_Y: i32 = 44;
const LEGEND_ROW: i32 = 18;
/// One colour per system (seaborn's "deep" palette), shared by its legend
/// entry, its rate bar and its latency bars. Past ten systems colours
/// repeat; the rate bars stay apart by their key numbers.
const COLORS: [RGBColor; 10] = [
    RGBColor(0x4c, 0x72, 0xb0),
    RGBColor(0xdd, 0x84, 0x52),
    RGBColor(0x55, 0xa8, 0x68),
    RGBColor(0xc4, 0x4e, 0x52),
    RGBColor(0x81, 0x72, 0xb3),
    RGBColor(0x93, 0x78, 0x60),
    RGBColor(0xda, 0x8b, 0xc3),
    RGBColor(0x8c, 0x8c, 0x8c),
    RGBColor(0xcc, 0xb9, 0x74),
    RGBColor(0x64, 0xb5, 0xcd),
];
const PERCENTILES: [&str; 4] = ["p50", "p90", "p99", "p99.9"];
const GREY: RGBColor = RGBColor(0xcc, 0xcc, 0xcc);
const INK: RGBColor = RGBColor(0x22, 0x22, 0x22);

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;
type DrawResult = Result<(), String>;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Fills the rectangle with corners (x0, y0) and (x1, y1), both included.
fn rect(a: &Area, x0: i32, y0: i32, x1: i32, y1: i32, c: RGBColor) -> DrawResult {
    // The bitmap backend stops short of the bottom-right corner; without
    // the +1 a one-pixel line (axis, grid) would not be drawn at all.
    let (l, r) = (x0.min(x1), x0.max(x1) + 1);
    let (t, b) = (y0.min(y1), y0.max(y1) + 1);
    a.draw(&Rectangle::new([(l, t), (r, b)], c.filled()))
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

fn color(system: usize) -> RGBColor {
    COLORS[system % COLORS.len()]
}

/// Legend text of system `i`: its key number (the rate bars are labelled
/// with it, as full names do not fit under them) and its name.
fn legend_label(i: usize, name: &str) -> String {
    format!("{} {name}", i + 1)
}

fn latency_title(load: u32) -> String {
    format!("latency at {load}% load, us (log)")
}

/// Where things go; the image size follows from the data.
#[derive(Debug)]
struct Layout {
    w: i32,
    h: i32,
    title_scale: i32,
    /// Top-left corner of each system's legend entry.
    legend: Vec<(i32, i32)>,
    /// Top and bottom of every panel's plot area.
    top: i32,
    bottom: i32,
    rate_x1: i32,
    /// Left edge and width of the first latency panel's column.
    lat_left: i32,
    lat_width: i32,
}

impl Layout {
    fn new(d: &PlotData) -> Layout {
        // Each rate bar's slot holds its value label and its key number
        // with a gap, so neighbouring labels never touch.
        let label_w = d
            .rates_mpps
            .iter()
            .enumerate()
            .map(|(i, (m, _))| text_width(&num(*m), 1).max(text_width(&(i + 1).to_string(), 1)))
            .max()
            .unwrap_or(0);
        let n = d.rates_mpps.len().max(1) as i32;
        let rate_w = (n * (label_w + 6)).max(360);
        let rate_x1 = RATE_X0 + rate_w;
        // The latency tick labels reach 4 pixels left of this.
        let lat_left = rate_x1 + 30;
        // A latency panel's title starts 40 pixels left of its axis, 10
        // into its column: the column must hold it and a gap.
        let lat_min = d
            .loads
            .iter()
            .map(|l| text_width(&latency_title(*l), 1) + 16)
            .max()
            .unwrap_or(0);
        let loads = d.loads.len().max(1) as i32;
        let w = MIN_W.max(lat_left + loads * lat_min + MARGIN);
        let lat_width = (w - lat_left - MARGIN) / loads;

        // The legend wraps onto as many rows as it needs.
        let mut legend = Vec::with_capacity(d.systems.len());
        let (mut lx, mut ly) = (MARGIN, LEGEND_Y);
        for (i, s) in d.systems.iter().enumerate() {
            let entry = 18 + text_width(&legend_label(i, s), 1);
            if lx > MARGIN && lx + entry > w - MARGIN {
                lx = MARGIN;
                ly += LEGEND_ROW;
            }
            legend.push((lx, ly));
            lx += entry + 30;
        }
        // Panel titles sit 28 pixels above the plot area, the x labels
        // under it, so it starts a gap below the legend's last row.
        let top = ly + LEGEND_ROW + 48;
        let bottom = (top + MIN_PLOT_H).max(MIN_H - 60);
        let title_scale = if text_width(&d.title, 2) <= w - 2 * MARGIN {
            2
        } else {
            1
        };
        Layout {
            w,
            h: bottom + 60,
            title_scale,
            legend,
            top,
            bottom,
            rate_x1,
            lat_left,
            lat_width,
        }
    }
}

/// The y of the top of a rate bar's value label: above the bar and above
/// every run's dot (5 pixels high, centred on its value), so none is
/// overprinted.
fn value_label_y(p: &Panel, median: f64, runs: &[f64]) -> i32 {
    let clear = runs.iter().map(|r| p.y(*r) - 3).fold(p.y(median), i32::min);
    clear - 11
}

fn draw(a: &Area, d: &PlotData, l: &Layout) -> DrawResult {
    a.fill(&WHITE).map_err(err)?;
    text(a, MARGIN, 14, &d.title, l.title_scale, INK)?;
    for (i, (s, (lx, ly))) in d.systems.iter().zip(&l.legend).enumerate() {
        rect(a, *lx, *ly, lx + 12, ly + 12, color(i))?;
        text(a, lx + 18, ly + 2, &legend_label(i, s), 1, INK)?;
    }

    // Forwarding rate.
    let max = d
        .rates_mpps
        .iter()
        .flat_map(|(m, runs)| std::iter::once(*m).chain(runs.iter().copied()))
        .fold(0.0, f64::max);
    let p = Panel::new(
        a,
        (RATE_X0, l.top, l.rate_x1, l.bottom),
        (0.0, max),
        false,
        "forwarding rate, Mpps (median; dots: runs)",
    )?;
    let n = d.rates_mpps.len().max(1) as i32;
    let slot = (p.x1 - p.x0) / n;
    for (i, (m, runs)) in d.rates_mpps.iter().enumerate() {
        let x0 = p.x0 + i as i32 * slot + slot / 6;
        let x1 = p.x0 + (i as i32 + 1) * slot - slot / 6;
        let xc = (x0 + x1) / 2;
        rect(a, x0, p.y(*m), x1, p.y1 - 1, color(i))?;
        for r in runs {
            let y = p.y(*r);
            rect(a, xc - 2, y - 2, xc + 2, y + 2, INK)?;
        }
        let label = num(*m);
        let y = value_label_y(&p, *m, runs);
        text(a, xc - text_width(&label, 1) / 2, y, &label, 1, INK)?;
        let key = (i + 1).to_string();
        text(a, xc - text_width(&key, 1) / 2, p.y1 + 8, &key, 1, INK)?;
    }

    // Latency, one panel per load. Only systems with a latency run get a
    // bar slot, so the bars stay wide enough to see.
    let shown: Vec<usize> = (0..d.latency_us.len())
        .filter(|&si| d.latency_us[si].iter().any(Option::is_some))
        .collect();
    for (li, load) in d.loads.iter().enumerate() {
        let values: Vec<f64> = d
            .latency_us
            .iter()
            .filter_map(|per_load| per_load.get(li).copied().flatten())
            .flat_map(|v| v.into_iter())
            .collect();
        let max = values.iter().copied().fold(0.0, f64::max);
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let x0 = l.lat_left + li as i32 * l.lat_width + 50;
        let p = Panel::new(
            a,
            (x0, l.top, x0 + l.lat_width - 70, l.bottom),
            (if min.is_finite() { min } else { 1.0 }, max),
            true,
            &latency_title(*load),
        )?;
        let group = (p.x1 - p.x0) / PERCENTILES.len() as i32;
        let bar = (group - 10) / shown.len().max(1) as i32;
        for (k, name) in PERCENTILES.iter().enumerate() {
            let gx = p.x0 + k as i32 * group + 5;
            for (slot, &si) in shown.iter().enumerate() {
                if let Some(v) = d.latency_us[si].get(li).copied().flatten() {
                    let bx = gx + slot as i32 * bar;
                    rect(a, bx, p.y(v[k]), bx + bar - 2, p.y1 - 1, color(si))?;
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
    let l = Layout::new(d);
    let (w, h) = (l.w as u32, l.h as u32);
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        draw(&root, d, &l)?;
        root.present().map_err(err)?;
    }
    let file = std::fs::File::create(path).map_err(err)?;
    let mut enc = png::Encoder::new(BufWriter::new(file), w, h);
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

    /// Writes `d` and decodes it again: width, height and RGB pixels. With
    /// XDPIP_PLOT_PNG set the picture is kept there for a look.
    fn render(d: &PlotData, name: &str) -> (u32, u32, Vec<u8>) {
        let keep = std::env::var_os("XDPIP_PLOT_PNG").map(std::path::PathBuf::from);
        let path = keep.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("xdpip-plot-{name}-{}.png", std::process::id()))
        });
        write_png(&path, d).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        if keep.is_none() {
            std::fs::remove_file(&path).unwrap();
        }
        assert_eq!(&bytes[1..4], b"PNG");
        let dec = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut r = dec.read_info().unwrap();
        let mut px = vec![0; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut px).unwrap();
        (info.width, info.height, px)
    }

    fn has_color(px: &[u8], c: RGBColor) -> bool {
        px.chunks(3).any(|p| p == [c.0, c.1, c.2])
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
        let (w, h, px) = render(&d, "three");
        // Few systems keep the smallest image.
        assert_eq!((w, h), (MIN_W as u32, MIN_H as u32));
        // The XDP bar's colour is there.
        assert!(has_color(&px, COLORS[1]));
    }

    /// The systems of a real `compare` run (rounded): nine, long names, and
    /// latency for the first four only.
    fn nine_systems() -> PlotData {
        let names = [
            "kernel router",
            "XDP forward",
            "AF_XDP floor",
            "xdpip",
            "AF_XDP floor (split)",
            "xdpip (split)",
            "xdpip (no --cores) (default)",
            "xdpip --cores 0 (default)",
            "xdpip --cores 1 (default)",
        ];
        let rates = [
            (0.872, [0.914, 0.872, 0.8]),
            (1.699, [1.699, 1.451, 1.774]),
            (0.689, [0.696, 0.61, 0.689]),
            (0.654, [0.559, 0.656, 0.654]),
            (0.509, [0.413, 0.545, 0.509]),
            (0.549, [0.281, 0.616, 0.549]),
            (0.647, [0.489, 0.647, 0.654]),
            (0.334, [0.302, 0.357, 0.334]),
            (0.611, [0.633, 0.611, 0.609]),
        ];
        let latency = [
            [
                [27.9, 551.4, 2218.0, 4476.9],
                [55.4, 323.6, 3072.0, 7843.8],
                [61.0, 139.3, 937.5, 3985.4],
            ],
            [
                [23.8, 30.0, 277.0, 2396.2],
                [90.8, 683.5, 3905.5, 8343.6],
                [137.1, 534.0, 3928.1, 9945.1],
            ],
            [
                [53.1, 1821.7, 5263.4, 8921.1],
                [270.3, 794.1, 4122.6, 17186.8],
                [654.8, 887.3, 3070.0, 6328.3],
            ],
            [
                [170.1, 2605.1, 8814.6, 22183.9],
                [683.0, 3960.8, 11247.6, 14975.0],
                [750.1, 2422.8, 8130.6, 25395.2],
            ],
        ];
        PlotData {
            title: "xdpip-bench compare, 2026-12-02 06:20 UTC, 64-byte frames, \
                    Linux 6.18.44-fc-v1045"
                .into(),
            systems: names.iter().map(|s| s.to_string()).collect(),
            rates_mpps: rates.iter().map(|(m, r)| (*m, r.to_vec())).collect(),
            loads: vec![10, 50, 90],
            latency_us: (0..names.len())
                .map(|i| match latency.get(i) {
                    Some(per_load) => per_load.iter().copied().map(Some).collect(),
                    None => vec![None; 3],
                })
                .collect(),
        }
    }

    #[test]
    fn nine_systems_fit_and_stay_apart() {
        let d = nine_systems();
        let l = Layout::new(&d);
        // The legend wraps inside the image, and the plots start below it.
        for (i, (s, (x, y))) in d.systems.iter().zip(&l.legend).enumerate() {
            assert!(
                x + 18 + text_width(&legend_label(i, s), 1) <= l.w - MARGIN,
                "{s}"
            );
            assert!(y + LEGEND_ROW + 28 <= l.top, "{s}");
        }
        // Every rate bar's slot is wider than its value label.
        let slot = (l.rate_x1 - RATE_X0) / d.systems.len() as i32;
        assert!(d
            .rates_mpps
            .iter()
            .all(|(m, _)| text_width(&num(*m), 1) < slot));
        // Each system has a colour of its own, and it is drawn.
        let (w, h, px) = render(&d, "nine");
        assert_eq!((w as i32, h as i32), (l.w, l.h));
        for i in 0..d.systems.len() {
            assert!(COLORS[..i].iter().all(|c| *c != color(i)));
            assert!(has_color(&px, color(i)), "{}", d.systems[i]);
        }
    }

    #[test]
    fn value_labels_clear_the_dots() {
        let p = Panel {
            x0: 0,
            y0: 100,
            x1: 100,
            y1: 500,
            lo: 0.0,
            top: 2.0,
            log: false,
        };
        // A run above the median, as the kernel's 0.914 over 0.872.
        let y = value_label_y(&p, 0.872, &[0.914, 0.872, 0.8]);
        assert!(y + 8 < p.y(0.914) - 2);
        assert!(y + 8 < p.y(0.872));
    }
}

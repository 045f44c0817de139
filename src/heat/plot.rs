//! A PNG chart of a simulated day: room temperature, setpoint and outdoor temperature on the
//! left axis (°C), the radiator's electrical power on the right axis (W), hours along the
//! bottom, expensive periods of the grid shaded, and a legend.
//!
//! Drawn pixel by pixel with the `png` encoder and an 8×8 bitmap font, so the chart needs no
//! system fonts and looks the same on every machine. Only what the simulation needs: lines,
//! a filled area, axis ticks and text.

use std::path::Path;

use font8x8::legacy::{BASIC_LEGACY, LATIN_LEGACY};

use super::sim::Sample;
use super::HeatError;

type Rgb = [u8; 3];
/// A temperature series: colour, line width, dash length (0 = solid), value of a sample.
type Series = (Rgb, i64, usize, fn(&Sample) -> f64);

const WIDTH: usize = 1000;
const HEIGHT: usize = 600;
const LEFT: usize = 80;
const RIGHT: usize = WIDTH - 80;
const TOP: usize = 60;
const BOTTOM: usize = HEIGHT - 70;

const WHITE: Rgb = [255, 255, 255];
const BLACK: Rgb = [0, 0, 0];
const GRID: Rgb = [225, 225, 225];
const ROOM: Rgb = [200, 30, 30];
const SETPOINT: Rgb = [40, 40, 40];
const OUTDOOR: Rgb = [30, 90, 200];
const POWER: Rgb = [230, 130, 20];
const POWER_FILL: Rgb = [253, 232, 205];
/// Background of expensive (peak-price or high-carbon) periods.
const EXPENSIVE: Rgb = [236, 236, 250];
/// The power area inside an expensive period: the two fills blended, so the shading shows.
const POWER_FILL_EXPENSIVE: Rgb = [228, 208, 228];

struct Canvas {
    px: Vec<u8>,
}

impl Canvas {
    fn new() -> Canvas {
        Canvas {
            px: vec![255; WIDTH * HEIGHT * 3],
        }
    }

    fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if (0..WIDTH as i64).contains(&x) && (0..HEIGHT as i64).contains(&y) {
            let i = (y as usize * WIDTH + x as usize) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    fn fill(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: Rgb) {
        for y in y0.min(y1)..=y0.max(y1) {
            for x in x0.min(x1)..=x0.max(x1) {
                self.set(x, y, c);
            }
        }
    }

    /// A line `thick` pixels wide; `dash` > 0 draws `dash` pixels on, `dash` off.
    fn line(
        &mut self,
        (x0, y0): (f64, f64),
        (x1, y1): (f64, f64),
        c: Rgb,
        thick: i64,
        dash: usize,
    ) {
        let steps = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
        for i in 0..=steps {
            if dash > 0 && (i / dash) % 2 == 1 {
                continue;
            }
            let t = i as f64 / steps as f64;
            let x = (x0 + (x1 - x0) * t).round() as i64;
            let y = (y0 + (y1 - y0) * t).round() as i64;
            let lo = -(thick - 1) / 2;
            self.fill(x + lo, y + lo, x + lo + thick - 1, y + lo + thick - 1, c);
        }
    }

    fn glyph(ch: char) -> [u8; 8] {
        let code = ch as usize;
        if code < 128 {
            BASIC_LEGACY[code]
        } else if (0xA0..0x100).contains(&code) {
            LATIN_LEGACY[code - 0xA0]
        } else {
            BASIC_LEGACY[b'?' as usize]
        }
    }

    /// Text with its top-left corner at (x, y); returns the width drawn.
    fn text(&mut self, x: i64, y: i64, s: &str, c: Rgb, scale: i64) -> i64 {
        let mut cx = x;
        for ch in s.chars() {
            for (row, bits) in Canvas::glyph(ch).iter().enumerate() {
                for col in 0..8 {
                    // Bit 0 is the leftmost pixel.
                    if bits & (1 << col) != 0 {
                        let px = cx + col * scale;
                        let py = y + row as i64 * scale;
                        self.fill(px, py, px + scale - 1, py + scale - 1, c);
                    }
                }
            }
            cx += 8 * scale;
        }
        cx - x
    }

    fn text_width(s: &str, scale: i64) -> i64 {
        s.chars().count() as i64 * 8 * scale
    }
}

/// A "nice" tick step (1, 2 or 5 × 10ⁿ) giving about `target` ticks over `span`.
fn tick_step(span: f64, target: f64) -> f64 {
    let raw = (span / target).max(1e-9);
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// Renders the chart as PNG bytes.
pub fn render(samples: &[Sample], title: &str) -> Result<Vec<u8>, String> {
    if samples.is_empty() {
        return Err("nothing to plot".into());
    }
    let mut cv = Canvas::new();
    let hours = samples.last().map_or(1.0, |s| s.hours).max(1e-6);
    let temps = samples
        .iter()
        .flat_map(|s| [s.room_celsius, s.setpoint_celsius, s.outdoor_celsius]);
    let (tmin, tmax) = temps.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), t| {
        (lo.min(t), hi.max(t))
    });
    let t_step = tick_step(tmax - tmin + 2.0, 8.0);
    let tmin = ((tmin - 1.0) / t_step).floor() * t_step;
    let tmax = ((tmax + 1.0) / t_step).ceil() * t_step;
    let pmax_raw = samples
        .iter()
        .map(|s| s.power_watts)
        .fold(0.0, f64::max)
        .max(1.0);
    let p_step = tick_step(pmax_raw, 5.0);
    let pmax = (pmax_raw / p_step).ceil() * p_step;

    let (l, r, t, b) = (LEFT as f64, RIGHT as f64, TOP as f64, BOTTOM as f64);
    let x_of = |h: f64| l + (r - l) * h / hours;
    let y_temp = |c: f64| b - (b - t) * (c - tmin) / (tmax - tmin);
    let y_power = |w: f64| b - (b - t) * w / pmax;

    // Expensive periods shaded, then power as a filled area, behind everything else,
    // column by column.
    let any_expensive = samples.iter().any(|s| s.expensive);
    for x in LEFT..=RIGHT {
        let h = (x - LEFT) as f64 / (r - l) * hours;
        let i = samples.partition_point(|s| s.hours <= h).saturating_sub(1);
        if samples[i].expensive {
            cv.fill(x as i64, TOP as i64, x as i64, BOTTOM as i64, EXPENSIVE);
        }
        let y = y_power(samples[i].power_watts).round() as i64;
        let fill = if samples[i].expensive {
            POWER_FILL_EXPENSIVE
        } else {
            POWER_FILL
        };
        cv.fill(x as i64, y, x as i64, BOTTOM as i64, fill);
    }

    // Grid and temperature ticks (left).
    let mut c = tmin;
    while c <= tmax + 1e-9 {
        let y = y_temp(c).round() as i64;
        cv.line((l, y as f64), (r, y as f64), GRID, 1, 0);
        cv.line((l - 5.0, y as f64), (l, y as f64), BLACK, 1, 0);
        let label = format!("{c:.0}");
        let w = Canvas::text_width(&label, 1);
        cv.text(LEFT as i64 - 9 - w, y - 4, &label, BLACK, 1);
        c += t_step;
    }
    // Power ticks (right).
    let mut w = 0.0;
    while w <= pmax + 1e-9 {
        let y = y_power(w).round() as i64;
        cv.line((r, y as f64), (r + 5.0, y as f64), BLACK, 1, 0);
        cv.text(RIGHT as i64 + 9, y - 4, &format!("{w:.0}"), POWER, 1);
        w += p_step;
    }
    // Hour ticks (bottom).
    let h_step = if hours <= 48.0 {
        tick_step(hours, 8.0).max(1.0)
    } else {
        24.0
    };
    let mut h = 0.0;
    while h <= hours + 1e-9 {
        let x = x_of(h).round();
        cv.line((x, t), (x, b), GRID, 1, 0);
        cv.line((x, b), (x, b + 5.0), BLACK, 1, 0);
        let label = format!("{h:.0}");
        let lw = Canvas::text_width(&label, 1);
        cv.text(x as i64 - lw / 2, BOTTOM as i64 + 10, &label, BLACK, 1);
        h += h_step;
    }

    // Series.
    let series: [Series; 3] = [
        (OUTDOOR, 2, 0, |s| s.outdoor_celsius),
        (ROOM, 3, 0, |s| s.room_celsius),
        // Drawn last, dashed, so it shows on top of a room that holds it.
        (SETPOINT, 1, 6, |s| s.setpoint_celsius),
    ];
    for pair in samples.windows(2) {
        let (a, z) = (&pair[0], &pair[1]);
        cv.line(
            (x_of(a.hours), y_power(a.power_watts)),
            (x_of(z.hours), y_power(a.power_watts)),
            POWER,
            1,
            0,
        );
        cv.line(
            (x_of(z.hours), y_power(a.power_watts)),
            (x_of(z.hours), y_power(z.power_watts)),
            POWER,
            1,
            0,
        );
    }
    for (colour, thick, dash, value) in series {
        for pair in samples.windows(2) {
            let (a, z) = (&pair[0], &pair[1]);
            cv.line(
                (x_of(a.hours), y_temp(value(a))),
                (x_of(z.hours), y_temp(value(z))),
                colour,
                thick,
                dash,
            );
        }
    }

    // Frame, axis titles, title.
    cv.line((l, t), (l, b), BLACK, 1, 0);
    cv.line((r, t), (r, b), BLACK, 1, 0);
    cv.line((l, b), (r, b), BLACK, 1, 0);
    cv.line((l, t), (r, t), BLACK, 1, 0);
    cv.text(
        LEFT as i64 - 60,
        TOP as i64 - 18,
        "temperature (°C)",
        BLACK,
        1,
    );
    let pw = Canvas::text_width("power (W)", 1);
    cv.text(
        RIGHT as i64 + 60 - pw,
        TOP as i64 - 18,
        "power (W)",
        POWER,
        1,
    );
    let xl = "time (hours from midnight)";
    cv.text(
        (WIDTH as i64 - Canvas::text_width(xl, 1)) / 2,
        BOTTOM as i64 + 30,
        xl,
        BLACK,
        1,
    );
    let tw = Canvas::text_width(title, 2);
    cv.text((WIDTH as i64 - tw) / 2, 14, title, BLACK, 2);

    // Legend, top left inside the plot.
    let mut entries: Vec<(&str, Rgb)> = vec![
        ("room", ROOM),
        ("setpoint", SETPOINT),
        ("outdoor", OUTDOOR),
        ("compute power", POWER),
    ];
    if any_expensive {
        entries.push(("expensive period", EXPENSIVE));
    }
    let (lx, ly) = (LEFT as i64 + 12, TOP as i64 + 12);
    cv.fill(
        lx - 6,
        ly - 6,
        lx + 170,
        ly + entries.len() as i64 * 16 + 2,
        WHITE,
    );
    for (i, (name, colour)) in entries.iter().enumerate() {
        let y = ly + i as i64 * 16;
        let (y0, y1) = if *colour == EXPENSIVE {
            (y, y + 7)
        } else {
            (y + 2, y + 5)
        };
        cv.fill(lx, y0, lx + 20, y1, *colour);
        cv.text(lx + 28, y, name, BLACK, 1);
    }

    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, WIDTH as u32, HEIGHT as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(&cv.px).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Renders the chart and writes it to `path`.
pub fn write_png(samples: &[Sample], title: &str, path: &Path) -> Result<(), HeatError> {
    let plot = |reason: String| HeatError::Plot {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = render(samples, title).map_err(plot)?;
    std::fs::write(path, bytes).map_err(|e| plot(e.to_string()))
}

/// One bar: a label and stacked segments (value, colour, legend name).
pub struct Bar {
    pub label: String,
    pub segments: Vec<(f64, [u8; 3], &'static str)>,
}

/// One panel of bars sharing a vertical scale.
pub struct Panel {
    pub title: String,
    pub bars: Vec<Bar>,
}

/// A PNG of side-by-side panels of stacked bars, each bar's total written above it (for
/// `hearth impact --plot`).
pub fn render_bars(title: &str, panels: &[Panel]) -> Result<Vec<u8>, String> {
    if panels.is_empty() {
        return Err("nothing to plot".into());
    }
    let mut cv = Canvas::new();
    let tw = Canvas::text_width(title, 2);
    cv.text((WIDTH as i64 - tw) / 2, 14, title, BLACK, 2);
    let panel_w = (RIGHT - LEFT) as f64 / panels.len() as f64;
    let (t, b) = (TOP as f64 + 30.0, BOTTOM as f64);
    let mut legend: Vec<([u8; 3], &'static str)> = Vec::new();
    for (pi, panel) in panels.iter().enumerate() {
        let x0 = LEFT as f64 + pi as f64 * panel_w;
        let max = panel
            .bars
            .iter()
            .map(|bar| bar.segments.iter().map(|s| s.0.max(0.0)).sum::<f64>())
            .fold(0.0, f64::max)
            .max(1e-12);
        let pw = Canvas::text_width(&panel.title, 1);
        cv.text(
            (x0 + panel_w / 2.0) as i64 - pw / 2,
            TOP as i64,
            &panel.title,
            BLACK,
            1,
        );
        cv.line((x0 + 10.0, b), (x0 + panel_w - 10.0, b), BLACK, 1, 0);
        let n = panel.bars.len().max(1) as f64;
        let slot = (panel_w - 20.0) / n;
        for (bi, bar) in panel.bars.iter().enumerate() {
            let bx0 = x0 + 10.0 + bi as f64 * slot + slot * 0.2;
            let bx1 = bx0 + slot * 0.6;
            let mut y = b;
            let mut total = 0.0;
            for &(v, colour, name) in &bar.segments {
                let h = (b - t) * v.max(0.0) / max;
                cv.fill(bx0 as i64, (y - h) as i64, bx1 as i64, y as i64, colour);
                y -= h;
                total += v.max(0.0);
                if !legend.iter().any(|l| l.1 == name) {
                    legend.push((colour, name));
                }
            }
            let value = format!("{total:.3}");
            let vw = Canvas::text_width(&value, 1);
            let cx = ((bx0 + bx1) / 2.0) as i64;
            cv.text(cx - vw / 2, y as i64 - 12, &value, BLACK, 1);
            let lw = Canvas::text_width(&bar.label, 1);
            cv.text(cx - lw / 2, BOTTOM as i64 + 8, &bar.label, BLACK, 1);
        }
    }
    for (i, (colour, name)) in legend.iter().enumerate() {
        let x = LEFT as i64 + i as i64 * 220;
        let y = BOTTOM as i64 + 36;
        cv.fill(x, y, x + 20, y + 7, *colour);
        cv.text(x + 28, y, name, BLACK, 1);
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, WIDTH as u32, HEIGHT as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(&cv.px).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

//! What the benchmark prints, and the report it writes: per section (a durability
//! mode, the queries, ...) a markdown table of every row with p50/p99/p99.9, its
//! raw baseline and the ratio, the section's notes, and two SVG plots drawn with
//! plotters (throughput beside the baseline; latency percentiles).

use plotters::prelude::*;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

/// One measured workload: how many operations in how long, and each one's latency.
pub(crate) struct Measured {
    pub(crate) ops: usize,
    pub(crate) elapsed: Duration,
    pub(crate) latencies: Vec<Duration>,
}

impl Measured {
    pub(crate) fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    /// The latency at quantile `p` (0 to 1), zero without latencies.
    pub(crate) fn pct(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let mut l = self.latencies.clone();
        l.sort();
        l[((l.len() as f64 - 1.0) * p).round() as usize]
    }
}

/// A printed row as the report keeps it.
struct Row {
    name: String,
    rate: f64,
    /// p50, p99, p99.9 in milliseconds.
    latency_ms: [f64; 3],
    /// The raw baseline's row name and rate.
    baseline: Option<(String, f64)>,
    /// To find this row when a later row names it as its baseline.
    ops_elapsed: (usize, Duration),
}

#[derive(Default)]
struct Section {
    title: String,
    rows: Vec<Row>,
    notes: Vec<String>,
}

static SECTIONS: Mutex<Vec<Section>> = Mutex::new(Vec::new());

/// Starts a section: printed as `== title ==`.
pub(crate) fn section(title: &str) {
    println!("\n== {title} ==");
    SECTIONS.lock().unwrap().push(Section {
        title: title.to_string(),
        ..Default::default()
    });
}

fn with_section(f: impl FnOnce(&mut Section)) {
    let mut sections = SECTIONS.lock().unwrap();
    if sections.is_empty() {
        sections.push(Section::default());
    }
    f(sections.last_mut().expect("a section"));
}

/// Prints a row (ops/s, p50, p99, the ratio to `raw`) and records it.
pub(crate) fn row(name: &str, m: &Measured, raw: Option<&Measured>) {
    let ratio = raw
        .map(|r| format!("{:.2}x raw", m.rate() / r.rate()))
        .unwrap_or_default();
    let ms = |p| m.pct(p).as_secs_f64() * 1e3;
    println!(
        "  {name:<44} {:>9.0} ops/s  p50 {:>8.3} ms  p99 {:>8.3} ms  {ratio}",
        m.rate(),
        ms(0.50),
        ms(0.99),
    );
    with_section(|s| {
        let baseline = raw.map(|r| {
            let name = s
                .rows
                .iter()
                .rev()
                .find(|row| row.ops_elapsed == (r.ops, r.elapsed))
                .map_or_else(|| "raw".to_string(), |row| row.name.clone());
            (name, r.rate())
        });
        s.rows.push(Row {
            name: name.to_string(),
            rate: m.rate(),
            latency_ms: [ms(0.50), ms(0.99), ms(0.999)],
            baseline,
            ops_elapsed: (m.ops, m.elapsed),
        });
    });
}

/// Prints a line about the row above, under its figures, and keeps it as a note.
pub(crate) fn note(text: String) {
    println!("  {:<44} {text}", "");
    with_section(|s| {
        let text = match s.rows.last() {
            Some(row) => format!("{}: {text}", row.name),
            None => text,
        };
        s.notes.push(text)
    });
}

/// Prints a line of its own and keeps it as a note.
pub(crate) fn line(text: String) {
    println!("  {text}");
    with_section(|s| s.notes.push(text));
}

/// Writes `README.md` and each section's plots into `dir`.
pub(crate) fn write(dir: &Path, heading: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let sections = SECTIONS.lock().unwrap();
    let mut md = format!("# jetsource benchmark\n\n{heading}\n");
    for section in sections.iter() {
        md.push_str(&format!("\n## {}\n\n", section.title));
        if !section.rows.is_empty() {
            let slug: String = section
                .title
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect();
            let plots = [
                (format!("{slug}-throughput.svg"), Plot::Throughput),
                (format!("{slug}-latency.svg"), Plot::Latency),
            ];
            for (file, plot) in &plots {
                draw(&dir.join(file), section, *plot)
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
            }
            md.push_str(&table(&section.rows));
            md.push_str(&format!(
                "\n![throughput, {0}]({1})\n![latency, {0}]({2})\n",
                section.title, plots[0].0, plots[1].0
            ));
        }
        if !section.notes.is_empty() {
            md.push('\n');
            for note in &section.notes {
                md.push_str(&format!("- {}\n", note.trim()));
            }
        }
    }
    std::fs::write(dir.join("README.md"), md)
}

fn table(rows: &[Row]) -> String {
    let mut t = String::from(
        "| workload | ops/s | p50 ms | p99 ms | p99.9 ms | raw baseline | baseline ops/s | ratio |\n\
         |---|---:|---:|---:|---:|---|---:|---:|\n",
    );
    for row in rows {
        let [p50, p99, p999] = row.latency_ms;
        let (baseline, rate, ratio) = match &row.baseline {
            Some((name, rate)) => (
                name.clone(),
                format!("{rate:.0}"),
                format!("{:.2}x", row.rate / rate),
            ),
            None => Default::default(),
        };
        // Throughput-only rows (a catch-up, a pipelined publish) time no single operation.
        let latency = if p999 > 0.0 {
            format!("{p50:.3} | {p99:.3} | {p999:.3}")
        } else {
            "- | - | -".to_string()
        };
        t.push_str(&format!(
            "| {} | {:.0} | {latency} | {baseline} | {rate} | {ratio} |\n",
            row.name, row.rate
        ));
    }
    t
}

#[derive(Clone, Copy)]
enum Plot {
    /// Each row's ops/s, raw baselines in grey, with the ratio beside jetsource's.
    Throughput,
    /// Each row's p50, p99 and p99.9.
    Latency,
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// Units of the value axis per row: a row's band spans units 1 to 4 of its 5.
const ROW_UNITS: usize = 5;

/// Where row `i` of `n` sits, the first row at the top: its band's two edges and
/// the segment its label is centred on.
fn band_of(
    i: usize,
    n: usize,
) -> (
    SegmentValue<usize>,
    SegmentValue<usize>,
    SegmentValue<usize>,
) {
    let base = (n - 1 - i) * ROW_UNITS;
    (
        SegmentValue::Exact(base + 1),
        SegmentValue::Exact(base + 4),
        SegmentValue::CenterOf(base + 2),
    )
}

/// A horizontal chart with one band per row, on a log scale.
fn draw(path: &Path, section: &Section, plot: Plot) -> DrawResult {
    let rows = &section.rows;
    let n = rows.len();
    let height = 90 + 28 * n as u32;
    let root = SVGBackend::new(path, (1100, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let values: Vec<f64> = match plot {
        Plot::Throughput => rows.iter().map(|r| r.rate).collect(),
        Plot::Latency => rows.iter().flat_map(|r| r.latency_ms).collect(),
    };
    let positive = values.iter().copied().filter(|v| *v > 0.0);
    let low = positive.clone().fold(f64::INFINITY, f64::min).min(1.0) / 2.0;
    let high = positive.fold(1.0, f64::max) * 4.0;
    let (caption, unit) = match plot {
        Plot::Throughput => ("throughput (grey: raw baselines)", "ops/s (log)"),
        Plot::Latency => ("latency (blue p50, orange p99, red p99.9)", "ms (log)"),
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{caption}, {}", section.title), ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(360)
        .build_cartesian_2d((low..high).log_scale(), (0..n * ROW_UNITS).into_segmented())?;
    let label_of = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(k) if k % ROW_UNITS == 2 && k / ROW_UNITS < n => {
            rows[n - 1 - k / ROW_UNITS].name.clone()
        }
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n * ROW_UNITS)
        .y_label_formatter(&label_of)
        .x_desc(unit)
        .draw()?;
    let raw_grey = RGBColor(170, 170, 170);
    match plot {
        Plot::Throughput => {
            chart.draw_series(rows.iter().enumerate().map(|(i, r)| {
                let (bottom, top, _) = band_of(i, n);
                let color = if r.name.starts_with("raw") {
                    raw_grey
                } else {
                    BLUE
                };
                Rectangle::new([(low, bottom), (r.rate.max(low), top)], color.filled())
            }))?;
            chart.draw_series(rows.iter().enumerate().filter_map(|(i, r)| {
                let (_, raw) = r.baseline.as_ref()?;
                Some(Text::new(
                    format!("{:.0}/s, {:.2}x raw", r.rate, r.rate / raw),
                    (r.rate * 1.1, band_of(i, n).2),
                    ("sans-serif", 13),
                ))
            }))?;
        }
        Plot::Latency => {
            let colors = [BLUE, RGBColor(230, 140, 0), RED];
            for (k, color) in colors.into_iter().enumerate() {
                chart.draw_series(
                    rows.iter()
                        .enumerate()
                        .filter(|(_, r)| r.latency_ms[k] > 0.0)
                        .map(|(i, r)| {
                            Circle::new((r.latency_ms[k], band_of(i, n).2), 5, color.filled())
                        }),
                )?;
            }
        }
    }
    root.present()?;
    Ok(())
}

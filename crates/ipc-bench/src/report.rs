//! The results of a run and their three renderings: a Markdown table per
//! benchmark, the same numbers as JSON, and a hand-written SVG bar chart of
//! each contender's speed relative to the floor.

use std::fmt::Write as _;

use serde::Serialize;

use crate::bench::{Benchmark, Kind, Sample, Spread};
use crate::contenders::{comparisons, floor, python};
use crate::machine::Machine;

/// Everything a run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// `quick` or `normal`.
    pub mode: String,
    /// Rounds per benchmark (each round runs every contender once).
    pub rounds: usize,
    /// The wall time aimed at per measurement, in milliseconds.
    pub target_ms: f64,
    /// Where it ran.
    pub machine: Machine,
    /// The contenders that ran, with a line on each.
    pub contenders: Vec<ContenderInfo>,
    /// Versions, skipped contenders, failures.
    pub notes: Vec<String>,
    /// One entry per benchmark.
    pub benchmarks: Vec<BenchResult>,
}

/// A contender's name and what it is.
#[derive(Debug, Serialize)]
pub struct ContenderInfo {
    /// The name used in the tables.
    pub name: String,
    /// What it measures.
    pub about: String,
}

/// The results of one benchmark.
#[derive(Debug, Serialize)]
pub struct BenchResult {
    /// The stable identifier, such as `throughput-64KiB`.
    pub id: String,
    /// The benchmark.
    pub bench: Benchmark,
    /// One row per contender.
    pub rows: Vec<Row>,
    /// The ratios of the pairs of contenders `contenders::comparisons`
    /// names, where both ran.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub comparisons: Vec<Comparison>,
}

/// One contender's headline divided by another's, taken round by round
/// as the ratios to the floor are.
#[derive(Debug, Serialize)]
pub struct Comparison {
    /// The contender measured.
    pub contender: String,
    /// The contender it is divided by.
    pub against: String,
    /// The ratio's median, min and max over rounds.
    pub ratio: Spread,
}

/// One contender's results in one benchmark. The spreads are median, min
/// and max over rounds; the ratios are taken round by round against the
/// reference measured in the same round, then summarised the same way.
#[derive(Debug, Serialize)]
pub struct Row {
    /// The contender.
    pub contender: String,
    /// Round trips or messages per measurement (calibrated).
    pub count: usize,
    /// Ping-pong: median round trip, ns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_ns: Option<Spread>,
    /// Ping-pong: 99th percentile round trip, ns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_ns: Option<Spread>,
    /// Throughput: messages per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages_per_s: Option<Spread>,
    /// Throughput: payload GB (10^9 bytes) per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gb_per_s: Option<Spread>,
    /// Lock + unlock: nanoseconds per pair.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ns_per_op: Option<Spread>,
    /// The benchmark's headline (p50 for ping-pong and connect, ns per
    /// pair for lock + unlock, else messages, increments or passes per
    /// second) divided by the floor's.
    pub vs_floor: Option<Spread>,
    /// The same divided by Python's.
    pub vs_python: Option<Spread>,
    /// The wake-up ping-pong's awaiting contenders: the p50 minus the
    /// floor's, over the awaited wake-ups of a round trip
    /// ([`Benchmark::awaited_wakes_per_round_trip`]), in ns, taken round
    /// by round: what one awaited wake-up adds to a blocking one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra_ns_per_awaited_wake: Option<Spread>,
    /// Pool map of CPU-bound tasks: the time of one map call divided by
    /// the ideal one ([`Benchmark::ideal`]); lower is better, 1 at best.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_vs_ideal: Option<Spread>,
    /// Every measurement, by round (`null` where it failed).
    pub samples: Vec<Option<Sample>>,
}

impl BenchResult {
    /// Summarises `samples[contender][round]` of `bench`, `names` and
    /// `counts` being per contender.
    pub fn new(
        bench: Benchmark,
        names: &[&str],
        counts: &[usize],
        samples: Vec<Vec<Option<Sample>>>,
    ) -> BenchResult {
        let index = |name: &str| names.iter().position(|n| *n == name);
        let ratio = |row: &[Option<Sample>], base: Option<usize>| {
            let base = &samples[base?];
            let ratios: Vec<f64> = row
                .iter()
                .zip(base)
                .filter_map(|(s, b)| Some(bench.score(s.as_ref()?) / bench.score(b.as_ref()?)))
                .collect();
            (!ratios.is_empty()).then(|| Spread::of(ratios))
        };
        // Only the contenders that await: the floor blocks, and so does
        // Python, which has no awaitable semaphore.
        let per_awaited_wake = |name: &str, row: &[Option<Sample>]| {
            let wakes = bench.awaited_wakes_per_round_trip()?;
            if name == floor(&bench) || name == python(&bench) {
                return None;
            }
            let base = &samples[index(floor(&bench))?];
            let extra: Vec<f64> = row
                .iter()
                .zip(base)
                .filter_map(|(s, b)| {
                    Some((s.as_ref()?.headline() - b.as_ref()?.headline()) / f64::from(wakes))
                })
                .collect();
            (!extra.is_empty()).then(|| Spread::of(extra))
        };
        let rows = names
            .iter()
            .zip(counts)
            .zip(&samples)
            .map(|((name, &count), row)| {
                let headline = Some(Spread::of(row.iter().flatten().map(Sample::headline)));
                let secondary = Some(Spread::of(row.iter().flatten().map(Sample::secondary)));
                let score = Some(Spread::of(row.iter().flatten().map(|s| bench.score(s))));
                let latency = matches!(bench.kind, Kind::PingPong | Kind::Connect | Kind::Start);
                let vs_ideal = bench.ideal().map(|ideal| {
                    Spread::of(row.iter().flatten().map(|s| {
                        let maps = s.headline() / bench.size.max(1) as f64;
                        1.0 / maps / ideal.as_secs_f64()
                    }))
                });
                let per_op = bench.kind == Kind::LockUnlock;
                Row {
                    contender: (*name).to_owned(),
                    count,
                    p50_ns: headline.filter(|_| latency),
                    p99_ns: secondary.filter(|_| latency),
                    messages_per_s: headline.filter(|_| !latency && !per_op),
                    gb_per_s: secondary.filter(|_| !latency && !per_op),
                    ns_per_op: score.filter(|_| per_op),
                    vs_floor: ratio(row, index(floor(&bench))),
                    vs_python: ratio(row, index(python(&bench))),
                    extra_ns_per_awaited_wake: per_awaited_wake(name, row),
                    time_vs_ideal: vs_ideal.filter(|_| row.iter().any(Option::is_some)),
                    samples: row.clone(),
                }
            })
            .collect();
        let comparisons = comparisons(&bench)
            .iter()
            .filter_map(|&(contender, against)| {
                Some(Comparison {
                    contender: contender.to_owned(),
                    against: against.to_owned(),
                    ratio: ratio(&samples[index(contender)?], index(against))?,
                })
            })
            .collect();
        BenchResult {
            id: bench.id(),
            bench,
            rows,
            comparisons,
        }
    }
}

fn ns(v: f64) -> String {
    // A difference of latencies may be negative.
    if v < 0.0 {
        format!("-{}", ns(-v))
    } else if v < 1e3 {
        format!("{v:.0} ns")
    } else if v < 1e6 {
        format!("{:.1} µs", v / 1e3)
    } else {
        format!("{:.2} ms", v / 1e6)
    }
}

fn rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} M/s", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0} k/s", v / 1e3)
    } else {
        format!("{v:.0} /s")
    }
}

fn ratio(r: Option<Spread>) -> String {
    match r {
        Some(r) => format!("{:.2}× ({:.2}–{:.2})", r.median, r.min, r.max),
        None => "—".to_owned(),
    }
}

fn spread(s: Spread, unit: fn(f64) -> String) -> String {
    format!("{} – {}", unit(s.min), unit(s.max))
}

impl Report {
    /// The Markdown rendering: a header on the machine and the mode, then
    /// one table per benchmark.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let m = &self.machine;
        let _ = writeln!(md, "# ipc-bench results\n");
        let _ = writeln!(
            md,
            "- mode: **{}** ({} rounds, about {:.0} ms per measurement)",
            self.mode, self.rounds, self.target_ms
        );
        let _ = writeln!(
            md,
            "- machine: {} CPUs, {}, {}, load average {} at start",
            m.nproc, m.cpu, m.kernel, m.loadavg
        );
        let _ = writeln!(md, "- date: {}", m.date);
        for note in &self.notes {
            let _ = writeln!(md, "- {note}");
        }
        let _ = writeln!(
            md,
            "\nEach round runs every benchmark with every contender once (the order \
             of the contenders rotates each round). Values are the median over rounds with the min – max spread. \
             Ratios are taken round by round against the reference measured in the \
             same round: for ping-pong and connect, p50 divided by the reference's; \
             for lock + unlock, ns per pair divided by the reference's; for \
             process start, the p50 start latency divided by the reference's (lower \
             is better for these); for throughput, increments, write + read and pool \
             map, messages, increments, passes or tasks per second divided by the \
             reference's (higher is better). Each table names its floor and its \
             Python reference."
        );
        for b in &self.benchmarks {
            let _ = writeln!(md, "\n## {}\n", b.bench);
            let _ = writeln!(
                md,
                "`{}`; floor: `{}`; Python: `{}`.\n",
                b.id,
                floor(&b.bench),
                python(&b.bench)
            );
            match b.bench.kind {
                Kind::LockUnlock => {
                    let _ = writeln!(
                        md,
                        "| contender | ns per lock+unlock | spread | vs floor | vs Python | pairs |"
                    );
                    let _ = writeln!(md, "|---|--:|--:|--:|--:|--:|");
                    for r in &b.rows {
                        let t = r.ns_per_op.unwrap_or_default();
                        let _ = writeln!(
                            md,
                            "| {} | {:.1} ns | {:.1} – {:.1} ns | {} | {} | {} |",
                            r.contender,
                            t.median,
                            t.min,
                            t.max,
                            ratio(r.vs_floor),
                            ratio(r.vs_python),
                            r.count
                        );
                    }
                }
                Kind::Increments => {
                    let _ = writeln!(
                        md,
                        "| contender | increments/s (all processes) | spread | vs floor | vs Python | increments per process |"
                    );
                    let _ = writeln!(md, "|---|--:|--:|--:|--:|--:|");
                    for r in &b.rows {
                        let v = r.messages_per_s.unwrap_or_default();
                        let _ = writeln!(
                            md,
                            "| {} | {} | {} | {} | {} | {} |",
                            r.contender,
                            rate(v.median),
                            spread(v, rate),
                            ratio(r.vs_floor),
                            ratio(r.vs_python),
                            r.count
                        );
                    }
                }
                Kind::Bandwidth => {
                    let _ = writeln!(
                        md,
                        "| contender | GB/s (write + read) | GB/s spread | ms per pass | vs floor | vs Python | passes |"
                    );
                    let _ = writeln!(md, "|---|--:|--:|--:|--:|--:|--:|");
                    for r in &b.rows {
                        let (passes, gb) = (
                            r.messages_per_s.unwrap_or_default(),
                            r.gb_per_s.unwrap_or_default(),
                        );
                        let _ = writeln!(
                            md,
                            "| {} | {:.2} | {:.2} – {:.2} | {:.1} | {} | {} | {} |",
                            r.contender,
                            gb.median,
                            gb.min,
                            gb.max,
                            1e3 / passes.median,
                            ratio(r.vs_floor),
                            ratio(r.vs_python),
                            r.count
                        );
                    }
                }
                Kind::MapTrivial | Kind::MapBusy => {
                    let _ = writeln!(
                        md,
                        "| contender | time per map | spread | tasks/s | vs floor | vs Python | time vs ideal | maps |"
                    );
                    let _ = writeln!(md, "|---|--:|--:|--:|--:|--:|--:|--:|");
                    let per_map = |tasks_per_s: f64| b.bench.size as f64 / tasks_per_s * 1e9;
                    for r in &b.rows {
                        let v = r.messages_per_s.unwrap_or_default();
                        let _ = writeln!(
                            md,
                            "| {} | {} | {} – {} | {} | {} | {} | {} | {} |",
                            r.contender,
                            ns(per_map(v.median)),
                            ns(per_map(v.max)),
                            ns(per_map(v.min)),
                            rate(v.median),
                            ratio(r.vs_floor),
                            ratio(r.vs_python),
                            ratio(r.time_vs_ideal),
                            r.count
                        );
                    }
                    if let Some(ideal) = b.bench.ideal() {
                        let _ = writeln!(
                            md,
                            "\nIdeal: {} ({} tasks × {} ms of CPU / {} workers); time vs ideal is lower-is-better.",
                            ns(ideal.as_nanos() as f64),
                            b.bench.size,
                            crate::bench::BUSY.as_millis(),
                            crate::bench::POOL_WORKERS
                        );
                    }
                }
                Kind::PingPong | Kind::Connect | Kind::Start => {
                    let count = if b.bench.kind == Kind::Start {
                        "starts"
                    } else {
                        "round trips"
                    };
                    let _ = writeln!(
                        md,
                        "| contender | p50 | p50 spread | p99 | p99 spread | p50 vs floor | p50 vs Python | {count} |"
                    );
                    let _ = writeln!(md, "|---|--:|--:|--:|--:|--:|--:|--:|");
                    for r in &b.rows {
                        let (p50, p99) =
                            (r.p50_ns.unwrap_or_default(), r.p99_ns.unwrap_or_default());
                        let _ = writeln!(
                            md,
                            "| {} | {} | {} | {} | {} | {} | {} | {} |",
                            r.contender,
                            ns(p50.median),
                            spread(p50, ns),
                            ns(p99.median),
                            spread(p99, ns),
                            ratio(r.vs_floor),
                            ratio(r.vs_python),
                            r.count
                        );
                    }
                    if let Some(wakes) = b.bench.awaited_wakes_per_round_trip() {
                        let _ = writeln!(
                            md,
                            "\nA round trip wakes each process once: {wakes} awaited wake-ups \
                             for the contenders that await, none for the floor, whose \
                             threads block in a futex wait. What one awaited wake-up adds, \
                             (p50 − floor's p50) / {wakes}, round by round:\n"
                        );
                        for r in &b.rows {
                            if let Some(extra) = r.extra_ns_per_awaited_wake {
                                let _ = writeln!(
                                    md,
                                    "- {}: {} per awaited wake-up ({})",
                                    r.contender,
                                    ns(extra.median),
                                    spread(extra, ns)
                                );
                            }
                        }
                    }
                }
                Kind::Throughput => {
                    let _ = writeln!(
                        md,
                        "| contender | messages/s | GB/s | GB/s spread | vs floor | vs Python | messages |"
                    );
                    let _ = writeln!(md, "|---|--:|--:|--:|--:|--:|--:|");
                    for r in &b.rows {
                        let (msgs, gb) = (
                            r.messages_per_s.unwrap_or_default(),
                            r.gb_per_s.unwrap_or_default(),
                        );
                        let _ = writeln!(
                            md,
                            "| {} | {} | {:.2} | {:.2} – {:.2} | {} | {} | {} |",
                            r.contender,
                            rate(msgs.median),
                            gb.median,
                            gb.min,
                            gb.max,
                            ratio(r.vs_floor),
                            ratio(r.vs_python),
                            r.count
                        );
                    }
                }
            }
            if !b.comparisons.is_empty() {
                let how = if b.bench.lower_is_better() {
                    "p50 over p50, round by round; above 1 is slower"
                } else {
                    "messages per second over messages per second, round by round; \
                     below 1 is slower"
                };
                let _ = writeln!(md, "\nRatios within the table ({how}):\n");
                for c in &b.comparisons {
                    let _ = writeln!(
                        md,
                        "- {} vs {}: {}",
                        c.contender,
                        c.against,
                        ratio(Some(c.ratio))
                    );
                }
            }
        }
        let _ = writeln!(md, "\n## Contenders\n");
        for c in &self.contenders {
            let _ = writeln!(md, "- **{}**: {}", c.name, c.about);
        }
        md
    }

    /// The JSON rendering.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serialises")
    }

    /// A horizontal bar chart, one group per benchmark and one bar per
    /// contender, of the speed relative to the floor on a log scale
    /// (throughput ratio, or the inverse of the latency ratio, so longer
    /// is always faster and the floor is 1).
    pub fn svg(&self) -> String {
        let speed = |b: &BenchResult, r: &Row| {
            let v = r.vs_floor?.median;
            Some(if b.bench.lower_is_better() {
                1.0 / v
            } else {
                v
            })
            .filter(|v| v.is_finite() && *v > 0.0)
        };
        let values: Vec<f64> = self
            .benchmarks
            .iter()
            .flat_map(|b| b.rows.iter().filter_map(move |r| speed(b, r)))
            .collect();
        // A decade boundary below the slowest bar, with room to show it.
        let slowest = values.iter().copied().fold(1.0f64, f64::min).max(1e-3);
        let lo = (slowest * 0.8).log10().floor();
        let hi = values
            .iter()
            .copied()
            .fold(2.0f64, f64::max)
            .min(100.0)
            .log10();
        let names: Vec<&str> = self.contenders.iter().map(|c| c.name.as_str()).collect();
        let (left, plot, right) = (230.0, 560.0, 90.0);
        let (bar, gap, title) = (16.0, 4.0, 26.0);
        let x = |v: f64| left + plot * ((v.max(10f64.powf(lo)).log10() - lo) / (hi - lo));
        let rows: usize = self.benchmarks.iter().map(|b| b.rows.len()).sum();
        let height =
            60.0 + self.benchmarks.len() as f64 * (title + 8.0) + rows as f64 * (bar + gap);
        let width = left + plot + right;
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(
            svg,
            r#"<rect width="100%" height="100%" fill="white"/><text x="10" y="20" font-size="14" font-weight="bold">Speed relative to each benchmark's floor, log scale: longer is faster ({} mode, {})</text>"#,
            self.mode, self.machine.date
        );
        let top = 40.0;
        let mut decade = lo;
        while decade <= hi + 1e-9 {
            let v = 10f64.powf(decade);
            let gx = x(v);
            let _ = writeln!(
                svg,
                r##"<line x1="{gx:.1}" y1="{top}" x2="{gx:.1}" y2="{:.1}" stroke="#ddd"/><text x="{gx:.1}" y="{:.1}" text-anchor="middle" fill="#666">{}×</text>"##,
                height - 20.0,
                height - 6.0,
                trim(v)
            );
            decade += 1.0;
        }
        let fx = x(1.0);
        let _ = writeln!(
            svg,
            r##"<line x1="{fx:.1}" y1="{top}" x2="{fx:.1}" y2="{:.1}" stroke="#000" stroke-dasharray="4 3"/>"##,
            height - 20.0
        );
        let palette = [
            "#555555", "#1f77b4", "#6baed6", "#2ca02c", "#ff7f0e", "#9467bd", "#d62728", "#8c564b",
        ];
        let mut y = top;
        for b in &self.benchmarks {
            let _ = writeln!(
                svg,
                r#"<text x="10" y="{:.1}" font-weight="bold">{} (floor: {})</text>"#,
                y + 18.0,
                escape(&b.bench.to_string()),
                escape(floor(&b.bench))
            );
            y += title;
            for r in &b.rows {
                let colour = names
                    .iter()
                    .position(|n| *n == r.contender)
                    .map_or("#999", |i| palette[i % palette.len()]);
                let _ = writeln!(
                    svg,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                    left - 8.0,
                    y + bar - 4.0,
                    escape(&r.contender)
                );
                match speed(b, r) {
                    Some(v) => {
                        let w = (x(v) - left).max(1.0);
                        let _ = writeln!(
                            svg,
                            r#"<rect x="{left}" y="{y:.1}" width="{w:.1}" height="{bar}" fill="{colour}"/><text x="{:.1}" y="{:.1}">{v:.2}×</text>"#,
                            left + w + 4.0,
                            y + bar - 4.0
                        );
                    }
                    None => {
                        let _ = writeln!(
                            svg,
                            r##"<text x="{:.1}" y="{:.1}" fill="#999">no data</text>"##,
                            left + 4.0,
                            y + bar - 4.0
                        );
                    }
                }
                y += bar + gap;
            }
            y += 8.0;
        }
        svg.push_str("</svg>\n");
        svg
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::Via;

    fn latency(p50: f64) -> Option<Sample> {
        Some(Sample::Latency {
            p50_ns: p50,
            p99_ns: p50 * 2.0,
            round_trips: 100,
            elapsed_ns: p50 * 100.0,
        })
    }

    /// The Markdown of a quick report holding `result` alone.
    fn markdown_of(result: BenchResult, rounds: usize) -> String {
        Report {
            mode: "quick".into(),
            rounds,
            target_ms: 30.0,
            machine: Machine::detect(),
            contenders: vec![],
            notes: vec![],
            benchmarks: vec![result],
        }
        .markdown()
    }
    #[test]
    fn ratios_are_paired_by_round() {
        let bench = Benchmark {
            kind: Kind::PingPong,
            size: 8,
            via: Via::Pipe,
        };
        let names = [floor(&bench), "other"];
        let samples = vec![
            vec![latency(10.0), latency(20.0), latency(10.0)],
            vec![latency(11.0), latency(22.0), None],
        ];
        let result = BenchResult::new(bench, &names, &[100, 100], samples);
        let other = &result.rows[1];
        let vs = other.vs_floor.unwrap();
        assert!((vs.median - 1.1).abs() < 1e-9 && (vs.max - 1.1).abs() < 1e-9);
        assert!(other.vs_python.is_none());
        assert_eq!(other.p50_ns.unwrap().median, 16.5);
    }

    #[test]
    fn awaited_wakes_cost_half_the_round_trip_difference() {
        let bench = Benchmark {
            kind: Kind::PingPong,
            size: 0,
            via: Via::AsyncWake,
        };
        let names = [floor(&bench), python(&bench), "awaiting"];
        let samples = vec![
            vec![latency(10_000.0), latency(12_000.0)],
            vec![latency(50_000.0), latency(50_000.0)],
            vec![latency(12_000.0), latency(15_200.0)],
        ];
        let result = BenchResult::new(bench, &names, &[100; 3], samples);
        assert!(result.rows[0].extra_ns_per_awaited_wake.is_none());
        assert!(result.rows[1].extra_ns_per_awaited_wake.is_none());
        let extra = result.rows[2].extra_ns_per_awaited_wake.unwrap();
        assert_eq!(
            (extra.min, extra.median, extra.max),
            (1000.0, 1300.0, 1600.0)
        );
        let md = markdown_of(result, 2);
        assert!(
            md.contains("- awaiting: 1.3 µs per awaited wake-up (1.0 µs – 1.6 µs)"),
            "{md}"
        );
        let pipe = Benchmark {
            via: Via::Pipe,
            size: 8,
            ..bench
        };
        let result = BenchResult::new(pipe, &["other"], &[100], vec![vec![latency(1.0)]]);
        assert!(result.rows[0].extra_ns_per_awaited_wake.is_none());
    }

    #[test]
    fn named_pairs_are_compared_round_by_round() {
        use crate::contenders::pipe::{PICKLE, TYPED};
        let bench = Benchmark {
            kind: Kind::PingPong,
            size: 8,
            via: Via::Pipe,
        };
        let names = [floor(&bench), TYPED, PICKLE];
        let samples = vec![
            vec![latency(10.0), latency(10.0), latency(10.0)],
            vec![latency(20.0), latency(40.0), latency(20.0)],
            vec![latency(30.0), latency(40.0), latency(25.0)],
        ];
        let result = BenchResult::new(bench, &names, &[100; 3], samples);
        let [pickle] = &result.comparisons[..] else {
            panic!("{:?}", result.comparisons)
        };
        assert_eq!(
            (pickle.contender.as_str(), pickle.against.as_str()),
            (PICKLE, TYPED)
        );
        let r = pickle.ratio;
        assert_eq!((r.min, r.median, r.max), (1.0, 1.25, 1.5));
        let md = markdown_of(result, 3);
        assert!(
            md.contains("- ipc-pipe pickle vs ipc-pipe typed: 1.25× (1.00–1.50)"),
            "{md}"
        );
        // Without the pair's other half there is nothing to compare.
        let alone = BenchResult::new(bench, &[PICKLE], &[100], vec![vec![latency(1.0)]]);
        assert!(alone.comparisons.is_empty());
    }

    #[test]
    fn busy_maps_are_compared_with_the_ideal() {
        let bench = Benchmark {
            kind: Kind::MapBusy,
            size: 200,
            via: Via::Pool,
        };
        // One map call of 200 tasks in 550 ms: 1.1 times the ideal 500 ms.
        let map = Some(Sample::Throughput {
            messages: 200,
            size: 0,
            elapsed_ns: 550e6,
        });
        let result = BenchResult::new(bench, &["ipc-pool Pool"], &[1], vec![vec![map]]);
        let vs = result.rows[0].time_vs_ideal.unwrap();
        assert!((vs.median - 1.1).abs() < 1e-9, "{vs:?}");
        let trivial = Benchmark {
            kind: Kind::MapTrivial,
            ..bench
        };
        let result = BenchResult::new(trivial, &["ipc-pool Pool"], &[1], vec![vec![map]]);
        assert!(result.rows[0].time_vs_ideal.is_none());
    }

    #[test]
    fn renders_every_format() {
        let bench = Benchmark {
            kind: Kind::Throughput,
            size: 64,
            via: Via::Pipe,
        };
        let sample = |ns| {
            Some(Sample::Throughput {
                messages: 1000,
                size: 64,
                elapsed_ns: ns,
            })
        };
        let names = [floor(&bench), python(&bench), "a <new> one"];
        let samples = vec![vec![sample(1e6)], vec![sample(4e6)], vec![sample(2e6)]];
        let report = Report {
            mode: "quick".into(),
            rounds: 1,
            target_ms: 30.0,
            machine: Machine::detect(),
            contenders: names
                .iter()
                .map(|n| ContenderInfo {
                    name: (*n).into(),
                    about: String::new(),
                })
                .collect(),
            notes: vec![],
            benchmarks: vec![BenchResult::new(bench, &names, &[1000; 3], samples)],
        };
        let md = report.markdown();
        assert!(md.contains("| a <new> one | 500 k/s | 0.03 | 0.03 – 0.03 | 0.50× (0.50–0.50) | 2.00× (2.00–2.00) | 1000 |"), "{md}");
        let json: serde_json::Value = serde_json::from_str(&report.json()).unwrap();
        assert_eq!(json["benchmarks"][0]["rows"][2]["vs_python"]["median"], 2.0);
        let svg = report.svg();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("a &lt;new&gt; one") && svg.contains("0.50×"));
    }
}

//! `ipc-bench`: measures every mechanism of the workspace between two real
//! processes, against the raw OS floor, Python's `multiprocessing` (Pipe,
//! Listener / Client, shared memory and locks) and `ipc-channel`, in one
//! run with the contenders alternating round by round.
//!
//! ```text
//! cargo xtask bench [--quick]
//! cargo run --release -p ipc-bench [--features iceoryx2] -- [--quick] [--rounds N] [--only NAME,NAME]
//! ```
//!
//! The iceoryx2 contender (large items) is built with the `iceoryx2`
//! feature only, which `cargo xtask bench` turns on; a build without it
//! lists the contender and skips it.
//!
//! For each benchmark, each contender is first calibrated (which also warms
//! it up) so one measurement takes about 100 ms (30 ms with `--quick`);
//! then K rounds each run every benchmark with every contender once, the
//! order of the contenders rotating from round to round, so a load swing
//! on the machine hits every contender alike. Each benchmark has its own
//! floor and Python reference (see [`contenders::floor`]); a contender
//! runs only the benchmarks its registry entry says it runs. Ping-pong and
//! connect pin both processes to one CPU (see [`affinity`]); the queue
//! ping-pongs (blocking and async) and the wake-up ping-pong pin their two
//! processes to two different CPUs. Results go to `target/bench/` as
//! `results.md`, `results.json` and `chart.svg`; the Markdown is printed
//! at the end.
//!
//! Started as `ipc-bench --peer NAME ...`, the program is the peer process
//! of contender NAME (see [`contenders`]). Started by `ipc-core`'s spawn
//! (a child of the start benchmarks, a pool worker), it runs its entry in
//! `ipc_core::spawn::init()`, the first line of `main`, and exits there.
#![forbid(unsafe_code)]

mod affinity;
mod bench;
mod contenders;
mod machine;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bench::{Benchmark, Kind, Result, Sample};
use contenders::{Contender, Entry};
use report::{BenchResult, ContenderInfo, Report};

const USAGE: &str = "\
usage: ipc-bench [--quick] [--rounds N] [--only NAME[,NAME...]] [--bench ID[,ID...]]

  --quick        fewer rounds and shorter measurements (under a minute)
  --rounds N     rounds per benchmark (default 17, 7 with --quick); rounds stop
                 early rather than pass 270 s (50 s with --quick)
  --only NAMES   only the contenders whose names contain one of NAMES
                 (the floors and the Python contenders always run, as
                 references)
  --bench IDS    only the benchmarks whose ids (ping-pong-8B, throughput-64KiB,
                 unix-ping-pong-8B, tcp-throughput-1MiB, unix-connect,
                 shm-lock-unlock, shm-increments-2p, shm-write-read-64MiB,
                 queue-throughput-64B, queue2x2-throughput-4KiB,
                 queue-ping-pong-64B, async-ping-pong-8B,
                 async-queue-throughput-64B, async-queue-ping-pong-64B,
                 async-wake-ping-pong-0B, spawn-start, forkserver-start,
                 fork-start, pool-map-100k-trivial, pool-map-200x5ms,
                 pickle-dict-ping-pong, broker-throughput-64B,
                 broker-tcp-throughput-4KiB, broker4x4-throughput-64B,
                 ...) contain one of IDS
                 (pool-map-200x5ms runs at most 3 rounds with --quick, 9
                 without: one measurement is one map call of about 0.5 s)
  --out DIR      write the results there instead of target/bench/
  --no-pin       leave ping-pong unpinned (by default both processes are
                 pinned to one CPU; see affinity.rs)
  --list         list the contenders
";

/// How the run is set up.
struct Options {
    quick: bool,
    /// The whole run stops after the round that would pass this.
    budget: Duration,
    rounds: usize,
    target: Duration,
    only: Vec<String>,
    benches: Vec<String>,
    out: PathBuf,
    /// The CPU ping-pong runs on, if pinned.
    pin: Option<usize>,
}

impl Options {
    /// The CPU to pin `bench` to, if any.
    fn cpu(&self, bench: Benchmark) -> Option<usize> {
        // Two incrementing processes are pinned to two different CPUs: the
        // parent to this one, the other to `affinity::other_cpu` of it.
        // So are the two ends of the queue and wake-up ping-pongs (see
        // `contenders::peer_cpu`; a round trip is meant to be measured
        // while both processes have a core).
        let two = (bench.kind == Kind::Increments && bench.size == 2)
            || (bench.kind == Kind::PingPong
                && matches!(
                    bench.via,
                    bench::Via::Queue | bench::Via::AsyncQueue | bench::Via::AsyncWake
                ));
        self.pin
            .filter(|_| two || matches!(bench.kind, Kind::PingPong | Kind::Connect))
    }
}

fn main() -> ExitCode {
    // A spawned child (a start benchmark's, a pool worker) runs its entry
    // here and exits.
    ipc_core::spawn::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("--peer") => peer(&args[1..]),
        _ => match parse(&args) {
            Ok(Some(options)) => run(&options),
            Ok(None) => return ExitCode::SUCCESS,
            Err(e) => {
                eprint!("ipc-bench: {e}\n{USAGE}");
                return ExitCode::from(2);
            }
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ipc-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse(args: &[String]) -> Result<Option<Options>> {
    let mut quick = false;
    let mut rounds = None;
    let mut only = Vec::new();
    let mut benches = Vec::new();
    let mut out = output_dir();
    let mut pin = true;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--rounds" => {
                let n: usize = args.next().ok_or("--rounds needs a number")?.parse()?;
                rounds = Some(n.max(1));
            }
            "--only" => {
                let names = args.next().ok_or("--only needs names")?;
                only.extend(names.split(',').map(str::to_owned));
            }
            "--bench" => {
                let ids = args.next().ok_or("--bench needs benchmark ids")?;
                benches.extend(ids.split(',').map(str::to_owned));
            }
            "--out" => out = PathBuf::from(args.next().ok_or("--out needs a directory")?),
            "--no-pin" => pin = false,
            "--list" => {
                for entry in contenders::registry() {
                    println!("{:<30} {}", entry.name, entry.about);
                }
                return Ok(None);
            }
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(None);
            }
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    Ok(Some(Options {
        quick,
        rounds: rounds.unwrap_or(if quick { 7 } else { 17 }),
        target: Duration::from_millis(if quick { 30 } else { 100 }),
        budget: Duration::from_secs(if quick { 50 } else { 270 }),
        only,
        benches,
        out,
        pin: if pin { affinity::default_cpu() } else { None },
    }))
}

/// Runs the peer side of the contender named in `args[0]`.
fn peer(args: &[String]) -> Result {
    let name = args.first().ok_or("--peer needs a contender name")?;
    let entry = contenders::registry()
        .into_iter()
        .find(|e| e.name == name)
        .ok_or_else(|| format!("no contender `{name}`"))?;
    let peer = entry
        .peer
        .ok_or_else(|| format!("`{name}` has no peer process"))?;
    peer(&args[1..])
}

/// A contender that started, and whether it is still healthy.
struct Running {
    entry: Entry,
    contender: Box<dyn Contender>,
    failed: bool,
}

fn run(options: &Options) -> Result {
    let started = Instant::now();
    let machine = machine::Machine::detect();
    let mut notes = Vec::new();
    if !options.only.is_empty() {
        notes.push(format!(
            "contenders filtered: --only {}",
            options.only.join(",")
        ));
    }
    notes.push(match options.pin {
        Some(cpu) => format!(
            "ping-pong and connect: both processes pinned to CPU {cpu}; 2-process increments: \
             one process on CPU {cpu}, the other on CPU {other}; queue ping-pongs (blocking \
             and async) and wake-up ping-pong: the parent on CPU {cpu}, the echoing peer on \
             CPU {other}; everything else unpinned",
            other = affinity::other_cpu(cpu).map_or("(none)".to_owned(), |c| c.to_string())
        ),
        None => "nothing pinned (--no-pin)".to_owned(),
    });
    if !options.benches.is_empty() {
        notes.push(format!(
            "benchmarks filtered: --bench {}",
            options.benches.join(",")
        ));
    }
    let benches: Vec<Benchmark> = Benchmark::all()
        .into_iter()
        .filter(|b| {
            options.benches.is_empty()
                || options
                    .benches
                    .iter()
                    .any(|id| b.id().contains(id.as_str()))
        })
        .collect();
    let mut running = Vec::new();
    for entry in contenders::registry() {
        let wanted = options.only.is_empty()
            || contenders::is_reference(entry.name)
            || options.only.iter().any(|o| entry.name.contains(o.as_str()));
        // A contender that runs none of the benchmarks is not started.
        if !wanted || !benches.iter().any(|&b| (entry.runs)(b)) {
            continue;
        }
        match (entry.start)() {
            Ok(Some(contender)) => {
                if let Some(note) = contender.describe() {
                    notes.push(format!("{}: {note}", entry.name));
                }
                running.push(Running {
                    entry,
                    contender,
                    failed: false,
                });
            }
            Ok(None) => notes.push(format!("{}: not available here, skipped", entry.name)),
            Err(e) => {
                eprintln!("{}: cannot start: {e}", entry.name);
                notes.push(format!("{}: could not start ({e})", entry.name));
            }
        }
    }
    // The contenders (indices into `running`) of each benchmark, its
    // floor first, then in the order of the registry.
    let participants: Vec<Vec<usize>> = benches
        .iter()
        .map(|&b| {
            let mut them: Vec<usize> = (0..running.len())
                .filter(|&i| (running[i].entry.runs)(b))
                .collect();
            them.sort_by_key(|&i| running[i].entry.name != contenders::floor(&b));
            them
        })
        .collect();
    // counts[bench][participant]
    let mut counts = Vec::new();
    for (b, &bench) in benches.iter().enumerate() {
        eprintln!("== calibrating: {bench}");
        counts.push(
            participants[b]
                .iter()
                .map(|&i| {
                    let r = &mut running[i];
                    calibrate(r, bench, options, &mut notes)
                        .inspect(|n| eprintln!("   {:<30} {n} per measurement", r.entry.name))
                        .unwrap_or(0)
                })
                .collect::<Vec<usize>>(),
        );
    }
    // Every round runs every benchmark, so a burst of load from elsewhere
    // spoils a few rounds of each rather than every round of one.
    // samples[bench][participant][round]
    let mut samples: Vec<Vec<Vec<Option<Sample>>>> = participants
        .iter()
        .map(|p| vec![Vec::new(); p.len()])
        .collect();
    for bench in &benches {
        if let Some(max) = bench.max_rounds(options.quick) {
            if max < options.rounds {
                notes.push(format!("{}: at most {max} rounds", bench.id()));
            }
        }
    }
    let mut rounds = 0;
    while rounds < options.rounds {
        let round = rounds;
        let round_started = Instant::now();
        eprintln!("== round {} of {}", round + 1, options.rounds);
        for (b, &bench) in benches.iter().enumerate() {
            if bench
                .max_rounds(options.quick)
                .is_some_and(|max| round >= max)
            {
                continue;
            }
            let n = participants[b].len();
            for k in 0..n {
                let j = (k + round) % n;
                let i = participants[b][j];
                let cpu = options.cpu(bench);
                let sample = measure(&mut running[i], bench, counts[b][j], cpu, &mut notes);
                samples[b][j].push(sample);
            }
        }
        rounds += 1;
        // Stop early rather than overrun the time budget on a loaded machine.
        if rounds < options.rounds && started.elapsed() + round_started.elapsed() > options.budget {
            notes.push(format!(
                "stopped after {rounds} of {} rounds to stay within {} s",
                options.rounds,
                options.budget.as_secs()
            ));
            break;
        }
    }
    let results: Vec<BenchResult> = benches
        .iter()
        .zip(participants)
        .zip(counts)
        .zip(samples)
        .map(|(((&bench, participants), counts), samples)| {
            let names: Vec<&str> = participants
                .iter()
                .map(|&i| running[i].entry.name)
                .collect();
            BenchResult::new(bench, &names, &counts, samples)
        })
        .collect();
    let contenders = running
        .iter()
        .map(|r| ContenderInfo {
            name: r.entry.name.to_owned(),
            about: r.entry.about.to_owned(),
        })
        .collect();
    for r in running {
        let name = r.entry.name;
        if let Err(e) = r.contender.finish() {
            eprintln!("{name}: {e}");
            notes.push(format!("{name}: did not stop cleanly ({e})"));
        }
    }
    notes.push(format!(
        "whole run took {:.0} s; load average {} at the end",
        started.elapsed().as_secs_f64(),
        machine::Machine::detect().loadavg
    ));
    let report = Report {
        mode: if options.quick { "quick" } else { "normal" }.to_owned(),
        rounds,
        target_ms: options.target.as_secs_f64() * 1e3,
        machine,
        contenders,
        notes,
        benchmarks: results,
    };
    let dir = &options.out;
    std::fs::create_dir_all(dir)?;
    let markdown = report.markdown();
    std::fs::write(dir.join("results.md"), &markdown)?;
    std::fs::write(dir.join("results.json"), report.json())?;
    std::fs::write(dir.join("chart.svg"), report.svg())?;
    println!("{markdown}");
    eprintln!(
        "wrote {}/{{results.md,results.json,chart.svg}}",
        dir.display()
    );
    Ok(())
}

/// `target/bench/` of the workspace.
fn output_dir() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = manifest
        .parent()
        .and_then(|p| p.parent())
        .unwrap_or(&manifest);
    root.join("target").join("bench")
}

/// One measurement; a failure marks the contender failed for the rest of
/// the run.
fn measure(
    r: &mut Running,
    bench: Benchmark,
    count: usize,
    cpu: Option<usize>,
    notes: &mut Vec<String>,
) -> Option<Sample> {
    if r.failed || count == 0 {
        return None;
    }
    match r.contender.run(bench, count, cpu) {
        Ok(sample) => Some(sample),
        Err(e) => {
            fail(r, bench, e, notes);
            None
        }
    }
}

fn fail(r: &mut Running, bench: Benchmark, e: bench::Error, notes: &mut Vec<String>) {
    eprintln!("{}: {bench}: {e}", r.entry.name);
    notes.push(format!(
        "{}: failed in {bench} ({e}); no further measurements",
        r.entry.name
    ));
    r.failed = true;
}

/// Finds the count of round trips or messages that makes one measurement
/// take about `target`. Runs growing counts until one lasts a third of the
/// target, then one at the scaled count; the count comes from the fastest
/// rate seen in runs of at least an eighth of the target, since noise on a
/// shared machine only ever slows a run down (and a single slow run, such
/// as the first touch of a fresh 1 MiB buffer, must not set the count).
/// This warms both processes up too. Returns `None` if the contender
/// failed.
fn calibrate(
    r: &mut Running,
    bench: Benchmark,
    options: &Options,
    notes: &mut Vec<String>,
) -> Option<usize> {
    if r.failed {
        return None;
    }
    let (min, max) = match bench.kind {
        Kind::PingPong => (200, 2_000_000),
        Kind::Connect => (50, 200_000),
        Kind::Throughput => (8, 20_000_000),
        Kind::LockUnlock | Kind::Increments => (1000, 500_000_000),
        Kind::Bandwidth => (1, 1000),
        Kind::Start => (5, 5000),
        Kind::MapTrivial => (1, 1000),
        Kind::MapBusy => (1, 1),
    };
    // A fixed count: one run warms the contender up.
    if min == max {
        if let Err(e) = r.contender.run(bench, min, options.cpu(bench)) {
            fail(r, bench, e, notes);
            return None;
        }
        return Some(min);
    }
    let target = options.target.as_secs_f64();
    // The fastest time per round trip or message seen in a long enough run.
    let mut best = f64::INFINITY;
    let mut count = min;
    let mut long_runs = 0;
    while long_runs < 2 {
        let elapsed = match r.contender.run(bench, count, options.cpu(bench)) {
            Ok(sample) => sample.elapsed().as_secs_f64().max(1e-6),
            Err(e) => {
                fail(r, bench, e, notes);
                return None;
            }
        };
        if elapsed >= target / 8.0 || count >= max {
            best = best.min(elapsed / count as f64);
        }
        if elapsed >= target / 3.0 || count >= max {
            long_runs += 1;
            count = ((target / best) as usize).clamp(min, max);
        } else {
            let grow = (target / 2.0 / elapsed).clamp(2.0, 16.0);
            count = ((count as f64 * grow) as usize).min(max);
        }
    }
    Some(count)
}

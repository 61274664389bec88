//! The workspace's task runner: `cargo xtask test | demo | bench | fuzz | tidy`.
//!
//! It runs cargo (through `$CARGO`, the cargo that started it) and python3,
//! and stops at the first failing step with that step's exit status. The
//! one exception is `fuzz`, which runs `cargo +nightly fuzz` through the
//! rustup proxy (`$CARGO` is a toolchain's own cargo, which does not take
//! `+nightly`) and runs every target before it reports the ones that failed.

mod tidy;

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  test          format check, clippy (warnings denied), tidy, a stable
                build check of the fuzz targets, every test (unit,
                multi-process, Python interop), the doc tests, the docs
                (rustdoc warnings denied) and `cargo package` of the
                public crates
  demo          run each scenario of the original Python articles in Rust,
                across real processes, beside the Python original
  bench [--quick]
                measure every mechanism between two real processes against
                the raw OS floor, Python, ipc-channel and (large items)
                iceoryx2; writes target/bench/
  fuzz [--seconds N] [TARGET...]
                run each fuzz target in fuzz/ (all of them by default) for N
                seconds (default 60) with `cargo +nightly fuzz run`; installs
                cargo-fuzz if it is missing; crashes go to fuzz/artifacts/
  tidy          only the tidy checks (//! headers, SAFETY comments, no dbg!)
";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("demo") => demo(),
        Some("bench") => bench(&args[1..]),
        Some("fuzz") => fuzz(&args[1..]),
        Some("tidy") => tidy::check(&workspace_root()),
        _ => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

type Result<T = ()> = std::result::Result<T, String>;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut command = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

fn run(step: &str, mut command: Command) -> Result {
    eprintln!("==> {step}");
    let status = command
        .status()
        .map_err(|e| format!("{step}: cannot start: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{step} failed ({status})"))
    }
}

fn has_nextest() -> bool {
    cargo()
        .args(["nextest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn test() -> Result {
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    run("cargo fmt --check", fmt)?;
    let mut fmt = cargo();
    fmt.args(["fmt", "--manifest-path", FUZZ_MANIFEST, "--check"]);
    run("cargo fmt --check (fuzz)", fmt)?;

    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        // The optional ecosystems (tokio) too.
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]);
    run("cargo clippy", clippy)?;

    tidy::check(&workspace_root())?;

    // The fuzz targets live in a workspace of their own, which `cargo fuzz`
    // builds with nightly; linting them here, on stable, keeps them from
    // rotting. Without the `libfuzzer` feature (on by default, for cargo
    // fuzz) libFuzzer's C++ is not compiled: about 17 s from cold instead
    // of 30 on 2 cores, and under a second when nothing changed.
    let mut fuzz_targets = cargo();
    fuzz_targets.args([
        "clippy",
        "--manifest-path",
        FUZZ_MANIFEST,
        "--bins",
        "--no-default-features",
        "--",
        "-D",
        "warnings",
    ]);
    run("fuzz targets compile (clippy)", fuzz_targets)?;

    // nextest runs every test in a process of its own, which keeps tests
    // that fork sane (see ipc_core::process) and isolates crashes.
    let shm_before = shm_entries();
    let mut tests = cargo();
    if has_nextest() {
        tests.args([
            "nextest",
            "run",
            "--workspace",
            "--all-features",
            "--no-fail-fast",
        ]);
    } else {
        eprintln!("cargo-nextest not found; falling back to cargo test");
        tests.args([
            "test",
            "--workspace",
            "--all-features",
            "--lib",
            "--bins",
            "--tests",
            "--examples",
            "--no-fail-fast",
        ]);
    }
    run("tests", tests)?;

    let mut doc = cargo();
    doc.args(["test", "--workspace", "--all-features", "--doc"]);
    run("doc tests", doc)?;

    // Broken intra-doc links (a link to a private module, say) fail here
    // rather than in a user's `cargo doc`.
    let mut rustdoc = cargo();
    rustdoc
        .args([
            "doc",
            "--workspace",
            "--all-features",
            "--no-deps",
            "--exclude",
            "xtask",
        ])
        .env("RUSTDOCFLAGS", "-D warnings");
    run("cargo doc (warnings denied)", rustdoc)?;

    // The public crates must stay publishable together. Cargo treats the
    // crates it just packaged as registry crates of the same version and
    // does not rebuild them from changed sources in a target directory it
    // used before, so each check starts from an empty one.
    let package_target = workspace_root().join("target/package-check");
    let _ = std::fs::remove_dir_all(&package_target);
    forget_unpacked_packages();
    let mut package = cargo();
    package
        .args(["package", "--allow-dirty", "--target-dir"])
        .arg(&package_target);
    for krate in PUBLIC_CRATES {
        package.args(["-p", krate]);
    }
    run("cargo package (the public crates)", package)?;
    let _ = std::fs::remove_dir_all(&package_target);

    check_no_leftovers(&shm_before)
}

/// Removes the copies of our own packages that earlier `cargo package`
/// runs unpacked from their local registry (cargo keeps them under
/// `$CARGO_HOME/registry/src/-<hash>/`, keyed by the registry's path, and
/// would verify against a stale copy instead of unpacking the new one).
/// Only directories named after our packages, in registries whose source
/// directory name marks them local (a leading `-`), are touched.
fn forget_unpacked_packages() {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    let Some(sources) = cargo_home.map(|home| home.join("registry/src")) else {
        return;
    };
    let Ok(registries) = std::fs::read_dir(&sources) else {
        return;
    };
    for registry in registries.flatten() {
        if !registry.file_name().to_string_lossy().starts_with('-') {
            continue;
        }
        let Ok(packages) = std::fs::read_dir(registry.path()) else {
            continue;
        };
        for package in packages.flatten() {
            let name = package.file_name().to_string_lossy().into_owned();
            let ours = PUBLIC_CRATES.iter().any(|krate| {
                name.strip_prefix(krate)
                    .is_some_and(|v| v.starts_with("-0."))
            });
            if ours {
                let _ = std::fs::remove_dir_all(package.path());
            }
        }
    }
}

/// The packages published to crates.io.
const PUBLIC_CRATES: [&str; 7] = [
    "ipc-broker",
    "ipc-core",
    "ipc-pipe",
    "ipc-pool",
    "ipc-shm",
    "ipc-shm-queue",
    "ipc-socket",
];

/// The entries of `/dev/shm` with the prefixes our tests and Python's
/// auto-naming use (`ipct_`, `ipc_test_`, `psm_`).
fn shm_entries() -> std::collections::BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| {
                    ["ipct_", "ipc_test_", "psm_"]
                        .iter()
                        .any(|p| name.starts_with(p))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Tests must clean up after themselves: no segment of those prefixes may
/// appear in `/dev/shm` during the run and stay (entries that were there
/// before are someone else's).
fn check_no_leftovers(before: &std::collections::BTreeSet<String>) -> Result {
    let left: Vec<String> = shm_entries().difference(before).cloned().collect();
    if left.is_empty() {
        Ok(())
    } else {
        Err(format!("tests left these in /dev/shm: {}", left.join(", ")))
    }
}

/// Each scenario of the original articles: the Rust example that plays it
/// across real processes, and the Python program it mirrors
/// (`examples/python/<example>.py`).
const SCENARIOS: &[(&str, &str, &str)] = &[
    (
        "Pipe: a sender process and a receiver process",
        "ipc-pipe",
        "pipe",
    ),
    ("Pipe: a list through a pipe", "ipc-pipe", "pipe_list"),
    (
        "Queue: a producer process and a consumer process",
        "ipc-shm-queue",
        "queue",
    ),
    (
        "Queue: large frames written and read where they lie in the ring",
        "ipc-shm-queue",
        "large_frames",
    ),
    (
        "Shared memory: a Value and an Array updated by a child",
        "ipc-shm",
        "value_array",
    ),
    (
        "Socket: an echo server process and a client process",
        "ipc-socket",
        "socket_echo",
    ),
    ("Pool: four workers square 0 to 9", "ipc-pool", "pool"),
    (
        "Async: a tokio server hands its clients' requests to a Pool",
        "ipc-pool",
        "tokio_server",
    ),
];

fn demo() -> Result {
    let mut build = cargo();
    build.args(["build", "--quiet", "--examples", "--workspace"]);
    run("build the examples", build)?;
    for (title, package, example) in SCENARIOS {
        println!("\n=== {title} ===");
        let mut rust = cargo();
        rust.args(["run", "--quiet", "-p", package, "--example", example]);
        play(package, example, rust, example)?;
    }
    println!("\n=== Queue through Redis: the producer and the consumer open it by URL ===");
    match DemoRedis::start()? {
        None => println!("skipped: redis-server is not installed (apt-get install redis-server)"),
        Some(redis) => {
            let mut rust = cargo();
            rust.args([
                "run",
                "--quiet",
                "-p",
                "ipc-broker",
                "--example",
                "broker_queue",
                "--",
            ])
            .arg(redis.url());
            play("ipc-broker", "broker_queue", rust, "queue")?;
        }
    }
    Ok(())
}

/// Runs the Rust example `example` of `package` with `rust`, then its
/// Python original `examples/python/<python>.py`, and compares what they
/// print.
fn play(package: &str, example: &str, rust: Command, python: &str) -> Result {
    let rust_out = capture(rust)?;
    println!("Rust   ({package} --example {example}):");
    print_indented(&rust_out);
    let script = workspace_root()
        .join("examples")
        .join("python")
        .join(format!("{python}.py"));
    if let Some(python3) = python3().filter(|_| script.exists()) {
        let mut py = Command::new(python3);
        py.arg(&script);
        let py_out = capture(py)?;
        println!("Python (examples/python/{python}.py):");
        print_indented(&py_out);
        if comparable(&py_out) != comparable(&rust_out) {
            return Err(format!(
                "scenario `{example}`: Rust and Python print different things"
            ));
        }
        println!("same output");
    }
    Ok(())
}

/// A redis-server of the demo's own, on a Unix socket in a temporary
/// directory, without persistence; stopped by its pid and its directory
/// removed when dropped.
struct DemoRedis {
    child: std::process::Child,
    dir: PathBuf,
}

impl DemoRedis {
    /// The running server, or `None` where redis-server is not installed.
    fn start() -> Result<Option<DemoRedis>> {
        let dir = env::temp_dir().join(format!("ipc-demo-redis-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let socket = dir.join("redis.sock");
        let spawned = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(&socket)
            .arg("--dir")
            .arg(&dir)
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--logfile",
                "",
            ])
            .stdout(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(_) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Ok(None);
            }
        };
        let stdout = child.stdout.take().ok_or("redis-server's log")?;
        let redis = DemoRedis { child, dir };
        // Its log says when it accepts connections; the rest of the log is
        // read and dropped, so the server never blocks on a full pipe.
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
        let ready = lines.by_ref().map_while(|l| l.ok()).any(|line| {
            line.to_ascii_lowercase()
                .contains("ready to accept connections")
        });
        if !ready {
            return Err("redis-server exited before it was ready".into());
        }
        std::thread::spawn(move || lines.for_each(drop));
        Ok(Some(redis))
    }

    fn url(&self) -> String {
        format!("redis+unix://{}", self.dir.join("redis.sock").display())
    }
}

impl Drop for DemoRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Output reduced to what must agree between the Rust and Python runs:
/// lines in any order (separate processes print in either order), and the
/// client port of a `Connected by` line, which the kernel picks.
fn comparable(output: &str) -> Vec<String> {
    let mut lines: Vec<String> = output
        .lines()
        .map(|line| match line.strip_prefix("Connected by (") {
            Some(rest) => format!(
                "Connected by ({}, PORT)",
                rest.split(',').next().unwrap_or("")
            ),
            None => line.to_owned(),
        })
        .collect();
    lines.sort();
    lines
}

fn capture(mut command: Command) -> Result<String> {
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot start {command:?}: {e}"))?;
    if !output.status.success() {
        return Err(format!("{command:?} failed ({})", output.status));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn print_indented(text: &str) {
    for line in text.lines() {
        println!("    {line}");
    }
}

fn python3() -> Option<String> {
    let ok = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| "python3".to_owned())
}

/// The fuzz workspace's manifest, relative to the workspace root.
const FUZZ_MANIFEST: &str = "fuzz/Cargo.toml";

/// How long `cargo xtask fuzz` runs each target unless told otherwise.
const FUZZ_SECONDS: u64 = 60;

/// `cargo +nightly ...` through the rustup proxy on `PATH`, in the
/// workspace root. The variables that pin the cargo or toolchain that runs
/// xtask are removed, so the nightly one is used all the way down.
fn cargo_nightly() -> Command {
    let mut command = Command::new("cargo");
    command
        .arg("+nightly")
        .current_dir(workspace_root())
        .env_remove("CARGO")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC");
    command
}

fn succeeds(mut command: Command) -> bool {
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs every fuzz target (or those named) for `--seconds` each, one at a
/// time with one job, and fails at the end if any of them found a crash.
fn fuzz(args: &[String]) -> Result {
    let mut seconds = FUZZ_SECONDS;
    let mut chosen = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .ok_or("--seconds takes a positive whole number")?;
            }
            other if other.starts_with('-') => return Err(format!("fuzz: unknown option {other}")),
            target => chosen.push(target.to_owned()),
        }
    }

    let mut version = cargo_nightly();
    version.arg("--version");
    if !succeeds(version) {
        return Err(
            "fuzzing needs the nightly toolchain (rustup toolchain install nightly)".to_owned(),
        );
    }
    let mut has_fuzz = cargo_nightly();
    has_fuzz.args(["fuzz", "--version"]);
    if !succeeds(has_fuzz) {
        let mut install = cargo();
        install.args(["install", "cargo-fuzz"]);
        run("cargo install cargo-fuzz", install)?;
    }

    let mut list = cargo_nightly();
    list.args(["fuzz", "list"]);
    let targets: Vec<String> = capture(list)?.lines().map(str::to_owned).collect();
    if let Some(unknown) = chosen.iter().find(|t| !targets.contains(t)) {
        return Err(format!(
            "no fuzz target `{unknown}`; there are: {}",
            targets.join(", ")
        ));
    }
    let run_these = if chosen.is_empty() { targets } else { chosen };

    let mut failed = Vec::new();
    for target in &run_these {
        // Debug assertions turn on overflow checks: an overflow on bytes
        // from another process is a bug too. The timeout makes an input
        // that hangs a crash rather than a stall.
        let mut command = cargo_nightly();
        command.args(["fuzz", "run", "--debug-assertions", target, "--"]);
        command.arg(format!("-max_total_time={seconds}"));
        command.arg("-timeout=30");
        if run(&format!("fuzz {target} for {seconds} s"), command).is_err() {
            failed.push(target.as_str());
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "fuzzing found a crash in {} (see fuzz/artifacts/)",
            failed.join(", ")
        ))
    }
}

fn bench(args: &[String]) -> Result {
    let mut command = cargo();
    // The iceoryx2 contender is an optional feature of ipc-bench (a plain
    // build of ipc-bench leaves its crates out); measuring turns it on. It
    // needs no system package, only Rust 1.89 or later.
    command
        .args(["run", "--release", "--quiet", "-p", "ipc-bench"])
        .args(["--features", "iceoryx2", "--"])
        .args(args);
    run("benchmarks", command)
}

//! The workspace's task runner: `cargo xtask test | demo | bench | tidy`.
//!
//! It runs cargo (through `$CARGO`, the cargo that started it) and python3,
//! and stops at the first failing step with that step's exit status.

mod tidy;

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  test          format check, clippy (warnings denied), tidy, every test
                (unit, multi-process, Python interop) and the doc tests
  demo          run each scenario of the original Python articles in Rust,
                across real processes, beside the Python original
  bench [--quick]
                measure every mechanism between two real processes against
                the raw OS floor, Python and ipc-channel; writes target/bench/
  tidy          only the tidy checks (//! headers, SAFETY comments, no dbg!)
";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("demo") => demo(),
        Some("bench") => bench(&args[1..]),
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

    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    run("cargo clippy", clippy)?;

    tidy::check(&workspace_root())?;

    // nextest runs every test in a process of its own, which keeps tests
    // that fork sane (see ipc_core::process) and isolates crashes.
    let shm_before = shm_entries();
    let mut tests = cargo();
    if has_nextest() {
        tests.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
    } else {
        eprintln!("cargo-nextest not found; falling back to cargo test");
        tests.args([
            "test",
            "--workspace",
            "--lib",
            "--bins",
            "--tests",
            "--examples",
            "--no-fail-fast",
        ]);
    }
    run("tests", tests)?;

    let mut doc = cargo();
    doc.args(["test", "--workspace", "--doc"]);
    run("doc tests", doc)?;

    check_no_leftovers(&shm_before)
}

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
/// across real processes, and the Python program it mirrors.
const SCENARIOS: &[(&str, &str, &str)] = &[
    (
        "Pipe: a sender process and a receiver process",
        "ipc-pipe",
        "pipe",
    ),
    ("Pipe: a list through a pipe", "ipc-pipe", "pipe_list"),
    (
        "Queue: a producer process and a consumer process",
        "ipc-queue",
        "queue",
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
];

fn demo() -> Result {
    let root = workspace_root();
    let mut build = cargo();
    build.args(["build", "--quiet", "--examples", "--workspace"]);
    run("build the examples", build)?;
    for (title, package, example) in SCENARIOS {
        println!("\n=== {title} ===");
        let mut rust = cargo();
        rust.args(["run", "--quiet", "-p", package, "--example", example]);
        let rust_out = capture(rust)?;
        println!("Rust   ({package} --example {example}):");
        print_indented(&rust_out);
        let script = root
            .join("examples")
            .join("python")
            .join(format!("{example}.py"));
        if let Some(python) = python3().filter(|_| script.exists()) {
            let mut py = Command::new(python);
            py.arg(&script);
            let py_out = capture(py)?;
            println!("Python (examples/python/{example}.py):");
            print_indented(&py_out);
            if comparable(&py_out) == comparable(&rust_out) {
                println!("same output");
            } else {
                return Err(format!(
                    "scenario `{example}`: Rust and Python print different things"
                ));
            }
        }
    }
    Ok(())
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

fn bench(args: &[String]) -> Result {
    let mut command = cargo();
    command
        .args(["run", "--release", "--quiet", "-p", "ipc-bench", "--"])
        .args(args);
    run("benchmarks", command)
}

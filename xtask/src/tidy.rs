//! Tidy checks run as part of `cargo xtask test`: every Rust file opens with
//! a `//!` comment saying what it is for, every `unsafe` block or impl has a
//! `// SAFETY:` comment just above it, and no `dbg!` is left behind.

use std::fs;
use std::path::{Path, PathBuf};

pub fn check(root: &Path) -> Result<(), String> {
    eprintln!("==> tidy");
    let mut problems = Vec::new();
    for file in rust_files(root) {
        let text = fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let shown = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .display()
            .to_string();
        if !text.trim_start().starts_with("//!") {
            problems.push(format!(
                "{shown}: does not start with a //! comment saying what it is for"
            ));
        }
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains(&["dbg", "!("].concat()) {
                problems.push(format!("{shown}:{}: dbg! left in", i + 1));
            }
            // Patterns built from pieces, so this file does not match itself.
            let (block, imp) = (["unsafe", " {"].concat(), ["unsafe", " impl"].concat());
            let opens_unsafe = code.contains(&block) || code.trim_start().starts_with(&imp);
            if opens_unsafe && !has_safety_comment(&lines, i) {
                problems.push(format!(
                    "{shown}:{}: unsafe without a // SAFETY: comment above it",
                    i + 1
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "tidy found {} problem(s):\n  {}",
            problems.len(),
            problems.join("\n  ")
        ))
    }
}

/// Whether a `// SAFETY:` comment precedes line `i`, looking back over the
/// comment block and the statement the `unsafe` is part of.
fn has_safety_comment(lines: &[&str], i: usize) -> bool {
    if lines[i].contains("SAFETY:") {
        return true;
    }
    lines[..i]
        .iter()
        .rev()
        .take(12)
        .take_while(|l| !l.trim().is_empty())
        .any(|l| l.contains("// SAFETY:"))
}

fn rust_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if path.is_dir() {
                if !matches!(name.as_ref(), "target" | ".git") && !name.starts_with('.') {
                    stack.push(path);
                }
            } else if name.ends_with(".rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

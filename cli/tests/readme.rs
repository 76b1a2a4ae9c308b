//! The docs' `tollgate` sessions still hold: every ```console block of README.md and docs/*.md
//! that runs the CLI is replayed command by command (bash, in a temporary directory that sees the repository's
//! envoy/ files, with the built binary first on PATH), and each command's output (stdout and
//! stderr together) must be exactly the lines the README shows under it.

// Tests fail loudly: unwrap, expect, panic and indexing are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;
use support::*;

use std::path::Path;
use std::process::Command;

/// A command of a session and the output shown under it.
struct Step {
    command: String,
    output: String,
}

/// The ```console blocks of `markdown` in which some command runs `tollgate`.
fn sessions(markdown: &str) -> Vec<Vec<Step>> {
    let mut sessions = Vec::new();
    let mut block: Option<Vec<Step>> = None;
    for line in markdown.lines() {
        match (&mut block, line) {
            (None, "```console") => block = Some(Vec::new()),
            (Some(_), "```") => {
                let steps = block.take().unwrap();
                if steps.iter().any(|s| runs_tollgate(&s.command)) {
                    sessions.push(steps);
                }
            }
            (Some(steps), _) => match line.strip_prefix("$ ") {
                Some(command) => steps.push(Step {
                    command: command.to_string(),
                    output: String::new(),
                }),
                None => {
                    let step = steps.last_mut().expect("output before the first command");
                    step.output.push_str(line);
                    step.output.push('\n');
                }
            },
            (None, _) => {}
        }
    }
    sessions
}

/// `tollgate ...` as a command of its own, or after a pipe or `;`.
fn runs_tollgate(command: &str) -> bool {
    command
        .split(['|', ';', '&'])
        .any(|part| part.trim_start().starts_with("tollgate "))
}

fn run(dir: &Path, command: &str) -> String {
    let bin = Path::new(env!("CARGO_BIN_EXE_tollgate")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-c", &format!("exec 2>&1; {command}")])
        .current_dir(dir)
        .env("PATH", path)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// README.md and the pages of docs/, as (path, text), sorted by path.
fn docs() -> Vec<(String, String)> {
    let mut docs = vec![("README.md".to_string(), read_repo("README.md"))];
    for entry in std::fs::read_dir(repo().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            let name = format!("docs/{}", path.file_name().unwrap().to_string_lossy());
            let text = read_repo(&name);
            docs.push((name, text));
        }
    }
    docs.sort();
    docs
}

#[test]
fn the_documented_tollgate_sessions_give_the_documented_output() {
    let sessions: Vec<(String, Vec<Step>)> = docs()
        .into_iter()
        .flat_map(|(doc, text)| sessions(&text).into_iter().map(move |s| (doc.clone(), s)))
        .collect();
    let commands: usize = sessions.iter().map(|(_, steps)| steps.len()).sum();
    assert!(
        !sessions.is_empty() && commands >= 5,
        "no CLI session found in README.md or docs/*.md"
    );
    for (doc, steps) in sessions {
        let dir = TempDir::new();
        std::os::unix::fs::symlink(repo().join("envoy"), dir.0.join("envoy")).unwrap();
        for step in steps {
            let got = run(&dir.0, &step.command);
            assert_eq!(
                got, step.output,
                "{doc}: `$ {}` printed something else",
                step.command
            );
        }
    }
}

#[test]
fn the_session_parser_finds_commands_and_their_output() {
    let markdown = "```console\n$ curl x\nout\n```\n\n```console\n$ printf a | tollgate hash-key\n\
                    line 1\nline 2\n$ true\n```\n";
    let found = sessions(markdown);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0][0].command, "printf a | tollgate hash-key");
    assert_eq!(found[0][0].output, "line 1\nline 2\n");
    assert_eq!(found[0][1].output, "");
}

//! `tollgate`: the filter's own configuration compiler and decision code, on the command line.
//!
//! - `tollgate check FILE...`: is this configuration accepted, and what does it hold?
//! - `tollgate hash-key`: `sha256:<hex>` of each key on stdin, for a configuration without
//!   secrets.
//! - `tollgate explain FILE --key K [--at TIME]`: which consumer, plan, standing and limits a
//!   request with that key meets.
//!
//! Exit codes: 0 accepted / done, 1 a configuration (or the file holding it) was refused,
//! 2 wrong usage (clap's code for bad arguments).

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod environment;
mod exit;
mod explain;
mod locate;

use environment::Environment;
use exit::{REFUSED, USAGE};

const EXIT_CODES: &str = "Exit codes: 0 accepted (or done), 1 a configuration or its file was \
refused, 2 wrong usage.";

#[derive(Parser)]
#[command(
    name = "tollgate",
    version = tollgate::VERSION,
    about = "Check tollgate configurations, hash API keys, explain what a key gets",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check configurations exactly as the filter does when Envoy loads them.
    ///
    /// FILE is a plugin configuration (JSON), an Envoy configuration (YAML or JSON: bootstrap,
    /// LDS file) holding tollgate's Wasm filter, or an Istio WasmPlugin / Envoy Gateway
    /// EnvoyExtensionPolicy manifest. Every tollgate configuration found in a file is checked.
    #[command(after_help = EXIT_CODES)]
    Check {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Also check this entitlements document (what the control plane of `entitlements`
        /// serves) against each configuration, as the filter checks a pulled snapshot.
        #[arg(long, value_name = "DOCUMENT")]
        entitlements: Option<PathBuf>,
    },
    /// Print `sha256:<hex>` for each key read from stdin (one key per line).
    ///
    /// The output is what `consumers.<c>.keys` accepts instead of the plaintext key. The key
    /// is never printed; from a terminal it is read without echo.
    #[command(after_help = EXIT_CODES)]
    HashKey,
    /// Explain what a request with this key meets: consumer, plan, standing, limits, verdict.
    ///
    /// Counts are not in the file (each Envoy process keeps its own), so the verdict says
    /// what a fresh count gets; the usage endpoint tells a caller's actual counts.
    #[command(after_help = EXIT_CODES)]
    Explain {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The API key; `-` reads it from stdin (keeps it out of shell history).
        #[arg(
            long,
            value_name = "KEY",
            required_unless_present = "anonymous",
            conflicts_with = "anonymous"
        )]
        key: Option<String>,
        /// Explain a request without a credential instead (anonymous_plan or 401).
        #[arg(long)]
        anonymous: bool,
        /// The instant to explain, RFC 3339 (default: now).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        at: Option<i64>,
    },
}

fn parse_time(text: &str) -> Result<i64, String> {
    tollgate::time::parse_rfc3339(text)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check {
            files,
            entitlements,
        } => {
            let document = match entitlements.as_deref().map(std::fs::read).transpose() {
                Ok(document) => document,
                Err(e) => return usage(&format!("--entitlements: {e}")),
            };
            check(&files, document.as_deref())
        }
        Command::HashKey => hash_key(),
        Command::Explain {
            file,
            key,
            anonymous: _,
            at,
        } => {
            let key = match key.as_deref() {
                Some("-") => match read_keys() {
                    Ok(mut keys) if keys.len() == 1 => keys.pop(),
                    Ok(_) => return usage("--key -: stdin must hold exactly one key"),
                    Err(e) => return usage(&format!("--key -: {e}")),
                },
                Some(key) => Some(key.as_bytes().to_vec()),
                None => None,
            };
            let now = at.unwrap_or_else(now);
            explain::run(&file, key.as_deref(), now)
        }
    }
}

fn usage(message: &str) -> ExitCode {
    eprintln!("tollgate: {message}");
    ExitCode::from(USAGE)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `tollgate check`: every configuration in every file (with the entitlements document, if
/// one is given); 1 if any is refused. Secrets held in an accepted configuration (an inline
/// `authorization`, plaintext keys) are warned about on stderr, and variables of
/// `authorization_env` that could not be checked here are noted.
fn check(files: &[PathBuf], document: Option<&[u8]>) -> ExitCode {
    let mut refused = false;
    let env = Environment::default();
    for file in files {
        let name = file.display();
        let found = match locate::read(file) {
            Ok(found) => found,
            Err(e) => {
                eprintln!("{name}: {e}");
                refused = true;
                continue;
            }
        };
        for config in found {
            let heading = config.heading(&name.to_string());
            let compiled = match (document, &config.text) {
                (Some(document), Ok(text)) => {
                    tollgate::config::Config::with_snapshot_in(text.as_bytes(), document, &|name| {
                        env.var(name)
                    })
                    .map_err(|e| {
                        tollgate::config::ConfigError(format!("entitlements document: {e}"))
                    })
                }
                _ => config.compile(&env),
            };
            let notes = env.notes();
            match compiled {
                Ok(compiled) => {
                    println!("{heading}: accepted\n  {}", compiled.summary());
                    for note in notes {
                        println!("  {note}");
                    }
                    let text = config.text.as_deref().unwrap_or_default();
                    for warning in tollgate::config::warnings(text.as_bytes()) {
                        eprintln!("{heading}: warning: {warning}");
                    }
                }
                Err(e) => {
                    refused = true;
                    eprintln!("{heading}: configuration refused: {e}");
                    if let Some((line, column)) = config.syntax_error_position() {
                        eprintln!("  (in {name}: line {line}, column {column})");
                    }
                }
            }
        }
    }
    if refused {
        ExitCode::from(REFUSED)
    } else {
        ExitCode::SUCCESS
    }
}

/// `tollgate hash-key`: one `sha256:<hex>` line per key on stdin.
fn hash_key() -> ExitCode {
    let keys = match read_keys() {
        Ok(keys) if keys.is_empty() => return usage("hash-key: no key on stdin"),
        Ok(keys) => keys,
        Err(e) => return usage(&format!("hash-key: {e}")),
    };
    let mut out = std::io::stdout().lock();
    for key in keys {
        let digest = tollgate::sha256::to_hex(&tollgate::sha256::sha256(&key));
        if writeln!(out, "sha256:{digest}").is_err() {
            return ExitCode::from(REFUSED);
        }
    }
    ExitCode::SUCCESS
}

/// Keys from stdin, one per line (a final line ending, `\n` or `\r\n`, is not part of a key).
/// From a terminal: one key, read without echo.
fn read_keys() -> Result<Vec<Vec<u8>>, String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("API key (not shown): ");
        let _ = std::io::stderr().flush();
        let key = rpassword::read_password().map_err(|e| format!("cannot read the key: {e}"))?;
        if key.is_empty() {
            return Err("the key is empty".into());
        }
        return Ok(vec![key.into_bytes()]);
    }
    let mut bytes = Vec::new();
    stdin
        .lock()
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read stdin: {e}"))?;
    let mut keys = Vec::new();
    for (i, line) in bytes.split_inclusive(|b| *b == b'\n').enumerate() {
        let key = line
            .strip_suffix(b"\n")
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .unwrap_or(line);
        if key.is_empty() {
            return Err(format!("line {} is empty: a key cannot be empty", i + 1));
        }
        keys.push(key.to_vec());
    }
    Ok(keys)
}

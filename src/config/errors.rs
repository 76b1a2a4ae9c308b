//! Configuration errors in a user's words: the field path, line and column with a caret for
//! syntax errors, and never a key (values are redacted).

use std::fmt;

/// A configuration error: one line, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Turns a serde_json error at `path` (serde_path_to_error's form, `.` for the top level)
/// into one line in a user's words.
///
/// - Syntax errors (malformed JSON) keep serde_json's line and column — counted in the plugin
///   configuration text, which the message says — and show the offending line with a caret.
/// - Type errors (a string where a number belongs, an unknown field) start with the field path
///   and say what was expected and what was found, without Rust type names (`u64`).
///
/// The configuration holds API keys, so neither form may show a string value: serde's quoted
/// values are replaced by `"…"`, backquoted names are kept only when they look like field
/// names (lowercase letters and `_`), numbers or JSON punctuation, and string values in the
/// excerpt become `*`s (object member names are kept: they say where the error is).
pub(super) fn json_error(
    bytes: &[u8],
    path: Option<&serde_path_to_error::Path>,
    e: &serde_json::Error,
) -> ConfigError {
    let (line, column) = (e.line(), e.column());
    let full = e.to_string();
    let position = format!(" at line {line} column {column}");
    let bare = full.strip_suffix(&position).unwrap_or(&full);
    let message = redact_message(bare);
    // An unknown field is the last segment of its path: leave it out, the message names it
    // (redacted if it does not look like a field name: it could be a misplaced key).
    let drop_last = message.starts_with("unknown field");
    let path = path
        .map(|p| field_path(p, drop_last))
        .filter(|p| !p.is_empty());
    let syntax = matches!(
        e.classify(),
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof
    );
    // serde_json reports some type errors (a number or null where a word like "shadow"
    // belongs) as "expected value" at a character that does start a JSON value: say what it is.
    // (Cheaper in the .wasm than parsing the text again to see that it is valid JSON.)
    let at = line
        .checked_sub(1)
        .and_then(|l| bytes.split(|b| *b == b'\n').nth(l))
        .and_then(|l| l.get(column.checked_sub(1)?));
    let wrong_type = syntax
        && bare == "expected value"
        && matches!(at, Some(b'-' | b'0'..=b'9' | b'n' | b't' | b'f' | b'['));
    if !syntax || wrong_type {
        let words = if wrong_type {
            "this value has the wrong type (see the configuration reference)".to_string()
        } else {
            user_words(&message)
        };
        return ConfigError(match path {
            Some(path) => format!("{path}: {words}"),
            None => words,
        });
    }
    let mut out = format!(
        "invalid JSON at line {line} column {column} of the plugin configuration: {message}"
    );
    if let Some(path) = path {
        out.push_str(&format!(" (in {path})"));
    }
    if line == 0 {
        return ConfigError(out);
    }
    let text = String::from_utf8_lossy(bytes);
    if let Some(source_line) = text.lines().nth(line - 1) {
        // Show at most 60 characters around the column so one-line configs stay readable.
        let chars: Vec<char> = redact_values(source_line).chars().collect();
        let start = column.saturating_sub(40);
        let end = (column + 20).min(chars.len());
        let excerpt: String = chars.get(start..end).unwrap_or_default().iter().collect();
        let caret = column.saturating_sub(start).saturating_sub(1);
        out.push_str(&format!(" | {excerpt} | {}^", " ".repeat(caret)));
    }
    ConfigError(out)
}

/// `plans.free.limits[0].requests`: map keys joined by dots, list indexes in brackets.
pub(super) fn field_path(path: &serde_path_to_error::Path, drop_last: bool) -> String {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    let keep = segments.len() - usize::from(drop_last && !segments.is_empty());
    let mut out = String::new();
    for segment in segments.iter().take(keep) {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key: name } | Segment::Enum { variant: name } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(name);
            }
            Segment::Unknown => {}
        }
    }
    out
}

/// Rewrites serde's `invalid type: X, expected Y` and `invalid value: X, expected Y` (already
/// redacted) as `expected Y, found X` in words a user knows; other messages (unknown field,
/// unknown variant, missing field, tollgate's own) are kept as they are.
pub(super) fn user_words(message: &str) -> String {
    if message.starts_with("invalid length") && message.contains("expected struct") {
        return "expected an object {...}, found a list".to_string();
    }
    let rest = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "));
    let Some((found, expected)) = rest.and_then(|r| r.split_once(", expected ")) else {
        return message.to_string();
    };
    let whole_number = matches!(expected, "u64" | "u32" | "u16" | "u8" | "i64" | "usize");
    let expected = match expected {
        "u64" | "u32" | "i64" | "usize" => "a whole number",
        "u16" => "a whole number up to 65535",
        "u8" => "a whole number up to 255",
        "a boolean" => "true or false",
        "a sequence" => "a list [...]",
        "a map" | "an object" => "an object {...}",
        other if other.starts_with("struct ") => "an object {...}",
        other if other.starts_with("enum ") => "an object with one member",
        other => other,
    };
    let found = if found.starts_with("string ") {
        "a string"
    } else if found == "sequence" {
        "a list"
    } else if found == "map" {
        "an object"
    } else if found == "unit value" || found == "null" {
        "null"
    } else if let Some(value) = ["integer ", "floating point ", "boolean "]
        .iter()
        .find_map(|kind| found.strip_prefix(kind))
    {
        value.trim_matches('`')
    } else {
        found
    };
    let hint = match (found, expected) {
        ("a string", "true or false") => " (write true or false without quotes)",
        ("a string", _) if whole_number => " (write numbers without quotes)",
        _ => "",
    };
    format!("expected {expected}, found {found}{hint}")
}

/// Redacts values quoted in a serde error message (see [`json_error`]).
pub(super) fn redact_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(open) = rest.find(['"', '`']) {
        let (before, after) = rest.split_at(open);
        out.push_str(before);
        let quote = after.chars().next().unwrap_or('"');
        let inner = &after[1..];
        let Some(close) = inner.find(quote) else {
            out.push(quote);
            out.push('…');
            return out;
        };
        let value = &inner[..close];
        let field_name = value.bytes().all(|c| c.is_ascii_lowercase() || c == b'_');
        let number = value
            .bytes()
            .all(|c| c.is_ascii_digit() || c == b'-' || c == b'.');
        // serde_json's syntax errors quote the punctuation it expected (`,` or `]`).
        let punctuation = matches!(value, "," | ":" | "]" | "}");
        let keep = quote == '`' && value.len() <= 24 && (field_name || number || punctuation);
        out.push(quote);
        out.push_str(if keep { value } else { "…" });
        out.push(quote);
        rest = &inner[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Replaces the characters of every JSON string value on a line by `*` (member names, i.e.
/// strings followed by `:`, are kept); lengths are kept so that a caret still lines up.
pub(super) fn redact_values(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out: Vec<char> = chars.clone();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        if c != '"' {
            i += 1;
            continue;
        }
        let start = i + 1;
        let mut j = start;
        let mut escaped = false;
        while let Some(&d) = chars.get(j) {
            if escaped {
                escaped = false;
            } else if d == '\\' {
                escaped = true;
            } else if d == '"' {
                break;
            }
            j += 1;
        }
        let next = chars
            .get(j + 1..)
            .unwrap_or_default()
            .iter()
            .find(|c| !c.is_whitespace());
        if next != Some(&':') {
            for slot in out.iter_mut().take(j).skip(start) {
                *slot = '*';
            }
        }
        i = j + 1;
    }
    out.into_iter().collect()
}

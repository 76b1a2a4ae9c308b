//! The docs do not name what is not there. In README.md, docs/**/*.md, envoy/**/README.md and
//! quotad/**/*.md:
//! - every relative Markdown link resolves to a file or directory (relative to the doc, as
//!   GitHub resolves it), and a `#anchor` into a Markdown file names one of its headings
//!   (GitHub's slugs);
//! - every repository path written in backticks (`src/quota.rs`, `envoy/fleet/`, a word of
//!   `tollgate check envoy/envoy.yaml`) exists. Such paths are read from the repository root,
//!   wherever the doc is; paths under a directory `.gitignore` anchors (`/bench/out`, `/target`)
//!   are build outputs and are not required;
//! - every page of docs/ and every scenario README of envoy/ is linked from README.md, so a
//!   newcomer can reach it.
//!
//! When a file moves, this test names each doc, line and reference to update.
//! No Envoy, no build outputs: it reads the tree only.

// Tests fail loudly: unwrap, expect, panic and indexing are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The repository root (this crate's manifest is in cli/).
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Where a path in backticks counts as naming a repository file.
const PATH_PREFIXES: [&str; 9] = [
    "src/", "quotad/", "cli/", "tests/", "envoy/", "bench/", "fuzz/", "docs/", ".ci/",
];

/// The docs this test reads, as paths relative to the repository root, sorted.
fn docs(root: &Path) -> Vec<String> {
    let mut found = vec!["README.md".to_string()];
    let mut walk = |dir: &str, wanted: &dyn Fn(&str) -> bool| {
        let mut stack = vec![root.join(dir)];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().to_string();
                if path.is_dir() {
                    if name != "target" {
                        stack.push(path);
                    }
                } else if wanted(&name) {
                    let rel = path.strip_prefix(root).unwrap();
                    found.push(rel.to_string_lossy().to_string());
                }
            }
        }
    };
    walk("docs", &|name| name.ends_with(".md"));
    walk("envoy", &|name| name == "README.md");
    walk("quotad", &|name| name.ends_with(".md"));
    found.sort();
    found
}

/// A Markdown line outside fenced code blocks, with its 1-based number.
fn prose_lines(markdown: &str) -> Vec<(usize, &str)> {
    let mut fence: Option<&str> = None;
    let mut lines = Vec::new();
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        let marker = ["```", "~~~"].into_iter().find(|m| trimmed.starts_with(m));
        match (fence, marker) {
            (None, Some(m)) => fence = Some(m),
            (Some(open), Some(m)) if open == m && trimmed.trim_end() == m => fence = None,
            (None, None) => lines.push((i + 1, line)),
            _ => {}
        }
    }
    lines
}

/// The inline code spans of a line (text between single backticks, or between double ones):
/// each span's byte range in the line, delimiters included, and its text.
fn code_spans(line: &str) -> Vec<(std::ops::Range<usize>, &str)> {
    let mut spans = Vec::new();
    let mut from = 0;
    while let Some(start) = line[from..].find('`').map(|s| from + s) {
        let ticks = line[start..].chars().take_while(|&c| c == '`').count();
        let delimiter = &line[start..start + ticks];
        let inner = start + ticks;
        match line[inner..].find(delimiter).map(|e| inner + e) {
            Some(end) => {
                spans.push((start..end + ticks, &line[inner..end]));
                from = end + ticks;
            }
            None => break,
        }
    }
    spans
}

/// The line with its code spans cut out (links inside code are not links).
fn without_code(line: &str) -> String {
    let mut text = String::new();
    let mut from = 0;
    for (range, _) in code_spans(line) {
        text.push_str(&line[from..range.start]);
        from = range.end;
    }
    text.push_str(&line[from..]);
    text
}

/// The targets of the inline links and images of a line: `[text](target)` and
/// `[text](target "title")`.
fn link_targets(line: &str) -> Vec<String> {
    let text = without_code(line);
    let mut targets = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let Some(end) = after.find(')') else { break };
        let target = after[..end].split_whitespace().next().unwrap_or("");
        targets.push(target.trim_matches(['<', '>']).to_string());
        rest = &after[end + 1..];
    }
    targets
}

/// GitHub's anchor for a heading: the text as rendered, lower case, with punctuation other
/// than `-` and `_` dropped and each space a `-`.
fn slug(heading: &str) -> String {
    let mut text = String::new();
    // Links render as their text.
    let mut rest = heading;
    while let Some(open) = rest.find('[') {
        match rest[open..].find("](").map(|m| open + m) {
            Some(mid) => {
                let close = rest[mid..].find(')').map_or(rest.len(), |c| mid + c + 1);
                text.push_str(&rest[..open]);
                text.push_str(&rest[open + 1..mid]);
                rest = &rest[close..];
            }
            None => break,
        }
    }
    text.push_str(rest);
    text.chars()
        .flat_map(char::to_lowercase)
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a Markdown file's headings, a repeated one numbered as GitHub does (`-1`, ...).
fn anchors(markdown: &str) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut anchors = Vec::new();
    for (_, line) in prose_lines(markdown) {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(line[hashes..].trim());
        let n = seen.entry(base.clone()).or_insert(0);
        anchors.push(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    anchors
}

/// The words of a code span that name a repository path: a known top-level directory, then
/// either a trailing `/` or a file name with an extension. Placeholders and globs
/// (`src/<module>/tests.rs`, `tests/fleet*.rs`) name no one file and are skipped.
fn repository_paths(span: &str) -> Vec<&str> {
    span.split_whitespace()
        .map(|word| word.trim_matches(|c: char| "'\"(),;:".contains(c)))
        .filter(|word| PATH_PREFIXES.iter().any(|p| word.starts_with(p)))
        .filter(|word| !word.contains(['<', '>', '*', '{', '}', '$', '|']))
        .filter(|word| {
            let last = word.rsplit('/').next().unwrap_or("");
            word.ends_with('/')
                || last
                    .rsplit_once('.')
                    .is_some_and(|(stem, ext)| !stem.is_empty() && !ext.is_empty())
        })
        .collect()
}

/// Directories `.gitignore` anchors at the root (`/bench/out`): build outputs, not sources.
fn build_outputs(root: &Path) -> Vec<String> {
    std::fs::read_to_string(root.join(".gitignore"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix('/'))
        .filter(|l| !l.contains(['*', '?', '[']))
        .map(|l| format!("{}/", l.trim_end_matches('/')))
        .collect()
}

/// Everything `doc` (a path relative to `root`, holding `markdown`) names that is not there,
/// one message per problem: "doc:line: what, and why it fails".
fn problems(root: &Path, doc: &str, markdown: &str) -> Vec<String> {
    let outputs = build_outputs(root);
    let dir = Path::new(doc).parent().unwrap_or(Path::new(""));
    let mut found = Vec::new();
    for (number, line) in prose_lines(markdown) {
        for target in link_targets(line) {
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = match target.split_once('#') {
                Some((file, anchor)) => (file, Some(anchor)),
                None => (target.as_str(), None),
            };
            if file.is_empty() {
                // An anchor into this doc itself.
                let anchor = anchor.unwrap_or("");
                if !anchors(markdown).iter().any(|a| a == anchor) {
                    found.push(format!(
                        "{doc}:{number}: link ({target}): {doc} has no heading with anchor \
                         #{anchor}"
                    ));
                }
                continue;
            }
            let resolved = normalize(&dir.join(file));
            let full = root.join(&resolved);
            if !full.exists() {
                found.push(format!(
                    "{doc}:{number}: link ({target}) points at {}, which does not exist",
                    resolved.display()
                ));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            if full.extension().is_some_and(|e| e == "md") {
                let text = std::fs::read_to_string(&full).unwrap();
                if !anchors(&text).iter().any(|a| a == anchor) {
                    found.push(format!(
                        "{doc}:{number}: link ({target}): {} has no heading with anchor #{anchor}",
                        resolved.display()
                    ));
                }
            }
        }
        for (_, span) in code_spans(line) {
            for path in repository_paths(span) {
                if outputs.iter().any(|o| path.starts_with(o.as_str())) {
                    continue;
                }
                if !root.join(path).exists() {
                    found.push(format!(
                        "{doc}:{number}: `{path}` names no file in the repository \
                         (paths in backticks are read from the repository root)"
                    ));
                }
            }
        }
    }
    found
}

/// `a/b/../c` → `a/c`, without touching the file system (the target may not exist).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[test]
fn every_link_and_path_in_the_docs_exists() {
    let root = repo();
    let docs = docs(&root);
    assert!(docs.len() > 1, "found no docs besides README.md: {docs:?}");
    let mut all = Vec::new();
    for doc in &docs {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        all.extend(problems(&root, doc, &text));
    }
    assert!(
        all.is_empty(),
        "{} reference(s) in the docs name what does not exist; update the doc (or restore \
         the file):\n  {}",
        all.len(),
        all.join("\n  ")
    );
}

#[test]
fn every_docs_page_and_scenario_readme_is_linked_from_the_readme() {
    let root = repo();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let linked: Vec<PathBuf> = prose_lines(&readme)
        .into_iter()
        .flat_map(|(_, line)| link_targets(line))
        .map(|t| normalize(Path::new(t.split('#').next().unwrap_or(""))))
        .collect();
    let orphans: Vec<String> = docs(&root)
        .into_iter()
        .filter(|d| d.starts_with("docs/") || d.starts_with("envoy/"))
        .filter(|d| !linked.iter().any(|l| l == Path::new(d)))
        .collect();
    assert!(
        orphans.is_empty(),
        "README.md links to none of these; add them to its index: {orphans:?}"
    );
}

#[test]
fn the_checker_names_the_doc_line_and_missing_file() {
    let root = repo();
    let markdown = "# Top\n\n## Fleet mode: one quota (`lease`)\n\
                    See [the filter](../src/lib.rs), [gone](../src/nothing.rs) and [here](#top); \
                    `../src/nothing.rs` is the same text in code.\n\
                    ```\n`src/inside_a_fence.rs` [x](nowhere.md)\n```\n\
                    Owned by `src/quota.rs` and `src/config.rs`; `src/<module>/tests.rs` is a \
                    pattern, `bench/out/results.json` an output, `make -C envoy/` and \
                    `tollgate check envoy/missing.yaml` run.\n\
                    [a](#fleet-mode-one-quota-lease) [b](#no-such-heading) \
                    [c](../README.md#no-such-section) [d](https://example.com/x.md)\n";
    let found = problems(&root, "docs/example.md", markdown);
    assert_eq!(
        found,
        [
            "docs/example.md:4: link (../src/nothing.rs) points at src/nothing.rs, which does \
             not exist",
            "docs/example.md:8: `src/config.rs` names no file in the repository (paths in \
             backticks are read from the repository root)",
            "docs/example.md:8: `envoy/missing.yaml` names no file in the repository (paths \
             in backticks are read from the repository root)",
            "docs/example.md:9: link (#no-such-heading): docs/example.md has no heading with \
             anchor #no-such-heading",
            "docs/example.md:9: link (../README.md#no-such-section): README.md has no heading with \
             anchor #no-such-section",
        ],
        "{found:#?}"
    );
}

#[test]
fn anchors_are_githubs_slugs() {
    let markdown = "# tollgate\n## Fleet mode: one quota for every Envoy\n\
                    ### Tested against real components (`quotad/tests/`)\n\
                    ### Tested against real components\n### Tested against real components\n\
                    ## Other rate limit services (`lease: 1`)\n## Command line: `tollgate`\n\
                    ## The [usage](x.md) endpoint — for callers\n```\n# not a heading\n```\n";
    assert_eq!(
        anchors(markdown),
        [
            "tollgate",
            "fleet-mode-one-quota-for-every-envoy",
            "tested-against-real-components-quotadtests",
            "tested-against-real-components",
            "tested-against-real-components-1",
            "other-rate-limit-services-lease-1",
            "command-line-tollgate",
            "the-usage-endpoint--for-callers",
        ]
    );
}

#[test]
fn the_make_targets_in_the_docs_are_what_make_help_prints() {
    let root = repo();
    let out = std::process::Command::new("make")
        .args(["--no-print-directory", "-s", "help"])
        .current_dir(&root)
        .output()
        .expect("make runs (the two commands need it)");
    assert!(out.status.success(), "make help failed");
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    let doc = std::fs::read_to_string(root.join("docs/development.md")).unwrap();
    let block: String = doc
        .lines()
        .skip_while(|l| *l != "$ make help")
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        !block.is_empty(),
        "docs/development.md has no `$ make help` session"
    );
    assert_eq!(
        block, printed,
        "docs/development.md's `make help` session differs from the Makefile's ## comments"
    );
}

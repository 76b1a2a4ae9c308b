#!/usr/bin/env python3
"""Proves tools/circles.py finds what it must: planted circles fail it (naming them), and the
layouts it must accept (facades, test code, comments, other crates' paths) pass.

    python3 tools/test_circles.py      (run by `make lint` before the check itself)
"""
import subprocess
import sys
import tempfile
from pathlib import Path

TOOL = Path(__file__).with_name("circles.py")


def run(files):
    with tempfile.TemporaryDirectory() as root:
        for name, text in files.items():
            path = Path(root, "src", name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        done = subprocess.run([sys.executable, str(TOOL), str(Path(root, "src"))],
                              capture_output=True, text=True)
        return done.returncode, done.stdout.replace(root + "/", "")


def expect(name, files, code, *words):
    got, out = run(files)
    missing = [w for w in words if w not in out]
    if got != code or missing:
        print(f"FAIL {name}: exit {got} (wanted {code}), missing {missing} in:\n{out}")
        return False
    return True


LIB = "pub mod a;\npub mod b;\npub mod c;\n"
CASES = [
    ("two modules importing each other", {
        "lib.rs": LIB,
        "a.rs": "use crate::b::B;\npub struct A;\n",
        "b.rs": "use crate::a::A;\npub struct B;\n",
        "c.rs": "",
    }, 1, "import circle among 2 modules", "a -> b -> a"),
    ("a circle through an inline path and a use group", {
        "lib.rs": LIB,
        "a.rs": "use crate::{b::{B}};\npub struct A;\n",
        "b.rs": "pub fn f() { crate::c::g(); }\npub struct B;\n",
        "c.rs": "pub fn g() { let _ = crate::a::A; }\n",
    }, 1, "import circle among 3 modules", "a -> b -> c -> a"),
    ("a mod.rs holding the model and importing its children back", {
        "lib.rs": "pub mod config;\n",
        "config/mod.rs": "mod compile;\npub struct Config;\npub fn load() { compile::run(); }\n",
        "config/compile.rs": "use super::Config;\npub fn run() {}\n",
    }, 1, "config -> config::compile -> config"),
    ("a re-export is followed to the module that defines the name", {
        "lib.rs": "pub mod config;\npub mod feature;\n",
        "config/mod.rs": "mod model;\npub use model::Config;\n",
        "config/model.rs": "use crate::feature::Feature;\npub struct Config;\n",
        "feature.rs": "use crate::config::Config;\npub struct Feature;\n",
    }, 1, "config::model -> feature -> config::model"),
    ("a glob re-export is followed to the module that defines each name", {
        "lib.rs": "pub mod config;\npub mod feature;\n",
        "config/mod.rs": "mod model;\nmod plan;\npub use model::*;\npub use plan::*;\n",
        "config/model.rs": "use crate::feature::Feature;\npub struct Config;\n",
        "config/plan.rs": "pub struct Plan;\npub const MAX: u32 = 1;\n",
        "feature.rs": "use crate::config::{Config, Plan, MAX};\npub struct Feature;\n",
    }, 1, "config::model -> feature -> config::model"),
    ("layers that point down pass", {
        "lib.rs": LIB,
        "a.rs": "use crate::b::B;\nuse crate::c::C;\n",
        "b.rs": "use crate::c::C;\npub struct B;\n",
        "c.rs": "pub struct C;\n",
    }, 0, "no import circle"),
    ("a facade mod.rs, test code, comments and strings are no edges", {
        "lib.rs": "pub mod config;\npub mod feature;\n",
        "config/mod.rs": "mod model;\n#[cfg(test)]\nmod tests;\npub use model::*;\n",
        "config/model.rs": "// crate::feature::Feature\npub struct Config;\n"
                           "pub const S: &str = \"crate::feature::F\";\n"
                           "#[cfg(test)]\nmod tests { use crate::feature::Feature; }\n",
        "config/tests.rs": "use crate::feature::Feature;\n",
        "feature.rs": "use crate::config::Config;\nuse serde::Deserialize;\npub struct Feature;\n",
    }, 0, "no import circle"),
]

if __name__ == "__main__":
    results = [expect(*case) for case in CASES]
    print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
    sys.exit(0 if all(results) else 1)

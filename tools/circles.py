#!/usr/bin/env python3
"""Fails when the modules of a Rust crate import each other in a circle, naming the circle.

    tools/circles.py src quotad/src cli/src

Each file is a node (`config/compile.rs` is `config::compile`). An edge goes from a file to the
module that a path in it names: `crate::a::b::Item`, `super::Item`, `self::x::Item`, or a child
module's name (`compile::run`), in `use` lines and inline. A name re-exported by `pub use` is
followed to the module that defines it, and a `pub use` line itself is no edge: a `mod.rs` that
only re-exports is a facade, not a layer. Test code (`tests.rs` files, `#[cfg(test)] mod`
blocks), comments and string literals are left out. Exits 1 and prints each circle found.
"""
import re
import sys
from pathlib import Path

WORD = r"[A-Za-z_][A-Za-z0-9_]*"


def strip(text):
    """The code without comments, string and char literals (their bytes become spaces)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and not re.match(r"\w", text[i - 1:i] or " "):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            i = n if end < 0 else end + 1 + len(hashes)
            out.append('""')
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            out.append('""')
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 4]) or text.startswith("'\\u{", i):
            i = text.find("'", i + 2) + 1
            out.append("' '")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def drop_test_blocks(code):
    """Removes `#[cfg(test)] mod name { ... }` blocks (and `#[cfg(test)] mod name;` lines)."""
    while True:
        m = re.search(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+" + WORD + r"\s*([{;])", code)
        if not m:
            return code
        end = m.end()
        if m.group(3) == "{":
            depth = 1
            while end < len(code) and depth:
                depth += {"{": 1, "}": -1}.get(code[end], 0)
                end += 1
        code = code[:m.start()] + code[end:]


def expand(tree):
    """`a::{b, c::{d, e}, f as g}` → [[a, b], [a, c, d], [a, c, e], [a, f]]."""
    tree = re.sub(r"\s+as\s+" + WORD, "", tree)
    tree = re.sub(r"\s+", "", tree)
    paths = []

    def parse(prefix, s):
        parts, depth, start = [], 0, 0
        for k, ch in enumerate(s + ","):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                parts.append(s[start:k])
                start = k + 1
        for part in filter(None, parts):
            brace = part.find("{")
            if brace >= 0:
                head = [x for x in part[:brace].split("::") if x]
                parse(prefix + head, part[brace + 1:part.rfind("}")])
            else:
                paths.append(prefix + [x for x in part.split("::") if x])

    parse([], tree)
    return paths


class Crate:
    def __init__(self, root):
        self.root = Path(root)
        self.files = {}  # module path (tuple) -> Path
        for path in sorted(self.root.rglob("*.rs")):
            rel = path.relative_to(self.root)
            if rel.parts[0] == "bin" or path.name == "tests.rs":
                continue
            parts = list(rel.with_suffix("").parts)
            if parts[-1] in ("lib", "main", "mod"):
                parts = parts[:-1]
            self.files[tuple(parts)] = path
        self.code = {m: drop_test_blocks(strip(p.read_text())) for m, p in self.files.items()}
        # Only modules that their parent declares outside test code are part of the crate.
        self.files = {m: p for m, p in self.files.items() if self.declared(m)}
        self.reexports = {m: self.pub_uses(m) for m in self.files}

    def declared(self, module):
        if not module:
            return True
        parent = module[:-1]
        return parent in self.code and re.search(
            r"\bmod\s+" + module[-1] + r"\s*[;{]", self.code[parent]) is not None

    def uses(self, module):
        """(is_pub, [segments]) for every path of every `use` item in a module."""
        for m in re.finditer(r"(\bpub(\([^)]*\))?\s+)?\buse\s+([^;]*);", self.code[module]):
            for segments in expand(m.group(3)):
                yield m.group(1) is not None, segments

    def pub_uses(self, module):
        """Names a module re-exports → the path they come from. A glob (`pub use m::*`)
        re-exports every item `m` defines, and each of them is followed to `m`."""
        names = {}
        for is_pub, segments in self.uses(module):
            if not is_pub or not segments:
                continue
            source = self.absolute(module, segments)
            if source is None:
                continue
            if segments[-1] != "*":
                names[segments[-1]] = source
                continue
            target = tuple(source[:-1])
            for item in self.defined(target):
                names.setdefault(item, list(target) + [item])
        return names

    def defined(self, module):
        """The items a module defines at its top level (types, functions, constants, ...)."""
        code = self.code.get(module, "")
        kinds = r"(?:struct|enum|union|trait|type|fn|const|static|mod)"
        pattern = r"^(?:pub(?:\([^)]*\))?\s+)?(?:const\s+|async\s+|unsafe\s+)*" + kinds
        return re.findall(pattern + r"\s+(" + WORD + ")", code, flags=re.M)

    def absolute(self, module, segments):
        """Segments relative to `module` → segments from the crate root (None: another crate)."""
        first, rest = segments[0], segments[1:]
        if first == "crate":
            return rest
        if first == "self":
            return list(module) + rest
        if first == "super":
            base = list(module)
            while segments and segments[0] == "super":
                base, segments = base[:-1], segments[1:]
            return base + segments
        if tuple(module) + (first,) in self.files:
            return list(module) + segments
        return None

    def resolve(self, segments, seen=0):
        """The module file that defines what an absolute path names."""
        best = ()
        for k in range(len(segments), -1, -1):
            if tuple(segments[:k]) in self.files:
                best = tuple(segments[:k])
                break
        rest = segments[len(best):]
        if rest and seen < 8:
            target = self.reexports.get(best, {}).get(rest[0])
            if target is not None:
                return self.resolve(target + rest[1:], seen + 1)
        return best

    def edges(self):
        graph = {m: set() for m in self.files}
        for module in self.files:
            paths = [s for is_pub, s in self.uses(module) if not is_pub]
            body = re.sub(r"(\bpub(\([^)]*\))?\s+)?\buse\s+[^;]*;", "", self.code[module])
            for m in re.finditer(r"(?<![\w:])((?:" + WORD + r"::)+" + WORD + ")", body):
                paths.append(m.group(1).split("::"))
            for segments in paths:
                absolute = self.absolute(module, segments)
                if absolute is None:
                    continue
                target = self.resolve([s for s in absolute if s != "*"])
                if target != module and target in graph:
                    graph[module].add(target)
        return graph


def circles(graph):
    """Strongly connected components with more than one module (Tarjan), each as a cycle path."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def cycle_in(graph, component):
    """One circle through the component's first module, for the message."""
    members, start = set(component), component[0]
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop(0)
        for w in sorted(graph[path[-1]]):
            if w == start:
                return path + [start]
            if w in members and w not in seen:
                seen.add(w)
                paths.append(path + [w])
    return component


def name(module):
    return "::".join(module) or "crate"


def main(roots):
    failed = False
    for root in roots:
        crate = Crate(root)
        graph = crate.edges()
        for component in circles(graph):
            failed = True
            cycle = " -> ".join(name(m) for m in cycle_in(graph, component))
            print(f"{root}: import circle among {len(component)} modules: {cycle}")
            print(f"    all of them: {', '.join(name(m) for m in component)}")
        if "-v" in sys.argv:
            for module in sorted(graph):
                print(f"{root}: {name(module)} -> {', '.join(sorted(name(t) for t in graph[module]))}")
    if not failed:
        print(f"no import circle in {', '.join(roots)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main([a for a in sys.argv[1:] if a != "-v"]))

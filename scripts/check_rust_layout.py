#!/usr/bin/env python3
"""The workspace's layout rules, checked on the sources (`make lint`):

- no import cycle between the top-level modules of a crate (`a` uses `crate::b` and `b` uses
  `crate::a`): a cycle means two modules are one concern, or a helper lives in the wrong one;
- no source file outside tests over 600 lines: past that, a file mixes concerns.

`--self-test` checks the checker on a tree it writes with a known cycle and a long file.
"""
import os
import re
import sys
import tempfile

MAX_LINES = 600
CRATES = ["common", "schemas", "producer", "consumers", "ctl", "testkit", "loadtest", "chaos"]


def module_graph(src):
    """Top-level module -> the top-level modules it names through `crate::`."""
    graph = {}
    for folder, _, files in os.walk(src):
        for name in files:
            if not name.endswith(".rs"):
                continue
            parts = os.path.relpath(os.path.join(folder, name), src)[:-3].split(os.sep)
            if parts[-1] == "mod":
                parts = parts[:-1]
            if parts in (["lib"], ["main"]):
                continue
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                text = f.read()
            # Unit tests may reach anywhere in their crate.
            text = re.split(r"#\[cfg\(test\)\]\s*mod tests", text)[0]
            used = set(re.findall(r"crate::([a-z_][a-z0-9_]*)", text))
            for group in re.findall(r"crate::\{([^}]*)\}", text):
                for item in group.split(","):
                    head = item.strip().split("::")[0]
                    if re.fullmatch(r"[a-z_][a-z0-9_]*", head):
                        used.add(head)
            graph.setdefault(parts[0], set()).update(used - {parts[0]})
    for module in graph:
        graph[module] &= set(graph)
    return graph


def cycles(graph):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def long_files(src):
    for folder, _, files in os.walk(src):
        for name in files:
            if name.endswith(".rs"):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as f:
                    count = sum(1 for _ in f)
                if count > MAX_LINES:
                    yield path, count


def check(root):
    problems = []
    for crate in CRATES:
        src = os.path.join(root, crate, "src")
        if not os.path.isdir(src):
            continue
        graph = module_graph(src)
        for component in cycles(graph):
            uses = "; ".join(f"{m} uses {', '.join(sorted(graph[m] & set(component)))}" for m in component)
            problems.append(f"{crate}: import cycle between modules {', '.join(component)} ({uses}): "
                            "move what both need into a module of its own")
        for path, count in long_files(src):
            problems.append(f"{os.path.relpath(path, root)}: {count} lines, more than {MAX_LINES}: "
                            "split it by what its parts do")
    return problems


def self_test():
    with tempfile.TemporaryDirectory() as root:
        src = os.path.join(root, "common", "src")
        os.makedirs(os.path.join(src, "b"))
        files = {
            "lib.rs": "pub mod a;\npub mod b;\npub mod c;\n",
            "a.rs": "use crate::b::thing;\n",
            "b/mod.rs": "pub mod inner;\n",
            "b/inner.rs": "use crate::{a::x, c};\n",
            "c.rs": "\n" * (MAX_LINES + 1) + "#[cfg(test)]\nmod tests { use crate::a; }\n",
        }
        for name, text in files.items():
            with open(os.path.join(src, name), "w", encoding="utf-8") as f:
                f.write(text)
        problems = check(root)
        assert any("import cycle between modules a, b" in p for p in problems), problems
        assert any(p.startswith(os.path.join("common", "src", "c.rs")) for p in problems), problems
        assert len(problems) == 2, problems
    print("check_rust_layout self-test passed")


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        self_test()
        sys.exit(0)
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    found = check(root)
    for problem in found:
        print(f"layout: {problem}", file=sys.stderr)
    if found:
        sys.exit(1)
    print(f"layout: no import cycles, no source file over {MAX_LINES} lines")

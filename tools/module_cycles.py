"""Fails when the modules of a crate import each other in a cycle.

Each top-level module of a crate (`core/src/flow.rs` is `flow`, `control-plane/src/api/*.rs` is
`api`) is a node; `use crate::x` or a `crate::x::` path in a module's non-test code is an edge to
`x`. Test code (from the first `#[cfg(test)]` on) and `*_tests.rs` files are left out: tests may
reach anywhere. Prints every cycle found and exits 1, or prints nothing and exits 0.

Usage: python3 tools/module_cycles.py core/src src control-plane/src
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

USE = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
GROUP = re.compile(r"\buse\s+crate::\{([^}]*)\}", re.S)


def module_of(src: Path, file: Path) -> str | None:
    rel = file.relative_to(src)
    if rel.name.endswith("_tests.rs"):
        return None
    if len(rel.parts) > 1:
        return rel.parts[0]
    return None if rel.stem in ("lib", "main") else rel.stem


def edges(src: Path) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for file in sorted(src.rglob("*.rs")):
        node = module_of(src, file)
        if node is None:
            continue
        text = file.read_text()
        text = text.split("#[cfg(test)]", 1)[0]
        targets = set(USE.findall(text))
        for group in GROUP.findall(text):
            targets.update(re.findall(r"^\s*([a-z_][a-z0-9_]*)", part)[0]
                           for part in group.split(",") if re.match(r"^\s*[a-z_]", part))
        graph.setdefault(node, set()).update(t for t in targets if t != node)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()

    def walk(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                cycle = path[path.index(nxt):]
                key = tuple(sorted(cycle))
                if key not in seen:
                    seen.add(key)
                    found.append(cycle + [nxt])
            elif nxt in graph and len(path) < 50:
                walk(nxt, path + [nxt])

    for start in sorted(graph):
        walk(start, [start])
    return found


def main(dirs: list[str]) -> int:
    bad = 0
    for d in dirs:
        for cycle in cycles(edges(Path(d))):
            print(f"{d}: import cycle: {' -> '.join(cycle)}")
            bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

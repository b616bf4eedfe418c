"""The cycle check finds a cycle through `use crate::…` and paths, and ignores test code."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import module_cycles  # noqa: E402


def crate(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_a_cycle_through_a_use_and_a_path_is_found(tmp_path):
    src = crate(tmp_path, {
        "lib.rs": "mod a; mod b; mod c;",
        "a.rs": "use crate::b::Thing;",
        "b.rs": "use crate::{c::X, other};",
        "c.rs": "fn f() { crate::a::g(); }",
    })
    found = module_cycles.cycles(module_cycles.edges(src))
    assert found == [["a", "b", "c", "a"]]
    assert module_cycles.main([str(src)]) == 1


def test_tests_and_submodules_do_not_make_cycles(tmp_path):
    src = crate(tmp_path, {
        "a.rs": "use crate::b::Thing;\n#[cfg(test)]\nmod tests { use crate::a::x; }",
        "b.rs": "#[cfg(test)]\nmod tests { use crate::a::Thing; }",
        "a_tests.rs": "use crate::b::Y;",
        "api/mod.rs": "use crate::b::Thing; use crate::api::x;",
    })
    assert module_cycles.cycles(module_cycles.edges(src)) == []
    assert module_cycles.main([str(src)]) == 0

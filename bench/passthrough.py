"""The pass-through floor: a proxy-wasm module assembled byte by byte here, so the bench measures
what Envoy's wasm machinery costs per request with no SDK and no filter logic.

The module, in WebAssembly text (what `wat()` prints; `module_bytes()` is its binary):

  (module
    (memory (export "memory") 2)
    (func (export "proxy_abi_version_0_2_1"))
    (func (export "proxy_on_memory_allocate") (param i32) (result i32)
      (select (i32.const 1024) (i32.const 0) (i32.le_u (local.get 0) (i32.const 65536))))
    (func (export "proxy_on_context_create") (param i32 i32))
    (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
    ... every per-request callback the Rust SDK exports, each returning Continue (0) ...
    (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
    (func (export "proxy_on_log") (param i32))
    (func (export "proxy_on_delete") (param i32)))

It makes no hostcall. It exports the same per-request callbacks as the SDK (body and trailers
included), so the SDK floor minus this one is the SDK's own cost, not a difference in what Envoy
calls. The allocator hands out one fixed buffer: Envoy only asks for it at start-up, and the
module never reads what it is given."""

from __future__ import annotations

import sys
from pathlib import Path

I32 = 0x7F

# (export name, params, results, body opcodes without the final `end`)
CONTINUE = [0x41, 0x00]  # i32.const 0: Action::Continue
TRUE = [0x41, 0x01]  # i32.const 1


def uleb(n: int) -> bytes:
    if n < 0:
        raise ValueError("uleb of a negative number")
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def sleb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        done = (n == 0 and not byte & 0x40) or (n == -1 and byte & 0x40)
        out.append(byte if done else byte | 0x80)
        if done:
            return bytes(out)


ALLOC_LIMIT = 65536
ALLOC_AT = 1024
# select(1024, 0, size <= 65536): one buffer inside the 2 pages of memory, 0 (failure) if too big.
ALLOCATE = ([0x41, *sleb(ALLOC_AT), 0x41, 0x00, 0x20, 0x00, 0x41, *sleb(ALLOC_LIMIT), 0x4D, 0x1B])

FUNCS: list[tuple[str, tuple[int, ...], tuple[int, ...], list[int]]] = [
    ("proxy_abi_version_0_2_1", (), (), []),
    ("proxy_on_memory_allocate", (I32,), (I32,), ALLOCATE),
    ("proxy_on_context_create", (I32, I32), (), []),
    ("proxy_on_vm_start", (I32, I32), (I32,), TRUE),
    ("proxy_on_configure", (I32, I32), (I32,), TRUE),
    ("proxy_on_request_headers", (I32, I32, I32), (I32,), CONTINUE),
    ("proxy_on_request_body", (I32, I32, I32), (I32,), CONTINUE),
    ("proxy_on_request_trailers", (I32, I32), (I32,), CONTINUE),
    ("proxy_on_response_headers", (I32, I32, I32), (I32,), CONTINUE),
    ("proxy_on_response_body", (I32, I32, I32), (I32,), CONTINUE),
    ("proxy_on_response_trailers", (I32, I32), (I32,), CONTINUE),
    ("proxy_on_done", (I32,), (I32,), TRUE),
    ("proxy_on_log", (I32,), (), []),
    ("proxy_on_delete", (I32,), (), []),
]
MEMORY_PAGES = 2


def vec(items: list[bytes]) -> bytes:
    return uleb(len(items)) + b"".join(items)


def section(sid: int, payload: bytes) -> bytes:
    return bytes([sid]) + uleb(len(payload)) + payload


def name(s: str) -> bytes:
    raw = s.encode()
    return uleb(len(raw)) + raw


def module_bytes() -> bytes:
    types: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    for _, params, results, _ in FUNCS:
        if (params, results) not in types:
            types.append((params, results))
    type_sec = vec([bytes([0x60]) + vec([bytes([p]) for p in params]) + vec([bytes([r]) for r in results])
                    for params, results in types])
    func_sec = vec([uleb(types.index((params, results))) for _, params, results, _ in FUNCS])
    mem_sec = vec([bytes([0x00]) + uleb(MEMORY_PAGES)])  # limits: min only
    exports = [name(n) + b"\x00" + uleb(i) for i, (n, _, _, _) in enumerate(FUNCS)]
    exports.append(name("memory") + b"\x02" + uleb(0))
    code_sec = vec([uleb(len(body) + 2) + b"\x00" + bytes(body) + b"\x0b"  # no locals; `end`
                    for _, _, _, body in FUNCS])
    return (b"\x00asm" + (1).to_bytes(4, "little") + section(1, type_sec) + section(3, func_sec)
            + section(5, mem_sec) + section(7, vec(exports)) + section(10, code_sec))


def wat() -> str:
    """The same module as text, for reading (not assembled from: module_bytes() is the source)."""
    text = {tuple(CONTINUE): " (i32.const 0)", tuple(TRUE): " (i32.const 1)",
            tuple(ALLOCATE): f" (select (i32.const {ALLOC_AT}) (i32.const 0) "
                             f"(i32.le_u (local.get 0) (i32.const {ALLOC_LIMIT})))", (): ""}
    lines = ["(module", f'  (memory (export "memory") {MEMORY_PAGES})']
    for n, params, results, body in FUNCS:
        sig = (f" (param{' i32' * len(params)})" if params else "") + (" (result i32)" if results else "")
        lines.append(f'  (func (export "{n}"){sig}{text[tuple(body)]})')
    return "\n".join(lines) + ")\n"


def write(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(module_bytes())
    path.with_suffix(".wat").write_text(wat())
    return path


if __name__ == "__main__":
    print(write(Path(sys.argv[1] if len(sys.argv) > 1 else "target/bench/passthrough.wasm")))

"""The bench's pure parts: /proc parsing, wrk parsing, the per-request arithmetic, medians and
differences, the before/after rows, and the hand-assembled module. No Envoy, no wrk: cheap enough
for `make test` (.venv/bin/python -m pytest -q bench)."""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _load(name: str, file: str):
    # By path, under a name no other `bench` (the directory, as a namespace package) can shadow.
    spec = importlib.util.spec_from_file_location(name, HERE / file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load("uma_pep_bench", "bench.py")
compare = _load("uma_pep_bench_compare", "compare.py")
passthrough = _load("uma_pep_bench_passthrough", "passthrough.py")

# A real line's shape: pid, (comm), state, ppid ... utime=14, stime=15 ... (52 fields).
STAT = ("4242 (envoy) wrk) S 1 4242 4242 0 -1 4194560 52000 0 0 0 1234 567 0 0 20 0 "
        "18 0 998877 2000000000 30000 18446744073709551615 1 1 0 0 0 0 0 4096 16384 0 0 0 17 1 0 0 0 0 0 "
        "0 0 0 0 0 0 0 0\n")


def test_proc_stat_counts_fields_after_the_last_parenthesis():
    assert bench.parse_proc_stat(STAT) == 1234 + 567


def test_proc_stat_of_this_process_matches_os_times():
    ticks = bench.parse_proc_stat(Path("/proc/self/stat").read_text())
    t = os.times()
    assert abs(ticks / bench.CLK_TCK - (t.user + t.system)) <= 2 / bench.CLK_TCK


def test_cpu_per_request():
    # 150 ticks at 100 Hz = 1.5 s of CPU over 10,000 requests = 150 µs each.
    assert bench.cpu_us_per_request(150, 100, 10_000) == pytest.approx(150.0)
    assert bench.cpu_us_per_request(150, 250, 10_000) == pytest.approx(60.0)
    assert math.isnan(bench.cpu_us_per_request(10, 100, 0))


WRK = """Running 5s test @ http://127.0.0.1:40000/bench/x
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.52ms    1.10ms  30.01ms   91.00%
    Req/Sec     5.31k   400.12     6.10k    70.00%
  Latency Distribution
     50%  850.00us
     75%    1.60ms
     90%    2.70ms
     99%    1.20s
  52840 requests in 5.00s, 6.20MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 7
Requests/sec:  10566.73
Transfer/sec:      1.24MB
"""


def test_wrk_output():
    r = bench.parse_wrk(WRK)
    assert r["requests"] == 52840
    assert r["rps"] == pytest.approx(10566.73)
    assert r["p50"] == pytest.approx(0.85)  # µs to ms
    assert r["p99"] == pytest.approx(1200.0)  # s to ms
    assert r["non2xx"] == 7
    assert r["socket_errors"] == 3


def test_wrk_output_without_errors_and_garbage():
    clean = "\n".join(line for line in WRK.splitlines() if "errors" not in line and "Non-2xx" not in line)
    r = bench.parse_wrk(clean)
    assert (r["non2xx"], r["socket_errors"]) == (0, 0)
    with pytest.raises(ValueError):
        bench.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused")


def _run(cpu: float, rps: float = 1000.0) -> dict:
    return {"cpu_us": cpu, "rps": rps, "p50": 1.0, "p99": 2.0}


def test_summary_medians_and_costs_over_the_floors():
    s = bench.summarize({"none": [_run(60), _run(62), _run(90)],
                         "sdk": [_run(75), _run(72), _run(71)],
                         "cached": [_run(99), _run(80), _run(81)]})
    assert s["none"]["median"]["cpu_us"] == 62
    assert s["sdk"]["median"]["cpu_us"] == 72
    assert s["cached"]["over_sdk"] == pytest.approx(81 - 72)
    assert s["cached"]["over_none"] == pytest.approx(81 - 62)
    assert s["sdk"]["over_sdk"] is None and s["none"]["over_none"] is None
    assert s["none"]["over_sdk"] == pytest.approx(62 - 72)
    table = bench.table(s, {"cached": "uma-pep, cached"})
    assert "| uma-pep, cached | 81.0 | +19.0 | +9.0 |" in table


def test_summary_without_floors_has_no_differences():
    s = bench.summarize({"cached": [_run(10), _run(20)]})
    assert s["cached"]["median"]["cpu_us"] == 15
    assert s["cached"]["over_sdk"] is None and s["cached"]["over_none"] is None


def test_compare_rows_and_rendering():
    old = bench.summarize({"sdk": [_run(70)], "cached": [_run(90, 800)]})
    new = bench.summarize({"sdk": [_run(70)], "cached": [_run(81, 900)], "only_new": [_run(1)]})
    rows = {r["variant"]: r for r in compare.rows(old, new)}
    assert set(rows) == {"sdk", "cached"}
    assert rows["cached"]["cpu_delta"] == pytest.approx(-9)
    assert rows["cached"]["cpu_pct"] == pytest.approx(-10)
    assert (rows["cached"]["over_sdk_old"], rows["cached"]["over_sdk_new"]) == (20, 11)
    text = compare.render(compare.rows(old, new), "A", "B")
    assert "| cached | 90.0 | 81.0 | -9.0 (-10%) | +20.0 | +11.0 | 800 | 900 |" in text


def test_compare_sizes():
    old = {"sizes": {"uma-pep A": {"bytes": 2_000_000, "gzip_bytes": 700_000}, "sdk": {"bytes": 1, "gzip_bytes": 1}}}
    new = {"sizes": {"uma-pep A": {"bytes": 1_400_000, "gzip_bytes": 500_000}}}
    assert compare.size_lines(old, new) == [
        "uma-pep A: 2,000,000 -> 1,400,000 bytes (-600,000), gzip 700,000 -> 500,000 (-200,000)"]


def test_leb128():
    assert passthrough.uleb(0) == b"\x00"
    assert passthrough.uleb(127) == b"\x7f"
    assert passthrough.uleb(624485) == bytes([0xE5, 0x8E, 0x26])
    assert passthrough.sleb(-1) == b"\x7f"
    assert passthrough.sleb(64) == b"\xc0\x00"  # 64 needs a second byte: bit 6 would read as the sign
    assert passthrough.sleb(1024) == b"\x80\x08"


def _sections(raw: bytes) -> dict[int, bytes]:
    assert raw[:8] == b"\x00asm\x01\x00\x00\x00"
    out, i = {}, 8
    while i < len(raw):
        sid, i = raw[i], i + 1
        size = shift = 0
        while True:
            b, i = raw[i], i + 1
            size |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        out[sid], i = raw[i:i + size], i + size
    assert i == len(raw)
    return out


def test_passthrough_module_exports_the_abi():
    sections = _sections(passthrough.module_bytes())
    assert set(sections) == {1, 3, 5, 7, 10}
    exports = sections[7]
    for needed in ("memory", "proxy_abi_version_0_2_1", "proxy_on_memory_allocate", "proxy_on_context_create",
                   "proxy_on_request_headers", "proxy_on_response_headers", "proxy_on_done", "proxy_on_delete"):
        assert len(needed).to_bytes(1, "little") + needed.encode() in exports
    assert exports[0] == len(passthrough.FUNCS) + 1
    assert "proxy_on_request_headers" in passthrough.wat()


@pytest.mark.skipif(shutil.which("node") is None, reason="node (a second wasm engine) is not installed")
def test_passthrough_module_runs_in_v8():
    script = ("const m = new WebAssembly.Module(require('fs').readFileSync(0)); const e = new WebAssembly.Instance(m)"
              ".exports; console.log([e.proxy_on_memory_allocate(100), e.proxy_on_memory_allocate(1e6), "
              "e.proxy_on_request_headers(2, 5, 1), e.proxy_on_done(2), e.proxy_on_vm_start(1, 0)].join(' '))")
    out = subprocess.run(["node", "-e", script], input=passthrough.module_bytes(), capture_output=True, check=True)
    assert out.stdout.decode().split() == ["1024", "0", "0", "1", "1"]


def test_per_hostcall_price():
    s = bench.summarize({"sdk": [_run(70)], "probe_property": [_run(86)]})
    assert bench.per_call(s, "probe_property", n=8) == pytest.approx(2.0)


def test_goal_lines():
    s = bench.summarize({"sdk": [_run(70)], "unmatched": [_run(72)], "cached": [_run(80)],
                         "cached_fwd": [_run(83)]})
    lines = bench.goals(s, 1_600_000)
    assert len(lines) == 4
    assert lines[0].startswith("unmatched over SDK floor") and lines[0].endswith(": met")
    assert "+10.0" in lines[1] and lines[1].endswith("NOT met")
    assert "+3.0" in lines[2] and lines[2].endswith("NOT met")
    assert "1,600,000" in lines[3] and lines[3].endswith("NOT met")
    assert bench.goals(bench.summarize({"cached": [_run(1)]}), None) == []


def test_long_path_goal_lines_take_out_what_envoy_adds_for_the_path():
    # Envoy alone: +30 µs for the long path; the filter: +40 + 12. Its own extra is 12 µs.
    s = bench.summarize({"none": [_run(100)], "none_long": [_run(130)], "cached": [_run(140)],
                         "cached_long": [_run(182)], "cached_r10k_long": [_run(200)]})
    lines = bench.goals(s, None)
    assert len(lines) == 2
    assert lines[0].startswith("cached, 16 kB path, filter's extra") and "+12.0" in lines[0]
    assert lines[0].endswith(": met")
    # 10,000 resources: 200 against 182 is +9.9 %, over the 5 % goal.
    assert "+9.9 %" in lines[1] and lines[1].endswith("NOT met")
    quadratic = bench.summarize({"none": [_run(100)], "none_long": [_run(130)], "cached": [_run(140)],
                                 "cached_long": [_run(5_000)]})
    assert bench.goals(quadratic, None)[0].endswith("NOT met")

"""Before/after of two `make bench` runs: bench/compare.py OLD.json NEW.json

Per variant: Envoy CPU µs per request (median) old and new and the change, the cost added over the
SDK floor old and new, and throughput. Two runs at different times saw different load on the
machine: the floors' own change (printed first) shows how much of a difference is the machine.
For a difference between two builds measured in the same Envoy, use bench.py --compare."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def rows(old: dict[str, dict], new: dict[str, dict]) -> list[dict]:
    """One row per variant present in both summaries (bench.summarize's shape), in new's order."""
    out = []
    for key, n in new.items():
        if key not in old:
            continue
        o = old[key]
        oc, nc = o["median"]["cpu_us"], n["median"]["cpu_us"]
        out.append({"variant": key, "cpu_old": oc, "cpu_new": nc, "cpu_delta": nc - oc,
                    "cpu_pct": (nc - oc) / oc * 100 if oc else float("nan"),
                    "over_sdk_old": o.get("over_sdk"), "over_sdk_new": n.get("over_sdk"),
                    "rps_old": o["median"]["rps"], "rps_new": n["median"]["rps"]})
    return out


def _f(x: float | None, fmt: str) -> str:
    return "—" if x is None else format(x, fmt)


def render(table_rows: list[dict], old_name: str = "old", new_name: str = "new") -> str:
    lines = [f"| variant | CPU µs/req {old_name} | {new_name} | change | over SDK {old_name} | {new_name} "
             f"| req/s {old_name} | {new_name} |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table_rows:
        lines.append(f"| {r['variant']} | {r['cpu_old']:.1f} | {r['cpu_new']:.1f} | {r['cpu_delta']:+.1f} "
                     f"({r['cpu_pct']:+.0f}%) | {_f(r['over_sdk_old'], '+.1f')} | {_f(r['over_sdk_new'], '+.1f')} "
                     f"| {r['rps_old']:.0f} | {r['rps_new']:.0f} |")
    return "\n".join(lines)


def size_lines(old_meta: dict, new_meta: dict) -> list[str]:
    out = []
    for name, n in new_meta.get("sizes", {}).items():
        o = old_meta.get("sizes", {}).get(name)
        if o and name.startswith("uma-pep"):
            out.append(f"{name}: {o['bytes']:,} -> {n['bytes']:,} bytes ({n['bytes'] - o['bytes']:+,}), gzip "
                       f"{o['gzip_bytes']:,} -> {n['gzip_bytes']:,} ({n['gzip_bytes'] - o['gzip_bytes']:+,})")
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    old, new = (json.loads(Path(p).read_text()) for p in argv)
    for name, doc in (("old", old), ("new", new)):
        m = doc["meta"]
        sha = m.get("sizes", {}).get("uma-pep A", {}).get("sha256", "?")[:12]
        print(f"{name}: {m['date']} git {m['git']} uma-pep sha256 {sha} load {m['load_before'][0]:.2f}->"
              f"{m['load_after'][0]:.2f}, {m['rounds']}x{m['seconds']:g} s")
    print()
    print(render(rows(old["variants"], new["variants"])))
    print()
    for line in size_lines(old["meta"], new["meta"]):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

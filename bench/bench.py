"""`make bench`: what uma-pep costs per request, in Envoy CPU time, against two floors.

One Envoy under test (2 workers, `--log-level warn`) holds one listener per variant, so every
variant runs in the same process, on the same binary, under the same load on the machine. wrk
(2 threads, 16 connections) loads one listener at a time; variants are interleaved round by round
and each figure is the median over the rounds. The upstream and the AS are two more Envoys
answering with `direct_response` (a Python upstream would be the bottleneck; an Envoy AS keeps
the introspection and ticket paths measuring the filter, not a slow AS).

The main figure is Envoy's own CPU time per request: utime + stime of the Envoy process
(/proc/<pid>/stat, every thread) over a round, divided by the requests wrk completed in it.
Throughput and latency swing with whatever else runs on the machine; CPU per request much less.

  none          no filter
  passthrough   a proxy-wasm module assembled by bench/passthrough.py: no SDK, no hostcall
  sdk           the Rust proxy-wasm SDK reading `:path` (bench/sdk-floor): the floor uma-pep is
                measured against ("over SDK")
  unmatched     uma-pep, a path it does not protect
  cached        uma-pep, a valid RPT seen before
  cached_fwd    uma-pep, a valid RPT seen before, with the forwarded identity JWT (`forward`)
  cached_decide uma-pep, `access_tokens: decide` (keycloak): an access token the AS has granted
                before (the token's own answer and the AS's decision both cached)
  cached_r10, cached_r1k, cached_r10k
                as `cached`, with 10, 1,000 and 10,000 resources in the table (a third literal
                uris, a third `{id}` patterns, a third `**` patterns): matching does not grow
                with the table
  none_long, cached_long, cached_r10k_long
                no filter, `cached`, and `cached_r10k`, on a 16 kB path of 8,000 segments under
                the resource: what the filter adds for a long path is linear in its length (a
                quadratic matcher spent about 190 ms of worker CPU on a 58 kB path) and does not
                grow with the table either
  jwt_authn     Envoy's native jwt_authn validating an RS256 JWT (reference)
  introspect    uma-pep, a new token on every request (its own VM, so the flood never evicts
                the cached RPT of `cached`)
  ticket        uma-pep, no token: a 401 with a ticket

`--compare B.wasm` adds B's uma-pep variants to the same Envoy and rounds, and prints A against B.
`--probe` adds the SDK floor making 8 more hostcalls of one kind per request, one listener per kind:
what each kind of hostcall uma-pep makes costs Envoy.
Every run writes its figures as JSON (target/bench/); bench/compare.py diffs two such files.
Then the memory figure: Envoy's RSS before and after `--tokens` distinct tokens."""

from __future__ import annotations

import argparse
import datetime
import gzip
import hashlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import compare  # noqa: E402
import passthrough  # noqa: E402

DEFAULT_WASM = Path(os.environ.get("UMA_PEP_WASM", ROOT / "target/wasm32-wasip1/release/uma_pep.wasm"))
ENVOY_BIN = os.environ.get("ENVOY_BIN", str(ROOT / ".venv/bin/envoy"))
OUT_DIR = ROOT / "target/bench"
SDK_FLOOR_CRATE = HERE / "sdk-floor"
WORKERS = 2
RESOURCE = {"id": "res-bench", "uri": "/bench"}
# As long as a real RPT: a Keycloak or Gluu JWT RPT is about 1 kB, and the filter hashes the token
# of every request, so a short token would hide that cost. No dots: opaque, never a local JWT.
RPT = "bench-rpt-" + "AbCdEfGhIj0123456789_-" * 45
# A long path under the resource: 8,000 segments, 16,006 bytes (Envoy's default header limit is
# 60 KiB). Normalising and matching it must cost the filter time linear in its length.
LONG_PATH = "/bench" + "/a" * 8000


# ---- pure parts (bench/test_bench_units.py) -------------------------------------------------

def parse_proc_stat(text: str) -> int:
    """utime + stime, in clock ticks, from the text of /proc/<pid>/stat. The command name (field 2)
    is in parentheses and may hold spaces or ')', so fields are counted after the last ')'."""
    rest = text[text.rindex(")") + 1:].split()
    # rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    return int(rest[11]) + int(rest[12])


def cpu_us_per_request(ticks: int, clk_tck: int, requests: int) -> float:
    if requests <= 0:
        return float("nan")
    return ticks * 1_000_000 / clk_tck / requests


def parse_wrk(out: str) -> dict:
    """Requests completed, throughput, latency percentiles (ms) and non-2xx count from `wrk --latency`."""
    def ms(label: str) -> float:
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if not rps or not total:
        raise ValueError(f"not wrk output: {out[:200]!r}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"rps": float(rps.group(1)), "p50": ms("50"), "p99": ms("99"), "requests": int(total.group(1)),
            "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": sum(int(g) for g in errors.groups()) if errors else 0}


METRICS = ("cpu_us", "rps", "p50", "p99")


def summarize(rounds: dict[str, list[dict]], floor: str = "sdk", base: str = "none") -> dict[str, dict]:
    """Medians per variant, and the median CPU per request added over the floor and over no filter."""
    out: dict[str, dict] = {}
    for key, runs in rounds.items():
        out[key] = {"median": {m: statistics.median(r[m] for r in runs) for m in METRICS},
                    "rounds": runs}
    for key, s in out.items():
        cpu = s["median"]["cpu_us"]
        s["over_none"] = cpu - out[base]["median"]["cpu_us"] if base in out and key != base else None
        s["over_sdk"] = cpu - out[floor]["median"]["cpu_us"] if floor in out and key != floor else None
    return out


def signed(x: float | None) -> str:
    return "—" if x is None else f"{x:+.1f}"


def table(summary: dict[str, dict], labels: dict[str, str]) -> str:
    lines = ["| variant | Envoy CPU µs/req | over no filter | over SDK floor | req/s | p50 ms | p99 ms "
             "| CPU µs/req per round |",
             "|---|---|---|---|---|---|---|---|"]
    for key, s in summary.items():
        m = s["median"]
        per_round = " / ".join(f"{r['cpu_us']:.1f}" for r in s["rounds"])
        lines.append(f"| {labels.get(key, key)} | {m['cpu_us']:.1f} | {signed(s['over_none'])} | "
                     f"{signed(s['over_sdk'])} | {m['rps']:.0f} | {m['p50']:.3f} | {m['p99']:.3f} | {per_round} |")
    return "\n".join(lines)


# The performance goals, µs of Envoy CPU per request and bytes.
GOAL_UNMATCHED_OVER_SDK = 3.0
GOAL_CACHED_OVER_SDK = 8.0
GOAL_FWD_OVER_CACHED = 2.0
# The cached `decide` path costs no more than the cached RPT path, within what the bench can tell
# apart (medians of one variant move by about a microsecond between runs).
GOAL_DECIDE_OVER_CACHED = 1.0
GOAL_MODULE_BYTES = 1_500_000
# The cached path with 10,000 resources (literals and patterns) within 5% of the one with 10.
GOAL_TABLE_GROWTH_PCT = 5.0
# What a 16 kB path adds to the filter's cost (over what it adds to Envoy with no filter): at most
# 20 µs per kB, so one request at Envoy's default 60 KiB header limit costs a worker about a
# millisecond, as Envoy's own handling of such a path does (the quadratic matcher this replaced:
# 190 ms). Set after measuring the linear code (docs/benchmarks.md), as a bound on the worst case.
GOAL_LONG_PATH_US = 320.0


def goals(summary: dict[str, dict], module_bytes: int | None, prefix: str = "") -> list[str]:
    """One line per goal the figures can judge: the figure, the goal, met or not."""
    def line(name: str, value: float, goal: float, unit: str) -> str:
        verdict = "met" if value <= goal else "NOT met"
        return f"{name:34s} {value:+10.1f} {unit} (goal <= {goal:g}): {verdict}"

    out = []
    med = {k: v["median"]["cpu_us"] for k, v in summary.items()}
    if "sdk" in med and prefix + "unmatched" in med:
        out.append(line("unmatched over SDK floor", med[prefix + "unmatched"] - med["sdk"], GOAL_UNMATCHED_OVER_SDK,
                        "µs"))
    if "sdk" in med and prefix + "cached" in med:
        out.append(line("cached over SDK floor", med[prefix + "cached"] - med["sdk"], GOAL_CACHED_OVER_SDK, "µs"))
    for variant, goal in (("unmatched_nofacts", GOAL_UNMATCHED_OVER_SDK), ("cached_nofacts", GOAL_CACHED_OVER_SDK)):
        if "sdk" in med and prefix + variant in med:
            out.append(line(f"{variant} over SDK floor", med[prefix + variant] - med["sdk"], goal, "µs"))
    if prefix + "cached" in med and prefix + "cached_fwd" in med:
        out.append(line("cached_fwd over cached", med[prefix + "cached_fwd"] - med[prefix + "cached"],
                        GOAL_FWD_OVER_CACHED, "µs"))
    if prefix + "cached" in med and prefix + "cached_decide" in med:
        out.append(line("cached_decide over cached", med[prefix + "cached_decide"] - med[prefix + "cached"],
                        GOAL_DECIDE_OVER_CACHED, "µs"))
    if "cached_r10" in med and "cached_r10k" in med:
        ratio = (med["cached_r10k"] - med["cached_r10"]) / med["cached_r10"] * 100
        out.append(f"{'cached, 10,000 vs 10 resources':34s} {ratio:+10.1f} %  (goal <= {GOAL_TABLE_GROWTH_PCT:g} %): "
                   f"{'met' if ratio <= GOAL_TABLE_GROWTH_PCT else 'NOT met'}")
    if all(k in med for k in ("none", "none_long", prefix + "cached", prefix + "cached_long")):
        extra = (med[prefix + "cached_long"] - med["none_long"]) - (med[prefix + "cached"] - med["none"])
        out.append(line("cached, 16 kB path, filter's extra", extra, GOAL_LONG_PATH_US, "µs"))
    if prefix == "" and "cached_long" in med and "cached_r10k_long" in med:
        ratio = (med["cached_r10k_long"] - med["cached_long"]) / med["cached_long"] * 100
        out.append(f"{'16 kB path, 10,000 vs 1 resource':34s} {ratio:+10.1f} %  (goal <= {GOAL_TABLE_GROWTH_PCT:g} %): "
                   f"{'met' if ratio <= GOAL_TABLE_GROWTH_PCT else 'NOT met'}")
    if module_bytes is not None:
        out.append(f"{'module size':34s} {module_bytes:>10,} B  (goal <= {GOAL_MODULE_BYTES:,}): "
                   f"{'met' if module_bytes <= GOAL_MODULE_BYTES else 'NOT met'}")
    return out


# ---- Envoy configuration ---------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster(name: str, port: int) -> dict:
    return {"name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}


def listener(name: str, port: int, routes: list[dict], http_filters: list[dict]) -> dict:
    return {"name": name, "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": name,
                    "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]},
                    "http_filters": http_filters + [{"name": "envoy.filters.http.router", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}


def direct(path: str, status: int, body: str) -> dict:
    return {"match": {"path": path}, "direct_response": {"status": status, "body": {"inline_string": body}}}


def admin(port: int) -> dict:
    return {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}


def wasm_filter(vm_id: str, path: Path, configuration: str = "", root_id: str = "") -> dict:
    # Each variant its own vm_id: its own VM and shared data, so no variant warms or floods another's caches.
    return {"name": "envoy.filters.http.wasm", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": {"name": vm_id, "root_id": root_id, "failure_policy": "FAIL_CLOSED",
                   "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                     "value": configuration},
                   "vm_config": {"vm_id": vm_id, "runtime": "envoy.wasm.runtime.v8",
                                 "code": {"local": {"filename": str(path)}}}}}}


def many_resources(n: int) -> list[dict]:
    """`n` resources, the bench's own among them: literal uris, `{id}` and `**` patterns."""
    out = [RESOURCE]
    for i in range(n - 1):
        uri = (f"/svc{i}/data", f"/svc{i}/items/{{id}}", f"/svc{i}/files/**")[i % 3]
        out.append({"id": f"res-{i}", "uri": uri, "methods": {"GET": ["protected_get"]}} if i % 2 else
                   {"id": f"res-{i}", "uri": uri})
    return out


def pep_config(as_port: int, **extra) -> str:
    return json.dumps({"issuer": f"http://127.0.0.1:{as_port}", "as_cluster": "uma_as", "client_id": "bench",
                       "client_secret": "bench", "resources": [RESOURCE], **extra})


def jwt_authn_filter(public_jwk: dict) -> dict:
    return {"name": "envoy.filters.http.jwt_authn", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": {"bench": {"issuer": "bench-issuer",
                                "local_jwks": {"inline_string": json.dumps({"keys": [public_jwk]})},
                                "forward": True}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}]}}


def start_envoy(name: str, config: dict, workers: int, workdir: Path) -> subprocess.Popen:
    import requests

    path = workdir / f"{name}.json"
    path.write_text(json.dumps(config))
    log = open(workdir / f"{name}.log", "wb")
    proc = subprocess.Popen([ENVOY_BIN, "-c", str(path), "--concurrency", str(workers), "--disable-hot-restart",
                             "--log-level", "warn", "--base-id", str(free_port())], stdout=log, stderr=log)
    port = config["admin"]["address"]["socket_address"]["port_value"]
    for _ in range(600):
        try:
            if requests.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return proc
        except requests.RequestException:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{name} did not start: {(workdir / f'{name}.log').read_text()[-3000:]}")


def backends(workdir: Path) -> tuple[int, int, list[subprocess.Popen]]:
    """The upstream and the stand-in AS, both Envoy direct_response, one worker each."""
    up_port, as_port = free_port(), free_port()
    issuer = f"http://127.0.0.1:{as_port}"
    far = int(time.time()) + 86400
    discovery = {"issuer": issuer, "token_endpoint": f"{issuer}/token", "permission_endpoint": f"{issuer}/perm",
                 "resource_registration_endpoint": f"{issuer}/rs", "introspection_endpoint": f"{issuer}/introspect"}
    introspection = {"active": True, "exp": far, "iat": int(time.time()), "sub": "bench-user", "client_id": "bench",
                     "permissions": [{"resource_id": RESOURCE["id"], "resource_scopes": ["protected_get"]}]}
    upstream = {"admin": admin(free_port()), "static_resources": {"listeners": [
        listener("up", up_port, [{"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {
            "inline_string": "ok"}}}], [])]}}
    # A Keycloak stand-in under /kc for `access_tokens: decide`: its token endpoint gives the PAT
    # for the client's Basic credentials and a granting decision for a Bearer access token; its
    # introspection knows the token as active with no permission (an access token, not an RPT).
    kc = f"{issuer}/kc"
    kc_discovery = {**discovery, "issuer": kc, "token_endpoint": f"{kc}/token", "permission_endpoint": f"{kc}/perm",
                    "introspection_endpoint": f"{kc}/introspect"}
    decision_route = {"match": {"path": "/kc/token", "headers": [{"name": "authorization",
                                                                   "string_match": {"prefix": "Bearer "}}]},
                      "direct_response": {"status": 200, "body": {"inline_string": json.dumps({"result": True})}}}
    access_token = {"active": True, "exp": far, "iat": int(time.time()), "sub": "bench-user", "azp": "bench-app"}
    fake_as = {"admin": admin(free_port()), "static_resources": {"listeners": [listener("as", as_port, [
        direct("/kc/.well-known/uma2-configuration", 200, json.dumps(kc_discovery)),
        decision_route,
        direct("/kc/token", 200, json.dumps({"access_token": "bench-pat", "expires_in": 86400})),
        direct("/kc/introspect", 200, json.dumps(access_token)),
        direct("/.well-known/uma2-configuration", 200, json.dumps(discovery)),
        direct("/token", 200, json.dumps({"access_token": "bench-pat", "expires_in": 86400})),
        direct("/introspect", 200, json.dumps(introspection)),
        direct("/perm", 201, json.dumps({"ticket": "bench-ticket"})),
    ], [])]}}
    procs = [start_envoy("upstream", upstream, 1, workdir)]
    procs.append(start_envoy("as", fake_as, 1, workdir))
    return up_port, as_port, procs


# ---- the floors --------------------------------------------------------------------------------

def build_sdk_floor(probe: bool = False) -> Path:
    # Its own target dir (one per feature set): never waits on, nor invalidates, the main workspace's build.
    target = OUT_DIR / ("sdk-probe" if probe else "sdk-floor")
    subprocess.run([os.environ.get("CARGO", "cargo"), "build", "--quiet", "--target", "wasm32-wasip1", "--release",
                    "--target-dir", str(target), *(["--features", "probe"] if probe else [])],
                   cwd=SDK_FLOOR_CRATE, check=True)
    return target / "wasm32-wasip1/release/sdk_floor.wasm"


# bench.py --probe: the SDK floor plus PROBE_N hostcalls of one kind per request (bench/sdk-floor, feature
# `probe`); (its CPU - the floor's) / PROBE_N prices one. The kinds uma-pep's hot path makes.
PROBE_N = 8
PROBE_OPS = {"header": "a request header read by name", "map": "the whole header map read",
             "property": "a filter-state property set", "metric": "a counter increment",
             "time": "a clock read", "shared": "a 300-byte shared-data read", "set_header": "a request header set"}


def per_call(summary: dict[str, dict], key: str, floor: str = "sdk", n: int = PROBE_N) -> float:
    return (summary[key]["median"]["cpu_us"] - summary[floor]["median"]["cpu_us"]) / n


def sizes(path: Path) -> dict:
    raw = path.read_bytes()
    return {"path": str(path), "bytes": len(raw), "gzip_bytes": len(gzip.compress(raw, 9, mtime=0)),
            "sha256": hashlib.sha256(raw).hexdigest()}


# ---- measuring -----------------------------------------------------------------------------------

def lua_unique(nonce: str, path: str = "/bench/x") -> str:
    """A wrk script sending a token never sent before: the run's nonce, wrk's thread, a counter (each
    wrk thread has its own Lua state, so without the thread number two threads send the same tokens).
    Also the token flood of tests/e2e/test_token_flood.py."""
    return f"""
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "{path}", {{["Authorization"] = "Bearer t{nonce}-" .. tid .. "-" .. n}})
end
"""


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> int:
    return parse_proc_stat(Path(f"/proc/{pid}/stat").read_text())


def wrk(port: int, path: str, seconds: int, connections: int, headers: dict | None = None,
        script: Path | None = None) -> dict:
    cmd = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--latency"]
    for k, v in (headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    if script:
        cmd += ["-s", str(script)]
    out = subprocess.run(cmd + [f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


def counters(admin_port: int) -> dict[str, int]:
    """uma-pep's counters (summed over every uma-pep VM: Envoy names custom metrics per name, not per VM)."""
    import requests

    text = requests.get(f"http://127.0.0.1:{admin_port}/stats?filter=uma_pep", timeout=5).text
    return {k: int(v) for k, v in re.findall(r"^(\S*uma_pep\.[a-z_]+): (\d+)$", text, re.M)}


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def git_state() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> int:
    import jwt
    import requests
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wasm", type=Path, default=DEFAULT_WASM, help="uma-pep build A (default: $UMA_PEP_WASM "
                        "or target/wasm32-wasip1/release/uma_pep.wasm)")
    parser.add_argument("--compare", type=Path, help="uma-pep build B, measured in the same Envoy and rounds")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=1, help="seconds of unmeasured load per variant first "
                        "(V8 tiers the hot functions up; that compile is CPU too); wrk takes whole seconds")
    parser.add_argument("--tokens", type=int, default=100_000, help="distinct tokens for the memory figure; 0: skip")
    parser.add_argument("--probe", action="store_true", help=f"also price each kind of hostcall uma-pep makes "
                        f"(the SDK floor plus {PROBE_N} of one kind per request)")
    parser.add_argument("--only", help="comma-separated variant keys to measure (default: all)")
    parser.add_argument("--json", type=Path, help="where the figures go (default target/bench/bench-<time>.json, "
                        "copied to target/bench/latest.json)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: apt-get install wrk (make bench does)")

    builds = {"A": args.wasm.resolve()}
    if args.compare:
        builds["B"] = args.compare.resolve()
    for path in builds.values():
        if not path.is_file():
            sys.exit(f"no such wasm: {path}")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    floors = {"passthrough": passthrough.write(OUT_DIR / "passthrough.wasm"), "sdk": build_sdk_floor()}
    probe_wasm = build_sdk_floor(probe=True) if args.probe else None
    module_sizes = {**{f"uma-pep {b}": sizes(p) for b, p in builds.items()},
                    **{k: sizes(p) for k, p in floors.items()}}

    workdir = Path(tempfile.mkdtemp(prefix="uma-pep-bench-"))
    procs: list[subprocess.Popen] = []
    try:
        up_port, as_port, procs = backends(workdir)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        public_jwk.update({"kid": "bench", "alg": "RS256"})
        native_jwt = jwt.encode({"iss": "bench-issuer", "sub": "bench-user", "exp": int(time.time()) + 86400},
                                key, algorithm="RS256", headers={"kid": "bench"})
        forward_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
        scripts = iter(range(1_000_000))

        def unique_tokens() -> Path:
            n = next(scripts)
            lua = workdir / f"unique-{n}.lua"
            lua.write_text(lua_unique(str(n)))
            return lua

        # (listener, http filters) for the front Envoy; variant -> (label, listener, path, headers, script, status)
        listeners: dict[str, list[dict]] = {
            "none": [],
            "passthrough": [wasm_filter("passthrough", floors["passthrough"])],
            "sdk": [wasm_filter("sdk_floor", floors["sdk"])],
            "jwt_authn": [jwt_authn_filter(public_jwk)],
        }
        auth = {"Authorization": f"Bearer {RPT}"}
        variants: dict[str, tuple] = {
            "none": ("no filter", "none", "/bench/x", None, None, 200),
            "passthrough": ("pass-through module (hand-assembled)", "passthrough", "/bench/x", None, None, 200),
            "sdk": ("minimal Rust SDK filter (reads :path)", "sdk", "/bench/x", None, None, 200),
        }
        for b, path in builds.items():
            p = "" if b == "A" else "B."
            tag = "uma-pep" if b == "A" else "uma-pep B"
            listeners[f"{p}pep"] = [wasm_filter(f"uma_pep_{b}", path, pep_config(as_port), "uma_pep")]
            listeners[f"{p}pep_fwd"] = [wasm_filter(f"uma_pep_{b}_fwd", path, pep_config(
                as_port, forward={"alg": "RS256", "key_pem": forward_pem}), "uma_pep")]
            listeners[f"{p}pep_flood"] = [wasm_filter(f"uma_pep_{b}_flood", path, pep_config(as_port), "uma_pep")]
            variants.update({
                f"{p}unmatched": (f"{tag}, unmatched path", f"{p}pep", "/open/x", None, None, 200),
                f"{p}cached": (f"{tag}, cached valid RPT", f"{p}pep", "/bench/x", auth, None, 200),
                f"{p}cached_fwd": (f"{tag}, cached valid RPT + forwarded JWT", f"{p}pep_fwd", "/bench/x", auth,
                                   None, 200),
            })
        # Build A deciding on access tokens (keycloak dialect, the /kc stand-in).
        listeners["pep_decide"] = [wasm_filter("uma_pep_A_decide", builds["A"], pep_config(
            as_port, issuer=f"http://127.0.0.1:{as_port}/kc", as_profile="keycloak",
            access_tokens={"mode": "decide"}), "uma_pep")]
        variants["cached_decide"] = ("uma-pep, access token the AS granted before (decide)", "pep_decide",
                                     "/bench/x", auth, None, 200)
        # Build A with tables of 10, 1,000 and 10,000 resources: the cost of matching.
        for n, tag in ((10, "r10"), (1_000, "r1k"), (10_000, "r10k")):
            listeners[f"pep_{tag}"] = [wasm_filter(f"uma_pep_A_{tag}", builds["A"],
                                                   pep_config(as_port, resources=many_resources(n)), "uma_pep")]
            variants[f"cached_{tag}"] = (f"uma-pep, cached valid RPT, {n:,} resources", f"pep_{tag}", "/bench/x",
                                         auth, None, 200)
        # A 16 kB path: with no filter, with uma-pep and one resource, and with 10,000 resources.
        variants.update({
            "none_long": ("no filter, 16 kB path", "none", LONG_PATH, None, None, 200),
            "cached_long": ("uma-pep, cached valid RPT, 16 kB path", "pep", LONG_PATH, auth, None, 200),
            "cached_r10k_long": ("uma-pep, cached valid RPT, 16 kB path, 10,000 resources", "pep_r10k", LONG_PATH,
                                 auth, None, 200),
        })
        # Build A without the access-log facts (`access_log_facts: false`): what the filter state costs.
        listeners["pep_nofacts"] = [wasm_filter("uma_pep_A_nofacts", builds["A"],
                                                pep_config(as_port, access_log_facts=False), "uma_pep")]
        variants.update({
            "unmatched_nofacts": ("uma-pep, unmatched path, no access-log facts", "pep_nofacts", "/open/x", None,
                                  None, 200),
            "cached_nofacts": ("uma-pep, cached valid RPT, no access-log facts", "pep_nofacts", "/bench/x", auth,
                               None, 200),
        })
        variants["jwt_authn"] = ("Envoy jwt_authn RS256", "jwt_authn", "/bench/x",
                                 {"Authorization": f"Bearer {native_jwt}"}, None, 200)
        for b in builds:
            p = "" if b == "A" else "B."
            tag = "uma-pep" if b == "A" else "uma-pep B"
            variants[f"{p}introspect"] = (f"{tag}, new token each request", f"{p}pep_flood", "/bench/x", None,
                                          unique_tokens, 200)
            variants[f"{p}ticket"] = (f"{tag}, no token (401 + ticket)", f"{p}pep_flood", "/bench/x", None, None,
                                      401)

        if probe_wasm:
            for op, what in PROBE_OPS.items():
                listeners[f"probe_{op}"] = [wasm_filter(f"probe_{op}", probe_wasm, f"{op}*{PROBE_N}")]
                variants[f"probe_{op}"] = (f"SDK floor + {PROBE_N} × {what}", f"probe_{op}", "/bench/x", None,
                                           None, 200)
        if args.only:
            keep = args.only.split(",")
            unknown = [k for k in keep if k not in variants]
            if unknown:
                sys.exit(f"unknown variants {unknown}; known: {', '.join(variants)}")
            variants = {k: v for k, v in variants.items() if k in keep}
        ports = {name: free_port() for name in listeners}
        admin_port = free_port()
        front = start_envoy("front", {"admin": admin(admin_port), "static_resources": {
            "listeners": [listener(name, ports[name], [{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}],
                                   filters) for name, filters in listeners.items()],
            "clusters": [cluster("upstream", up_port), cluster("uma_as", as_port)]}}, WORKERS, workdir)
        procs.append(front)

        # Each variant answers as it should before it is measured (a 401 would be a cheap, wrong figure).
        for key_, (label, lst, path, headers, script, status) in variants.items():
            if script:
                continue
            got = requests.get(f"http://127.0.0.1:{ports[lst]}{path}", headers=headers, timeout=30).status_code
            if got != status:
                raise RuntimeError(f"{key_} ({label}) answered {got}, expected {status}: "
                                   f"{(workdir / 'front.log').read_text()[-3000:]}")

        def run(key_: str, seconds: int) -> dict:
            _, lst, path, headers, script, _ = variants[key_]
            before_c, before_t = counters(admin_port), cpu_ticks(front.pid)
            r = wrk(ports[lst], path, seconds, args.connections, headers, script() if script else None)
            ticks = cpu_ticks(front.pid) - before_t
            after_c = counters(admin_port)
            r["cpu_ticks"] = ticks
            r["cpu_us"] = cpu_us_per_request(ticks, CLK_TCK, r["requests"])
            r["counters"] = {k.rsplit(".", 1)[1]: after_c[k] - before_c.get(k, 0) for k in after_c
                             if after_c[k] != before_c.get(k, 0)}
            return r

        load_before = os.getloadavg()
        idle_t = cpu_ticks(front.pid)
        time.sleep(2)
        idle_ms_per_s = (cpu_ticks(front.pid) - idle_t) * 1000 / CLK_TCK / 2
        print(f"Envoy under test: pid {front.pid}, {WORKERS} workers, {len(listeners)} listeners; idle CPU "
              f"{idle_ms_per_s:.1f} ms/s; load average {load_before[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
        if args.warmup > 0:
            for key_ in variants:
                run(key_, args.warmup)

        rounds: dict[str, list[dict]] = {k: [] for k in variants}
        for rnd in range(args.rounds):
            for key_, (label, *_rest) in variants.items():
                r = run(key_, args.seconds)
                rounds[key_].append(r)
                status = variants[key_][5]
                bad = r["socket_errors"] + (r["non2xx"] if status == 200 else r["requests"] - r["non2xx"])
                note = f"  !! {bad} unexpected answers or socket errors" if bad else ""
                if key_.endswith("cached") or key_.endswith("cached_fwd") or key_.startswith("cached_"):
                    misses = sum(r["counters"].get(c, 0) for c in ("introspections", "jwt_minted", "decisions"))
                    note += f"  !! {misses} introspections/mints: not all cached" if misses else ""
                if key_.endswith("introspect") and r["counters"].get("cache_hits", 0):
                    note += f"  !! {r['counters']['cache_hits']} cache hits: tokens repeated"
                print(f"round {rnd + 1} {key_:16s} {r['cpu_us']:7.1f} µs/req  {r['rps']:8.0f} req/s  "
                      f"p50 {r['p50']:.3f} ms  p99 {r['p99']:.3f} ms  {r['requests']} req{note}", flush=True)
        load_after = os.getloadavg()

        labels = {k: v[0] for k, v in variants.items()}
        summary = summarize(rounds)
        print(f"\nEnvoy CPU per request, medians of {args.rounds} rounds of {args.seconds:g} s, wrk {args.connections} "
              f"connections, Envoy {WORKERS} workers; load average {load_before[0]:.2f} -> {load_after[0]:.2f} "
              f"on {os.cpu_count()} CPUs\n")
        print(table(summary, labels))
        print()
        for name, s in module_sizes.items():
            print(f"{name:12s} {s['bytes']:>10,} bytes, {s['gzip_bytes']:>9,} gzip -9   {s['path']}")
        for b in builds:
            print(f"\nperformance goals, uma-pep {b}:")
            for line in goals(summary, module_sizes[f"uma-pep {b}"]["bytes"], "" if b == "A" else "B."):
                print("  " + line)
        probes = [k for k in summary if k.startswith("probe_")]
        if probes and "sdk" in summary:
            print(f"\nEnvoy CPU per hostcall (probe - SDK floor) / {PROBE_N}:")
            for k in probes:
                print(f"  {PROBE_OPS[k[6:]]:34s} {per_call(summary, k):6.2f} µs")
        if "B" in builds:
            print("\nA (--wasm) against B (--compare), same Envoy, same rounds:\n")
            # Only uma-pep's variants: the floors are the same listeners for both builds.
            a = {k: v for k, v in summary.items() if not k.startswith("B.")}
            b = {k[2:]: v for k, v in summary.items() if k.startswith("B.")}
            print(compare.render(compare.rows(a, b), "A", "B"))

        result = {"meta": {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                           "git": git_state(), "builds": {b: str(p) for b, p in builds.items()},
                           "sizes": module_sizes, "seconds": args.seconds, "rounds": args.rounds,
                           "connections": args.connections, "workers": WORKERS, "cpus": os.cpu_count(),
                           "load_before": load_before, "load_after": load_after, "idle_ms_per_s": idle_ms_per_s,
                           "clk_tck": CLK_TCK},
                  "labels": labels, "variants": summary}
        out = args.json or OUT_DIR / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
        out.parent.mkdir(parents=True, exist_ok=True)

        def save() -> None:
            out.write_text(json.dumps(result, indent=1))
            if not args.json:
                shutil.copyfile(out, OUT_DIR / "latest.json")

        save()
        print(f"\nfigures: {out}  (compare two runs: bench/compare.py OLD.json NEW.json)")

        if args.tokens > 0:
            # Memory: distinct tokens flood the caches; Envoy's RSS must stay bounded.
            before = rss_kb(front.pid)
            sent = 0
            while sent < args.tokens:
                sent += wrk(ports["pep_flood"], "/bench/x", 5, args.connections, script=unique_tokens())["requests"]
            after = rss_kb(front.pid)
            result["memory"] = {"tokens": sent, "rss_kb_before": before, "rss_kb_after": after}
            save()
            print(f"\nmemory: {sent} distinct tokens; Envoy RSS {before / 1024:.1f} MiB before, {after / 1024:.1f} "
                  f"MiB after (+{(after - before) / 1024:.1f} MiB), cache_slots=8192 per shared cache, 10000 "
                  "entries per worker map")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

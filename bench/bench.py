"""`make bench`: what uma-pep costs, side by side in one run, as ratios.

Every variant runs through the same Envoy binary with 2 workers, loaded by wrk from a separate
process; the upstream is another Envoy answering with `direct_response` (a Python upstream
would be the bottleneck). The AS is also an Envoy `direct_response` stand-in (fixed discovery,
PAT, introspection and ticket answers), so that the introspection and ticket paths measure the
filter, not a slow AS. Variants, interleaved and repeated so that noise shows:

  a  no filter
  b  the filter, unmatched path (its minimal cost)
  c  the filter, a valid RPT seen before (the hot path)
  d  Envoy's native jwt_authn validating an RS256 JWT (reference)
  e  the filter, a new token on every request (introspection path)
  f  the filter, no token (ticket path)

Then the memory figure: Envoy's RSS before and after 100,000 distinct tokens."""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests/e2e")]

import jwt  # noqa: E402
import requests  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

from harness import ENVOY_BIN, WASM, free_port  # noqa: E402

WORKERS = 2
RESOURCE = {"id": "res-bench", "uri": "/bench"}


def cluster(name: str, port: int) -> dict:
    return {"name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}


def listener(port: int, routes: list[dict], http_filters: list[dict]) -> dict:
    return {"name": f"l{port}", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": f"l{port}",
                    "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]},
                    "http_filters": http_filters + [{"name": "envoy.filters.http.router", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}


def direct(path: str, status: int, body: str) -> dict:
    return {"match": {"path": path}, "direct_response": {"status": status, "body": {"inline_string": body}}}


def start_envoy(name: str, config: dict, workers: int, workdir: Path) -> subprocess.Popen:
    path = workdir / f"{name}.json"
    path.write_text(json.dumps(config))
    log = open(workdir / f"{name}.log", "wb")
    proc = subprocess.Popen([ENVOY_BIN, "-c", str(path), "--concurrency", str(workers), "--disable-hot-restart",
                             "--log-level", "warn", "--base-id", str(free_port())], stdout=log, stderr=log)
    admin = config["admin"]["address"]["socket_address"]["port_value"]
    for _ in range(300):
        try:
            if requests.get(f"http://127.0.0.1:{admin}/ready", timeout=1).status_code == 200:
                return proc
        except requests.RequestException:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not start: {(workdir / f'{name}.log').read_text()[-2000:]}")


def admin(port: int) -> dict:
    return {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}


def backends(workdir: Path) -> tuple[int, int, list[subprocess.Popen]]:
    """The upstream and the stand-in AS, both Envoy direct_response."""
    up_port, as_port = free_port(), free_port()
    issuer = f"http://127.0.0.1:{as_port}"
    far = int(time.time()) + 86400
    discovery = {"issuer": issuer, "token_endpoint": f"{issuer}/token", "permission_endpoint": f"{issuer}/perm",
                 "resource_registration_endpoint": f"{issuer}/rs", "introspection_endpoint": f"{issuer}/introspect"}
    introspection = {"active": True, "exp": far, "iat": int(time.time()), "sub": "bench-user", "client_id": "bench",
                     "permissions": [{"resource_id": RESOURCE["id"], "resource_scopes": ["protected_get"]}]}
    upstream = {"admin": admin(free_port()), "static_resources": {"listeners": [
        listener(up_port, [{"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {
            "inline_string": "ok"}}}], [])]}}
    fake_as = {"admin": admin(free_port()), "static_resources": {"listeners": [listener(as_port, [
        direct("/.well-known/uma2-configuration", 200, json.dumps(discovery)),
        direct("/token", 200, json.dumps({"access_token": "bench-pat", "expires_in": 86400})),
        direct("/introspect", 200, json.dumps(introspection)),
        direct("/perm", 201, json.dumps({"ticket": "bench-ticket"})),
    ], [])]}}
    procs = [start_envoy("upstream", upstream, 1, workdir), start_envoy("as", fake_as, 1, workdir)]
    return up_port, as_port, procs


def front(workdir: Path, name: str, up_port: int, as_port: int, http_filters: list[dict]) -> tuple[int, subprocess.Popen]:
    port = free_port()
    config = {"admin": admin(free_port()), "static_resources": {
        "listeners": [listener(port, [{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}], http_filters)],
        "clusters": [cluster("upstream", up_port), cluster("uma_as", as_port)]}}
    return port, start_envoy(name, config, WORKERS, workdir)


def pep_filter(as_port: int, **extra) -> dict:
    config = {"issuer": f"http://127.0.0.1:{as_port}", "as_cluster": "uma_as", "client_id": "bench",
              "client_secret": "bench", "resources": [RESOURCE], **extra}
    return {"name": "envoy.filters.http.wasm", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": {"name": "uma_pep", "root_id": "uma_pep", "failure_policy": "FAIL_CLOSED",
                   "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                     "value": json.dumps(config)},
                   "vm_config": {"vm_id": "uma_pep", "runtime": "envoy.wasm.runtime.v8",
                                 "code": {"local": {"filename": str(WASM)}}}}}}


def jwt_authn_filter(public_jwk: dict) -> dict:
    return {"name": "envoy.filters.http.jwt_authn", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": {"bench": {"issuer": "bench-issuer",
                                "local_jwks": {"inline_string": json.dumps({"keys": [public_jwk]})},
                                "forward": True}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}]}}


LUA_UNIQUE = """
local n = 0
local id = tostring(math.random(1, 1e9))
request = function()
  n = n + 1
  return wrk.format("GET", "/bench/x", {["Authorization"] = "Bearer t" .. id .. "x" .. n})
end
"""


def wrk(port: int, path: str, seconds: int, connections: int, headers: dict | None = None,
        script: Path | None = None) -> dict:
    cmd = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--latency"]
    for k, v in (headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    if script:
        cmd += ["-s", str(script)]
    out = subprocess.run(cmd + [f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True).stdout

    def ms(label: str) -> float:
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    total = int(re.search(r"(\d+) requests in", out).group(1))
    return {"rps": rps, "p50": ms("50"), "p99": ms("99"), "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "requests": total}


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=100_000)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="uma-pep-bench-"))
    procs: list[subprocess.Popen] = []
    try:
        up_port, as_port, procs = backends(workdir)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        public_jwk.update({"kid": "bench", "alg": "RS256"})
        native_jwt = jwt.encode({"iss": "bench-issuer", "sub": "bench-user", "exp": int(time.time()) + 86400},
                                key, algorithm="RS256", headers={"kid": "bench"})

        fronts = {}
        for name, filters in [("plain", []), ("pep", [pep_filter(as_port)]), ("jwt_authn", [jwt_authn_filter(public_jwk)])]:
            port, proc = front(workdir, name, up_port, as_port, filters)
            procs.append(proc)
            fronts[name] = (port, proc)
        lua = workdir / "unique.lua"
        lua.write_text(LUA_UNIQUE)

        pep_port = fronts["pep"][0]
        warm = requests.get(f"http://127.0.0.1:{pep_port}/bench/x", headers={"Authorization": "Bearer bench-rpt"},
                            timeout=5)
        assert warm.status_code == 200, warm.status_code
        assert requests.get(f"http://127.0.0.1:{pep_port}/bench/x", timeout=5).status_code == 401

        variants = {
            "a": ("no filter", lambda: wrk(fronts["plain"][0], "/bench/x", args.seconds, args.connections)),
            "b": ("filter, unmatched path", lambda: wrk(pep_port, "/open/x", args.seconds, args.connections)),
            "c": ("filter, cached RPT", lambda: wrk(pep_port, "/bench/x", args.seconds, args.connections,
                                                    {"Authorization": "Bearer bench-rpt"})),
            "d": ("native jwt_authn RS256", lambda: wrk(fronts["jwt_authn"][0], "/bench/x", args.seconds,
                                                        args.connections, {"Authorization": f"Bearer {native_jwt}"})),
            "e": ("filter, new token each request", lambda: wrk(pep_port, "/bench/x", args.seconds, args.connections,
                                                                script=lua)),
            "f": ("filter, no token (ticket)", lambda: wrk(pep_port, "/bench/x", args.seconds, args.connections)),
        }
        results: dict[str, list[dict]] = {k: [] for k in variants}
        for rnd in range(args.rounds):
            for key_, (label, run) in variants.items():
                r = run()
                results[key_].append(r)
                print(f"round {rnd + 1} {key_} {label:32s} {r['rps']:9.0f} req/s  p50 {r['p50']:.3f} ms  "
                      f"p99 {r['p99']:.3f} ms  non-2xx {r['non2xx']}", flush=True)

        med = {k: {m: statistics.median(r[m] for r in v) for m in ("rps", "p50", "p99")} for k, v in results.items()}
        print("\n| variant | req/s (median) | p50 ms | p99 ms | req/s per round |")
        print("|---|---|---|---|---|")
        for k, (label, _) in variants.items():
            rounds = " / ".join(f"{r['rps']:.0f}" for r in results[k])
            print(f"| {k} {label} | {med[k]['rps']:.0f} | {med[k]['p50']:.3f} | {med[k]['p99']:.3f} | {rounds} |")
        print(f"\nc/b = {med['c']['rps'] / med['b']['rps']:.3f}   c/a = {med['c']['rps'] / med['a']['rps']:.3f}   "
              f"c/d = {med['c']['rps'] / med['d']['rps']:.3f}   "
              f"added p99 of c over a = {med['c']['p99'] - med['a']['p99']:.3f} ms")

        # Memory: distinct tokens flood the caches; Envoy's RSS must stay bounded.
        pid = fronts["pep"][1].pid
        before = rss_kb(pid)
        sent = 0
        while sent < args.tokens:
            sent += wrk(pep_port, "/bench/x", 5, args.connections, script=lua)["requests"]
        after = rss_kb(pid)
        print(f"\nmemory: {sent} distinct tokens; Envoy RSS {before / 1024:.1f} MiB before, {after / 1024:.1f} MiB "
              f"after (+{(after - before) / 1024:.1f} MiB), cache_slots=8192 per shared cache, 10000 entries "
              "per worker map")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())

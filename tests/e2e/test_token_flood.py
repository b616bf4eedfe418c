"""End to end: a flood of more than 100,000 distinct bearer tokens through real Envoy (two
workers) keeps Envoy's memory bounded. Every token is new, so every request costs an
introspection and leaves a cache entry behind: the caches must evict (fixed shared-data slots,
a bounded map per worker), never grow with the flood.

The AS and the upstream are one Envoy answering with `direct_response` (devas, in Python, would
be the bottleneck): it vouches for every token, the worst case for the caches, since a refused
token would be cached the same way. wrk sends the flood (the bench's script: a token never sent
before on every request). Loopback only, about a minute.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import requests

from support.envoy import Envoy
from support.processes import ROOT

TOKENS = 100_000
WARM_UP_TOKENS = 30_000
# The caches are full after the warm-up; the rest of the flood may not add more than this.
RSS_GROWTH_LIMIT_MIB = 16
RESOURCE = {"id": "res-flood", "uri": "/flood"}


def _load_bench():
    spec = importlib.util.spec_from_file_location("uma_pep_bench_for_flood", ROOT / "bench/bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The bench's Envoy helpers (listener, direct response, admin) and its wrk script and parser.
bench = _load_bench()


class StandInAs(Envoy):
    """One Envoy, one listener: the AS's endpoints (discovery, the PAT, introspection granting
    `res-flood` to any token, a ticket) and, for every other path, the upstream's 200."""

    def __init__(self):
        super().__init__(None, 0, 0, with_filter=False)

    def _bootstrap(self, filter_json, as_port, upstream_port, with_filter) -> dict:
        issuer = f"http://127.0.0.1:{self.port}"
        far = int(time.time()) + 86400
        discovery = {"issuer": issuer, "token_endpoint": f"{issuer}/token",
                     "permission_endpoint": f"{issuer}/perm",
                     "resource_registration_endpoint": f"{issuer}/rs",
                     "introspection_endpoint": f"{issuer}/introspect"}
        introspection = {"active": True, "exp": far, "iat": int(time.time()), "sub": "flood-user",
                         "client_id": "flood",
                         "permissions": [{"resource_id": RESOURCE["id"], "resource_scopes": ["protected_get"]}]}
        routes = [
            bench.direct("/.well-known/uma2-configuration", 200, json.dumps(discovery)),
            bench.direct("/token", 200, json.dumps({"access_token": "flood-pat", "expires_in": 86400})),
            bench.direct("/introspect", 200, json.dumps(introspection)),
            bench.direct("/perm", 201, json.dumps({"ticket": "flood-ticket"})),
            {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}},
        ]
        return {"admin": bench.admin(self.admin_port),
                "static_resources": {"listeners": [bench.listener("stand_in", self.port, routes, [])]}}


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) / 1024


def test_a_flood_of_distinct_tokens_keeps_envoy_memory_bounded(envoy_factory, tmp_path):
    assert shutil.which("wrk"), "wrk is missing: make deb-tools installs it"
    stand_in = StandInAs()
    try:
        config = {"issuer": f"http://127.0.0.1:{stand_in.port}", "as_cluster": "uma_as", "as_profile": "uma2",
                  "client_id": "flood", "client_secret": "flood", "timeout_ms": 2000, "resources": [RESOURCE]}
        envoy = envoy_factory(config, stand_in.port, stand_in.port, concurrency=2)
        assert requests.get(envoy.url("/flood/x"), headers={"Authorization": "Bearer first"},
                            timeout=10).status_code == 200

        def flood(seconds: int, nonce: str) -> dict:
            script = tmp_path / f"flood-{nonce}.lua"
            script.write_text(bench.lua_unique(nonce, "/flood/x"))
            out = subprocess.run(["wrk", "-t", "2", "-c", "16", "-d", f"{seconds}s", "-s", str(script),
                                  envoy.url("/flood/x")], capture_output=True, text=True, check=True).stdout
            return bench.parse_wrk(out)

        # The warm-up fills the caches: 8,192 shared slots per cache, 10,000 entries in each
        # worker's map (two workers: 20,000 tokens at least).
        warm_rounds = []
        while sum(r["requests"] for r in warm_rounds) < WARM_UP_TOKENS and len(warm_rounds) < 20:
            warm_rounds.append(flood(5, f"warm{len(warm_rounds)}"))
        warm = {"requests": sum(r["requests"] for r in warm_rounds),
                "non2xx": sum(r["non2xx"] for r in warm_rounds),
                "socket_errors": sum(r["socket_errors"] for r in warm_rounds)}
        before = rss_mib(envoy.proc.pid)
        sent, rounds = [], 0
        while sum(r["requests"] for r in sent) < TOKENS and rounds < 20:
            sent.append(flood(5, f"r{rounds}"))
            rounds += 1
        after = rss_mib(envoy.proc.pid)
        total = sum(r["requests"] for r in sent)
        counters = envoy.counters()
        print(f"\ntoken flood: {warm['requests']} warm-up + {total} distinct tokens; Envoy RSS "
              f"{before:.1f} MiB after the warm-up, {after:.1f} MiB at the end ({after - before:+.1f} MiB); "
              f"{counters.get('introspections', 0)} introspections")
        assert total >= TOKENS, f"only {total} requests in {rounds} rounds"
        # Every request was answered as a valid token's should be: forwarded, once introspected.
        assert all(r["non2xx"] == 0 and r["socket_errors"] == 0 for r in [warm, *sent]), [warm, *sent]
        assert counters.get("introspections", 0) >= warm["requests"] + total
        assert after - before < RSS_GROWTH_LIMIT_MIB, (before, after)
        # Still serving, and the caches still work: a token seen twice is introspected once.
        again = {"Authorization": "Bearer seen-twice"}
        assert requests.get(envoy.url("/flood/y"), headers=again, timeout=10).status_code == 200
        n = envoy.counters().get("introspections", 0)
        assert requests.get(envoy.url("/flood/y"), headers=again, timeout=10).status_code == 200
        assert envoy.counters().get("introspections", 0) == n
    finally:
        stand_in.stop()

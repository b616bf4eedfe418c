"""End to end, under steady load through real Envoy: the AS flaps (500s, slow answers, dropped
connections, garbage) and pepctl is killed (SIGKILL) and restarted while the filter polls its
table. Whatever happens:

* nothing is forwarded without a valid decision (requests with no token or a random token never
  reach the upstream; a 403 always carries the UMA Warning, a 503 its Retry-After),
* every request ends within the filter's timeout plus a bound,
* Envoy's memory stays bounded,
* service resumes within a bound once the AS is well again.

Bounded in time (about 25 s of load) and in requests; loopback only. The AS is not restarted:
devas keeps its registrations in memory, which a real AS restart would not lose.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from support.echo import Echo
from support.load import Load, check_fails_closed
from support.envoy import RenderedEnvoy
from support.pepctl import write_seed
from support.processes import free_port

TIMEOUT_MS = 1000
# A request may wait for the session and then for its own call: two timeouts, and some slack
# for a loaded 2-core machine.
MAX_LATENCY_S = 2 * TIMEOUT_MS / 1000 + 3.0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("devas", ["uma2"], indirect=True)
def test_faults_under_load_never_forward_without_a_decision(pepctl, devas, tmp_path):
    pepctl.use_seeded_client()
    pepctl.run("resources", "apply", "-f", str(write_seed(tmp_path / "seed.json", [
        {"name": "Static", "description": "s", "resource_uri": "/static", "scopes": [],
         "default_owner": "alice-0001"}])))
    echo = Echo()
    pepctl_port = free_port()
    server = pepctl.serve(listen=f"127.0.0.1:{pepctl_port}")
    envoy = None
    try:
        listen, admin = free_port(), free_port()
        config = pepctl.render_envoy(echo.port, listen, admin, "--sync-url", server.base,
                                     "--sync-interval-s", "1", "--filter-timeout-ms", str(TIMEOUT_MS))
        path = tmp_path / "envoy.json"
        path.write_text(config)
        envoy = RenderedEnvoy(path, listen, admin)
        base = f"http://127.0.0.1:{listen}"
        table = requests.get(f"{server.base}/filter-config", timeout=10).json()["resources"]
        (rid,) = [r["id"] for r in table if r["uri"] == "/static"]
        perms = [{"resource_id": rid, "resource_scopes": ["protected_get"]}]
        assert requests.get(f"{base}/static/warm", timeout=10).status_code == 401
        rss_before = rss_kib(envoy.proc.pid)

        def auth(kind: str, n: int) -> str | None:
            if kind == "valid":
                # A fresh RPT each time: every request needs the AS (a cached one would not).
                return f"Bearer {devas.mint_rpt('alice-0001', perms)}"
            if kind == "random":
                return f"Bearer random-{n}-{time.time_ns()}"
            return None

        load = Load(base, "/static", ["valid", "valid", "none", "random"], auth)
        try:
            time.sleep(2)
            devas.fault("introspection", "status500")
            time.sleep(2)
            devas.clear_faults()
            devas.fault("introspection", "delay", delay_ms=3 * TIMEOUT_MS)
            time.sleep(1)
            server.proc.proc.kill()  # pepctl dies mid-poll, no goodbye
            time.sleep(2)
            devas.clear_faults()
            devas.fault("introspection", "drop")
            devas.fault("permission", "status500")
            time.sleep(2)
            devas.clear_faults()
            devas.fault("introspection", "garbage")
            devas.fault("permission", "drop")
            server = pepctl.serve(listen=f"127.0.0.1:{pepctl_port}")
            time.sleep(2)
            devas.clear_faults()
            devas.fault("discovery", "status500")
            devas.fault("token", "status500")
            time.sleep(2)
            devas.clear_faults()
            healed = time.time()
            time.sleep(6)
        finally:
            load.stop()
        results = load.results

        # 1-2. Nothing was forwarded without a decision (every allowed request reached the
        # upstream once); every refusal says what it is; bounded waits.
        forwarded = [e["path"] for e in echo.log()]
        check_fails_closed(results, forwarded, MAX_LATENCY_S)
        allowed = len(forwarded)
        # 3. Bounded memory (a few thousand requests; the caches are bounded by design).
        growth_mib = (rss_kib(envoy.proc.pid) - rss_before) / 1024
        assert growth_mib < 64, f"Envoy grew {growth_mib:.1f} MiB"
        # 4. Service resumed once the AS was well: valid requests allowed again within a bound.
        after = [(r.status, r.took) for r in results if r.kind == "valid"]
        assert any(status == 200 for status, _ in after[-10:]), after[-10:]
        assert len(results) > 100, len(results)
        # The faults were felt (else this test proves nothing): AS failures answered 403 + Warning.
        assert sum(1 for r in results if r.status == 403) > 10
        print(f"{len(results)} requests, {allowed} allowed, healed at +{time.time() - healed:.1f}s before the end, "
              f"Envoy +{growth_mib:.1f} MiB")
    finally:
        if envoy is not None:
            envoy.stop()
        server.stop()
        echo.stop()

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

import itertools
import threading
import time
from pathlib import Path

import pytest
import requests

from support.echo import Echo
from support.envoy import RenderedEnvoy
from support.pepctl import write_seed
from support.processes import free_port

TIMEOUT_MS = 1000
# A request may wait for the session and then for its own call: two timeouts, and some slack
# for a loaded 2-core machine.
MAX_LATENCY_S = 2 * TIMEOUT_MS / 1000 + 3.0
ALLOWED = {200, 401, 403, 503}


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

        results: list[tuple[str, int, float, dict]] = []
        lock = threading.Lock()
        stop = threading.Event()
        counter = itertools.count()

        def load(kind: str) -> None:
            while not stop.is_set():
                n = next(counter)
                headers = {}
                if kind == "valid":
                    # A fresh RPT each time: every request needs the AS (a cached one would not).
                    headers["Authorization"] = f"Bearer {devas.mint_rpt('alice-0001', perms)}"
                elif kind == "random":
                    headers["Authorization"] = f"Bearer random-{n}-{time.time_ns()}"
                start = time.time()
                try:
                    r = requests.get(f"{base}/static/{kind}-{n}", headers=headers, timeout=15)
                    outcome = (r.status_code, {k.lower(): v for k, v in r.headers.items()})
                except requests.RequestException as e:
                    outcome = (0, {"error": str(e)})
                with lock:
                    results.append((kind, outcome[0], time.time() - start, outcome[1]))

        threads = [threading.Thread(target=load, args=(k,)) for k in ("valid", "valid", "none", "random")]
        for t in threads:
            t.start()
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
            stop.set()
            for t in threads:
                t.join(timeout=30)

        # 1. Nothing was forwarded without a decision; every refusal says what it is.
        forwarded = [e["path"] for e in echo.log()]
        assert not [p for p in forwarded if "/none-" in p or "/random-" in p], forwarded[:20]
        assert {status for _, status, _, _ in results} <= ALLOWED, \
            sorted({(kind, status, str(h)[:200]) for kind, status, _, h in results if status not in ALLOWED})
        for kind, status, _, headers in results:
            if status == 403:
                assert "warning" in headers, (kind, headers)
            if status == 503:
                assert headers.get("retry-after") == "1", (kind, headers)
            if kind != "valid":
                assert status != 200, (kind, headers)
        # Every allowed request reached the upstream once.
        allowed = sum(1 for kind, status, _, _ in results if status == 200)
        assert len(forwarded) == allowed
        # 2. Bounded waits.
        slow = sorted(took for _, _, took, _ in results if took > MAX_LATENCY_S)
        assert not slow, f"{len(slow)} requests took longer than {MAX_LATENCY_S} s: {slow[-5:]}"
        # 3. Bounded memory (a few thousand requests; the caches are bounded by design).
        growth_mib = (rss_kib(envoy.proc.pid) - rss_before) / 1024
        assert growth_mib < 64, f"Envoy grew {growth_mib:.1f} MiB"
        # 4. Service resumed once the AS was well: valid requests allowed again within a bound.
        after = [(status, took) for kind, status, took, _ in results if kind == "valid"]
        assert any(status == 200 for status, _ in after[-10:]), after[-10:]
        assert len(results) > 100, len(results)
        # The faults were felt (else this test proves nothing): AS failures answered 403 + Warning.
        assert sum(1 for _, status, _, _ in results if status == 403) > 10
        print(f"{len(results)} requests, {allowed} allowed, healed at +{time.time() - healed:.1f}s before the end, "
              f"Envoy +{growth_mib:.1f} MiB")
    finally:
        if envoy is not None:
            envoy.stop()
        server.stop()
        echo.stop()

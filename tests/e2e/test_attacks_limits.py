"""End to end: limits an attacker (or a broken AS) must not push past, in real Envoy.

* a flood of distinct valid RPTs must not lock fresh RPTs out of `rpt_max_uses` counting,
* a PAT lifetime of any size from the AS must give a PAT that is used (no overflow),
* a huge AS answer must not be buffered whole (with the runtime pepctl renders): bounded memory,
  fail closed, Envoy stays up,
* a flood of fresh tokens must not flood the AS: introspections in flight are capped per worker,
  the excess gets a fast 503 with `Retry-After`, and nothing is forwarded.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
import yaml

from support.devas import ALL_SCOPES, RESOURCES
from support.envoy import Envoy, envoy_config, filter_config
from support.processes import ROOT


def get(envoy, path: str, token: str | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.get(envoy.url(path), headers=headers, timeout=15)


def rpt(devas, sub: str) -> str:
    return devas.mint_rpt(sub, [{"resource_id": "res-alice", "resource_scopes": ALL_SCOPES}])


def pat_requests(devas) -> list[dict]:
    return [c for c in devas.calls("token") if c.get("grant_type") == "client_credentials"]


# ---- use-count slots -------------------------------------------------------------------

def test_a_flood_of_distinct_rpts_cannot_lock_out_a_fresh_one(envoy_factory, uma2_as, echo):
    # The minimum of 16 slots; each used to hold one live count, so after 16 (at most 64 with
    # the probe window) other RPTs every fresh RPT was refused as "RPT used up" on first use.
    config = filter_config(uma2_as, resources=RESOURCES, rpt_max_uses=2, cache_slots=16)
    envoy = envoy_factory(config, uma2_as.port, echo.port, concurrency=2)
    flood = [rpt(uma2_as, f"flood-{i}") for i in range(60)]
    statuses = [get(envoy, "/alice", t).status_code for t in flood]
    assert statuses == [200] * 60
    fresh = rpt(uma2_as, "fresh-user")
    first = get(envoy, "/alice", fresh)
    assert first.status_code == 200, first.headers.get("www-authenticate")
    # Counting stays exact: an RPT used twice is refused the third time, flood or not.
    assert get(envoy, "/alice", fresh).status_code == 200
    third = get(envoy, "/alice", fresh)
    assert third.status_code == 401
    assert get(envoy, "/alice", flood[0]).status_code == 200
    assert get(envoy, "/alice", flood[0]).status_code == 401
    assert len(echo.log()) == 60 + 2 + 1


# ---- introspections in flight -----------------------------------------------------------

def test_a_flood_of_fresh_tokens_is_shed_not_sent_to_the_as(envoy_factory, uma2_as, echo):
    # Slow enough that every introspection is still in flight when the flood has arrived, well
    # within the filter's timeout (the introspected tokens are inactive: a ticket and 401).
    uma2_as.fault("introspection", "delay", delay_ms=2500)
    config = filter_config(uma2_as, resources=RESOURCES, max_introspections_in_flight=3, timeout_ms=8000)
    envoy = envoy_factory(config, uma2_as.port, echo.port, concurrency=2)
    assert get(envoy, "/alice").status_code == 401  # the session is up before the flood
    results: list[tuple[int, str | None, float]] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        start = time.time()
        r = get(envoy, "/alice", f"flood-token-{i}")
        with lock:
            results.append((r.status_code, r.headers.get("retry-after"), time.time() - start))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    shed = [r for r in results if r[0] == 503]
    introspected = uma2_as.calls("introspection")
    # Two workers, three each: the AS sees six at most; the others are refused at once.
    assert len(introspected) <= 6, len(introspected)
    assert len(shed) >= 40 - 6, sorted(r[0] for r in results)
    assert all(retry == "1" for _, retry, _ in shed)
    assert all(took < 2.0 for _, _, took in shed), sorted(took for _, _, took in shed)
    assert {status for status, _, _ in results} <= {401, 503}
    assert echo.log() == []
    assert envoy.counters().get("overloaded", 0) == len(shed)


# ---- PAT lifetime -------------------------------------------------------------------

@pytest.mark.parametrize("lifetime", [3_000_000_000_000_000, 10**17, 10**20])
def test_a_pat_of_any_lifetime_is_used(envoy_factory, uma2_as, echo, lifetime):
    # `expires_in` > 2.3e15 s overflowed the PAT's times: refreshed on every tick, or (wrapped
    # into the past) never used, so every request waited for a PAT and failed.
    uma2_as.configure(pat_lifetime_s=lifetime)
    envoy = envoy_factory(filter_config(uma2_as, resources=RESOURCES), uma2_as.port, echo.port)
    statuses = []
    for _ in range(10):
        statuses.append(get(envoy, "/bob/x").status_code)
        time.sleep(0.2)
    assert statuses == [401] * 10, statuses
    assert len(pat_requests(uma2_as)) == 1
    assert len(uma2_as.calls("permission")) == 10


# ---- AS answer size ------------------------------------------------------------------

BIG = 40 * 1024 * 1024
BIG_PATH = "/big/introspect"


class BigIntrospectionAs:
    """An AS in front of devas that answers introspection with 40 MiB (a broken AS): every
    other call is passed to devas."""

    def __init__(self, devas):
        self.devas = devas
        self.sent = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                self._handle()

            def do_POST(self):
                self._handle()

            def _handle(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.path == BIG_PATH:
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(BIG))
                    self.end_headers()
                    chunk = b" " * (1024 * 1024)
                    try:
                        for _ in range(BIG // len(chunk)):
                            self.wfile.write(chunk)
                            outer.sent += len(chunk)
                    except OSError:
                        pass
                    self.close_connection = True
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                r = requests.request(self.command, outer.devas.base + self.path, data=body, headers=headers,
                                     timeout=10)
                self.send_response(r.status_code)
                for k, v in r.headers.items():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        self.send_header(k, v)
                self.send_header("content-length", str(len(r.content)))
                self.end_headers()
                self.wfile.write(r.content)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def shipped_runtime() -> dict:
    """The `layered_runtime` of the shipped configuration, as `pepctl render envoy` writes it
    (tests/pepctl/test_render_shipped.py keeps the file equal to the render)."""
    return yaml.safe_load((ROOT / "envoy/keycloak.yaml").read_text())["layered_runtime"]


class CappedEnvoy(Envoy):
    """Envoy with the runtime `pepctl render envoy` gives it (`runtime`), or Envoy's defaults
    (`None`)."""

    def __init__(self, *args, runtime: dict | None, **kw):
        self.runtime = runtime
        super().__init__(*args, **kw)

    def _bootstrap(self, filter_json, as_port, upstream_port, with_filter):
        bootstrap = envoy_config(filter_json, self.port, self.admin_port, as_port, upstream_port,
                                 with_filter=with_filter)
        if self.runtime is not None:
            bootstrap["layered_runtime"] = self.runtime
        return bootstrap


def peak_rss_kib(envoy) -> int:
    for line in Path(f"/proc/{envoy.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def flood_with_huge_answers(uma2_as, echo, runtime: dict | None) -> tuple[list, float, bool, int]:
    """Four requests whose introspection answers are 40 MiB each: their answers, how much
    Envoy's peak RSS grew (MiB), whether Envoy is still up, and a later request's status."""
    big_as = BigIntrospectionAs(uma2_as)
    config = filter_config(uma2_as, resources=RESOURCES, timeout_ms=3000, local_jwt_validation=False,
                           endpoints={"introspection": BIG_PATH})
    envoy = CappedEnvoy(config, big_as.port, echo.port, concurrency=2, runtime=runtime)
    try:
        # Session first (discovery and PAT through the proxy), then the peak before the test.
        assert get(envoy, "/bob/x").status_code == 401
        before = peak_rss_kib(envoy)
        results: list = []
        threads = [threading.Thread(target=lambda t=t: results.append(get(envoy, "/alice", t)))
                   for t in [rpt(uma2_as, f"big-{i}") for i in range(4)]]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        grown_mib = (peak_rss_kib(envoy) - before) / 1024
        return results, grown_mib, envoy.alive(), get(envoy, "/bob/x").status_code
    finally:
        envoy.stop()
        big_as.stop()


@pytest.mark.parametrize("rendered", [True, False], ids=["rendered-runtime", "envoy-defaults"])
def test_a_huge_as_answer_fails_closed_and_envoy_stays_up(uma2_as, echo, rendered):
    results, _, alive, later = flood_with_huge_answers(uma2_as, echo, shipped_runtime() if rendered else None)
    assert len(results) == 4
    for r in results:
        # Fail closed, saying the AS did not answer usably.
        assert r.status_code == 403, (r.status_code, r.text[:200])
        assert r.headers.get("warning", "").startswith("199 - "), r.headers
    assert echo.log() == []
    assert alive and later == 401


def test_a_huge_as_answer_is_not_buffered_whole(uma2_as, echo):
    # With the runtime pepctl renders, Envoy stops each answer at 1 MiB (the most the filter
    # reads) and fails the call. With Envoy's defaults it holds up to 32 MiB per call, whole:
    # four 40 MiB answers grew the peak RSS by 66 to 90 MiB.
    _, grown_mib, _, _ = flood_with_huge_answers(uma2_as, echo, shipped_runtime())
    print(f"\npeak RSS grew by {grown_mib:.1f} MiB for four 40 MiB answers")
    assert grown_mib < 16, f"Envoy's peak RSS grew by {grown_mib:.0f} MiB"

"""The AS restarted under steady load, in real Envoy: devas is stopped (SIGTERM) and started again
on its state (`--state`: its realm, registrations, keys and issued tokens, as a real server's
database keeps them) on the same address while requests flow. Whatever happens:

* nothing is forwarded without a valid decision (no token or a random token never reaches the
  upstream; a 403 carries the UMA Warning, a 503 its Retry-After);
* every request ends within the filter's timeout plus a bound;
* the outage is felt (requests that need the AS are refused while it is down);
* service resumes once the AS is back: tickets again, and RPTs, old and new, introspected.

Bounded in time (about 12 s of load) and in requests; loopback only."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from support.devas import RESOURCES, DevAs
from support.echo import Echo
from support.envoy import Envoy, filter_config
from support.load import Load, check_fails_closed
from support.processes import free_port

TIMEOUT_MS = 1000
MAX_LATENCY_S = 2 * TIMEOUT_MS / 1000 + 3.0
PERMS = [{"resource_id": "res-alice", "resource_scopes": ["protected_get"]}]


@pytest.mark.parametrize("profile", ["keycloak", "uma2"])
def test_an_as_restart_under_load_forwards_nothing_undecided_and_service_resumes(profile, tmp_path):
    port, state = free_port(), tmp_path / "devas.state"
    devas = DevAs(profile, port=port, state=state)
    echo = Echo()
    envoy = None
    try:
        envoy = Envoy(filter_config(devas, timeout_ms=TIMEOUT_MS, resources=RESOURCES,
                                    # Every RPT is asked of the AS (Keycloak's would otherwise be
                                    # checked locally, and the outage never felt by them).
                                    local_jwt_validation=False),
                      devas.port, echo.port, concurrency=2)
        # RPTs issued before the restart, each used once: each needs the AS.
        rpts = iter([devas.mint_rpt("alice-0001", PERMS, exp_in=600) for _ in range(400)])
        assert requests.get(f"{envoy.base}/alice/warm", timeout=10).status_code == 401

        lock = threading.Lock()

        def auth(kind: str, n: int) -> str | None:
            if kind == "valid":
                with lock:
                    return f"Bearer {next(rpts)}"  # StopIteration when used up: that thread ends
            if kind == "random":
                return f"Bearer random-{n}-{time.time_ns()}"
            return None

        load = Load(envoy.base, "/alice", ["valid", "none", "random"], auth, pause_s=0.02)
        try:
            time.sleep(3)
            down = time.time()
            devas.stop()  # SIGTERM: devas writes its state and goes
            assert state.exists()
            time.sleep(3)
            restarting = time.time()
            devas = DevAs(profile, port=port, state=state)
            up = time.time()
            time.sleep(6)
        finally:
            load.stop()
        results = load.results

        # 1-2. Nothing was forwarded without a decision; every refusal says what it is; bounded waits.
        forwarded = [e["path"] for e in echo.log()]
        check_fails_closed(results, forwarded, MAX_LATENCY_S)
        # 3. The outage was felt: requests that needed the AS while it was down were refused.
        # (From a second after SIGTERM, when devas has gone, to the restart's spawn.)
        during = [(r.kind, r.status) for r in results if down + 1 < r.started < restarting]
        assert during and all(status in (403, 503) for kind, status in during if kind != "random"), \
            [(kind, status) for kind, status in during if status not in (403, 503)]
        # 4. Service resumed: a ticket for a request without a token, old and new RPTs allowed.
        timeline = [(round(r.started - up, 1), r.kind, r.status, r.headers.get("warning", "")[:80]) for r in results
                    if r.started > up - 0.5 and r.kind != "random"]
        settled = [(r.kind, r.status) for r in results if r.started > up + 2]
        assert settled and all(status == 401 for kind, status in settled if kind == "none"), timeline[:60]
        assert all(status == 200 for kind, status in settled if kind == "valid"), settled[:20]
        fresh = devas.mint_rpt("alice-0001", PERMS)
        assert requests.get(f"{envoy.base}/alice/after", headers={"Authorization": f"Bearer {fresh}"},
                            timeout=10).status_code == 200
        print(f"{len(results)} requests, {len(forwarded)} allowed; down {up - down:.1f} s; "
              f"{len(during)} during the outage, {len(settled)} after it settled")
    finally:
        if envoy is not None:
            envoy.stop()
        echo.stop()
        devas.stop()

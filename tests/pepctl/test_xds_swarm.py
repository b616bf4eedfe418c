"""pepctl's xDS server at scale and with Envoys that do not apply: 1,000 simulated Envoys
(control-plane/examples/xds_swarm.rs, each its own connection and ECDS stream, answering as Envoy
does) hold a subscription; a Resource API write answers once all of them acknowledged its table,
and the time that takes is measured. An Envoy that refuses a table or never answers does not
hold a write forever: the answer comes after --xds-ack-timeout-ms with a Warning that says so."""

from __future__ import annotations

import statistics
import time

import pytest

from support.envoy import WASM
from support.pepctl import PEPCTL, rollout_of, write_seed
from support.processes import Service, free_port

SWARM = PEPCTL.parent / "examples" / "xds_swarm"


@pytest.fixture
def xds_server(pepctl, tmp_path, devas):
    if not SWARM.exists():
        pytest.fail(f"{SWARM} is missing: cargo build -p pepctl --examples")
    pepctl.use_seeded_client()
    pepctl.run("resources", "apply", "-f", str(write_seed(tmp_path / "seed.json", [
        {"name": "Static", "description": "s", "resource_uri": "/static", "scopes": [],
         "default_owner": "alice-0001"}])))
    filter_config = tmp_path / "filter.json"
    filter_config.write_text(pepctl.run("render", "filter-config").stdout)
    started = []

    def start(*extra):
        xds = free_port()
        server = pepctl.serve("--xds-listen", f"127.0.0.1:{xds}", "--xds-filter-config", str(filter_config),
                              "--xds-wasm", str(WASM), *extra)
        started.append(server)
        return server, f"127.0.0.1:{xds}"

    yield start
    for s in started:
        s.stop()


def swarm(address: str, envoys: int, *extra: str) -> Service:
    return Service([str(SWARM), "--address", address, "--envoys", str(envoys), *extra],
                   ready=f"ready {envoys}", timeout=90)


@pytest.mark.parametrize("devas", ["uma2"], indirect=True)
def test_a_write_reaches_a_thousand_envoys_within_a_second(xds_server, devas):
    server, address = xds_server()
    envoys = swarm(address, 1000)
    try:
        # The swarm is ready when every stream got the configuration; their ACKs follow.
        for _ in range(100):
            status = server.request("GET", "/xds-status").json()
            if sum(e["applied"] == status["version"] for e in status["envoys"]) == 1000:
                break
            time.sleep(0.1)
        assert len(status["envoys"]) == 1000
        assert all(e["applied"] == status["version"] for e in status["envoys"]), "every Envoy acknowledged"
        admin = devas.user_token("admin")
        answered = []
        for i in range(5):
            start = time.monotonic()
            r = server.request("POST", "/resources", admin, json={"name": f"Wide{i}", "icon_uri": f"/wide{i}"})
            answered.append(time.monotonic() - start)
            assert r.status_code == 200, r.text
            rollout = rollout_of(r)
            assert (rollout["envoys"], rollout["applied"], rollout["pending"]) == (1000, 1000, 0), rollout
            assert "warning" not in r.headers
        spread = [line for line in envoys.output().splitlines() if line.startswith("version ")]
        assert len(spread) >= 5, envoys.output()[-2000:]
        median = statistics.median(answered)
        print(f"1000 Envoys: write answered (all acknowledged) in {', '.join(f'{a * 1000:.0f}' for a in answered)} ms; "
              f"median {median * 1000:.0f} ms; swarm: {'; '.join(spread)}")
        assert median < 1.0, f"a write took {median:.2f} s (median of 5) to reach 1000 Envoys"
    finally:
        envoys.stop()


@pytest.mark.parametrize("devas", ["uma2"], indirect=True)
def test_an_envoy_that_refuses_or_is_silent_does_not_hold_a_write(xds_server, devas):
    server, address = xds_server("--xds-ack-timeout-ms", "700")
    envoys = swarm(address, 20, "--silent", "1", "--refusing", "1")
    try:
        admin = devas.user_token("admin")
        start = time.monotonic()
        r = server.request("POST", "/resources", admin, json={"name": "Late", "icon_uri": "/late"})
        took = time.monotonic() - start
        assert r.status_code == 200, "the write is done: its answer keeps its status"
        rollout = rollout_of(r)
        assert (rollout["envoys"], rollout["applied"], rollout["refused"], rollout["pending"]) == (20, 18, 1, 1)
        assert 0.7 <= took < 5, took
        warning = r.headers.get("warning", "")
        assert warning.startswith('199 pepctl "') and "refused by 1" in warning and "within 700 ms by 1" in warning
        status = server.request("GET", "/xds-status").json()
        refused = [e for e in status["envoys"] if e["refused"]]
        assert [e["node"] for e in refused] == ["sim-0018"] and refused[0]["refused"]["reason"] == "simulated refusal"
        silent = [e for e in status["envoys"] if e["applied"] is None and not e["refused"]]
        assert [e["node"] for e in silent] == ["sim-0019"]
        assert "not every Envoy applied" in server.proc.output()

        # The silent one goes away: a write no longer waits for it.
        envoys.stop()
        for _ in range(50):
            if not server.request("GET", "/xds-status").json()["envoys"]:
                break
            time.sleep(0.1)
        r = server.request("POST", "/resources", admin, json={"name": "Alone", "icon_uri": "/alone"})
        assert rollout_of(r)["envoys"] == 0 and "warning" not in r.headers
    finally:
        envoys.stop()

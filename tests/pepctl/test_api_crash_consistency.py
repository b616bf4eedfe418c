"""`pepctl serve` killed with SIGKILL while Resource API writes stream in, then started again on
the same port: every write the API acknowledged is in the repository and at the AS, and the
two agree.

A kill while pepctl waits for the AS does not stop the AS, which carries the write out: that
write was never answered. pepctl journals each change before its AS call and settles the
journal at its next start (a create or an update rolled back, a delete finished), so after a
restart the two agree wherever the kill fell. The last three tests open that window on purpose
(the AS holds the request while pepctl is killed) so that each case is deterministic."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

import pytest
import requests

from support.pepctl import Pepctl
from support.processes import free_port

SEED = 20240917
KILLS = 8
WRITES_PER_LIFE = 14


def as_view(devas, rid: str) -> dict | None:
    """What the AS holds for `rid` in either dialect: name, path and scopes, or None."""
    r = devas.as_resource(rid)
    if r.status_code == 404:
        return None
    r.raise_for_status()
    body = r.json()
    uri = body.get("icon_uri") or (body.get("uris") or [None])[0]
    scopes = [s["name"] if isinstance(s, dict) else s for s in body.get("resource_scopes") or []]
    return {"name": body["name"], "uri": uri, "scopes": sorted(scopes)}


def repo_view(resource: dict) -> dict:
    return {"name": resource["name"], "uri": resource["icon_uri"], "scopes": sorted(resource["resource_scopes"])}


class Life:
    """`pepctl serve` on a fixed port, killed and started again."""

    def __init__(self, pepctl: Pepctl):
        self.pepctl = pepctl
        self.port = free_port()
        self.server = pepctl.serve(listen=f"127.0.0.1:{self.port}")
        self.base = self.server.base

    def kill9(self) -> None:
        self.server.proc.kill9()

    def restart(self) -> None:
        # The old socket may linger for a moment after SIGKILL: retry the bind briefly.
        deadline = time.time() + 10
        while True:
            try:
                self.server = self.pepctl.serve(listen=f"127.0.0.1:{self.port}")
                return
            except RuntimeError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        self.server.stop()


@dataclass
class Ledger:
    """What the client knows: each resource's last acknowledged state (None: deleted), and the
    resources a write was sent for whose answer never came (applied or not, nobody knows)."""
    acked: dict[str, dict | None] = field(default_factory=dict)
    uncertain: set[str] = field(default_factory=set)
    # Names of creates sent without an answer (registered at the AS or not: the next start rolls
    # back what was).
    unanswered_creates: set[str] = field(default_factory=set)


def stream(base: str, token: str, rng: random.Random, ledger: Ledger, serial: list[int],
           kill_at: int | None, sending: threading.Event) -> None:
    """Writes in a row (creates, renames and deletes of acknowledged resources) until pepctl
    goes away or WRITES_PER_LIFE are done; `sending` is set as write number `kill_at` starts."""
    session = requests.Session()
    auth = {"Authorization": f"Bearer {token}"}
    for i in range(WRITES_PER_LIFE):
        if i == kill_at:  # at least five writes follow: the kill falls before they are done
            sending.set()
        live = sorted(k for k, v in ledger.acked.items() if v is not None and k not in ledger.uncertain)
        op = rng.choice(["create", "create", "update", "delete"]) if live else "create"
        try:
            if op == "create":
                serial[0] += 1
                n = serial[0]
                want = {"name": f"crash-{n}", "uri": f"/crash/{n}", "scopes": None}
                try:
                    r = session.post(base + "/resources", headers=auth, timeout=10,
                                     json={"name": want["name"], "icon_uri": want["uri"]})
                except requests.RequestException:
                    ledger.unanswered_creates.add(want["name"])
                    raise
                if r.status_code == 200:
                    ledger.acked[r.json()["id"]] = repo_view(r.json())
                elif r.status_code >= 500:
                    ledger.unanswered_creates.add(want["name"])
                continue
            rid = rng.choice(live)
            try:
                if op == "update":
                    r = session.patch(f"{base}/resources/{rid}", headers=auth, timeout=10,
                                      json={"name": f"{ledger.acked[rid]['name']}+"})
                    if r.status_code == 200:
                        ledger.acked[rid] = repo_view(r.json())
                else:
                    r = session.delete(f"{base}/resources/{rid}", headers=auth, timeout=10)
                    if r.status_code == 204:
                        ledger.acked[rid] = None
                if r.status_code >= 500:
                    ledger.uncertain.add(rid)
            except requests.RequestException:
                ledger.uncertain.add(rid)
                raise
        except requests.RequestException:
            return  # pepctl is gone: this life is over


def test_kill9_during_a_stream_of_writes_loses_no_acknowledged_write(pepctl, devas):
    pepctl.use_seeded_client()
    baseline = set(devas.as_resource_ids())
    token = devas.user_token("admin")
    # Two generators: the writer's draws must not depend on when the main thread draws.
    rng, kills = random.Random(SEED), random.Random(SEED + 1)
    life = Life(pepctl)
    ledger, serial = Ledger(), [0]
    try:
        for kill in range(KILLS + 1):
            # The kill falls as a seeded write starts, a seeded few milliseconds into it (a
            # write takes some tens of ms: before, during or after its AS call).
            kill_at = kills.randint(1, WRITES_PER_LIFE - 6) if kill < KILLS else None
            sending = threading.Event()
            writer = threading.Thread(target=stream, args=(life.server.base, token, rng, ledger, serial,
                                                           kill_at, sending))
            writer.start()
            if kill_at is not None:
                assert sending.wait(60), "the stream stopped before the kill"
                time.sleep(kills.uniform(0, 0.04))
                life.kill9()
            writer.join(timeout=60)
            assert not writer.is_alive()
            if kill < KILLS:
                life.restart()

        listed = life.server.request("GET", "/resources", token).json()
        repo = {r["id"]: repo_view(r) for r in listed}
        at_as = set(devas.as_resource_ids()) - baseline
    finally:
        life.stop()

    acked_live = {k: v for k, v in ledger.acked.items() if v is not None}
    assert len(acked_live) >= 5, "the stream wrote something"
    assert len(ledger.uncertain) + len(ledger.unanswered_creates) == KILLS, "each kill cut one write short"
    certain = {k: v for k, v in ledger.acked.items() if k not in ledger.uncertain}
    # Every acknowledged write is in the repository and at the AS, as acknowledged.
    for rid, want in certain.items():
        if want is None:
            assert rid not in repo, f"acknowledged delete of {rid} undone in the repository"
            assert as_view(devas, rid) is None, f"acknowledged delete of {rid} undone at the AS"
        else:
            assert repo.get(rid) == want, (rid, want, repo.get(rid))
            assert as_view(devas, rid) == want, (rid, want, as_view(devas, rid))
    # Each start settled the journal of the life before (an unanswered create rolled back, an
    # unanswered update rolled back, an unanswered delete finished): wherever the kill fell, the
    # repository and the AS now hold the same resources, alike (no open resources here).
    assert set(repo) <= at_as, sorted(set(repo) - at_as)
    strangers = {rid: as_view(devas, rid)["name"] for rid in at_as - set(repo)}
    assert not strangers, f"the AS holds resources pepctl does not know: {strangers}"
    for rid in repo:
        assert as_view(devas, rid) == repo[rid], (rid, repo[rid], as_view(devas, rid))


# ---- one crash in the window between the AS's answer and the repository's write ----------

def _kill_while_the_as_holds(life: Life, devas, send) -> threading.Thread:
    """Sends `send()` on a thread; the AS holds the first resource_set call it gets for 1.5 s,
    then carries it out. pepctl is killed while it waits for that answer, and started again
    once the AS has done the work."""
    devas.fault("resource_set", "delay", times=1, delay_ms=1500)
    seen = len(devas.calls("resource_set"))
    t = threading.Thread(target=lambda: _swallow(send), daemon=True)
    t.start()
    deadline = time.time() + 10
    while len(devas.calls("resource_set")) == seen:
        assert time.time() < deadline, "pepctl never called the AS"
        time.sleep(0.02)
    life.kill9()
    t.join(timeout=15)
    time.sleep(1.8)  # the AS carries out the held request
    life.restart()
    return t


def _swallow(send) -> None:
    try:
        send()
    except requests.RequestException:
        pass


@pytest.fixture
def life(pepctl):
    pepctl.use_seeded_client()
    life = Life(pepctl)
    yield life
    life.stop()


def _state(life: Life, devas, token: str, baseline: set[str]) -> tuple[dict, dict]:
    repo = {r["id"]: repo_view(r) for r in life.server.request("GET", "/resources", token).json()}
    at_as = {rid: as_view(devas, rid) for rid in set(devas.as_resource_ids()) - baseline}
    return repo, at_as


def test_a_crash_after_registering_leaves_no_orphan_at_the_as(life, devas):
    token = devas.user_token("admin")
    baseline = set(devas.as_resource_ids())
    body = {"name": "half-made", "icon_uri": "/half/made"}
    _kill_while_the_as_holds(life, devas, lambda: requests.post(
        life.base + "/resources", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10))
    # The client was never answered: it sends the create again, which must work.
    again = life.server.request("POST", "/resources", token, json=body)
    repo, at_as = _state(life, devas, token, baseline)
    assert again.status_code == 200, again.text
    assert repo == at_as, "the AS and the repository hold the same resources"


def test_a_crash_after_deleting_at_the_as_leaves_the_two_agreeing(life, devas):
    token = devas.user_token("admin")
    baseline = set(devas.as_resource_ids())
    made = life.server.request("POST", "/resources", token, json={"name": "doomed", "icon_uri": "/doomed"})
    assert made.status_code == 200, made.text
    rid = made.json()["id"]
    _kill_while_the_as_holds(life, devas, lambda: requests.delete(
        f"{life.base}/resources/{rid}", headers={"Authorization": f"Bearer {token}"}, timeout=10))
    repo, at_as = _state(life, devas, token, baseline)
    assert repo == at_as, "the AS and the repository hold the same resources"


def test_a_crash_after_updating_at_the_as_leaves_the_two_agreeing(life, devas):
    token = devas.user_token("admin")
    baseline = set(devas.as_resource_ids())
    made = life.server.request("POST", "/resources", token, json={"name": "before", "icon_uri": "/renamed"})
    assert made.status_code == 200, made.text
    rid = made.json()["id"]
    _kill_while_the_as_holds(life, devas, lambda: requests.patch(
        f"{life.base}/resources/{rid}", json={"name": "after"}, headers={"Authorization": f"Bearer {token}"},
        timeout=10))
    repo, at_as = _state(life, devas, token, baseline)
    assert repo == at_as, "the AS and the repository hold the same resources"

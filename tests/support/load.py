"""Steady load through Envoy for the fault tests (tests/pepctl/test_faults_under_load.py,
tests/e2e/test_as_restart.py): one thread per kind of request, each result kept, and the checks
every such test makes — nothing forwarded without a valid decision, every refusal saying what it
is, every request ended within a bound."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from typing import Callable

import requests

ALLOWED = {200, 401, 403, 503}


@dataclass
class Result:
    kind: str
    status: int  # 0: no answer
    took: float
    headers: dict
    started: float


class Load:
    """GETs `{base}{path}/{kind}-{n}` from one thread per kind until `stop()`. `auth(kind, n)`
    gives the request's `Authorization` value (`None`: none; `StopIteration`: that thread ends)."""

    def __init__(self, base: str, path: str, kinds: list[str], auth: Callable[[str, int], str | None],
                 pause_s: float = 0.0):
        self.results: list[Result] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._counter = itertools.count()
        self._args = (base, path, auth, pause_s)
        self._threads = [threading.Thread(target=self._run, args=(k,)) for k in kinds]
        for t in self._threads:
            t.start()

    def _run(self, kind: str) -> None:
        base, path, auth, pause_s = self._args
        while not self._stop.is_set():
            n = next(self._counter)
            try:
                value = auth(kind, n)
            except StopIteration:
                return
            headers = {"Authorization": value} if value is not None else {}
            start = time.time()
            try:
                r = requests.get(f"{base}{path}/{kind}-{n}", headers=headers, timeout=15)
                status, got = r.status_code, {k.lower(): v for k, v in r.headers.items()}
            except requests.RequestException as e:
                status, got = 0, {"error": str(e)}
            with self._lock:
                self.results.append(Result(kind, status, time.time() - start, got, start))
            if pause_s:
                time.sleep(pause_s)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)


def check_fails_closed(results: list[Result], forwarded_paths: list[str], max_latency_s: float,
                       granted_kind: str = "valid") -> None:
    """Nothing but `granted_kind` reached the upstream, each allowed request exactly once; every
    403 carries the UMA Warning and every 503 `Retry-After: 1`; no request took longer than
    `max_latency_s`."""
    assert not [p for p in forwarded_paths if f"/{granted_kind}-" not in p], forwarded_paths[:20]
    assert {r.status for r in results} <= ALLOWED, \
        sorted({(r.kind, r.status, str(r.headers)[:200]) for r in results if r.status not in ALLOWED})
    for r in results:
        if r.status == 403:
            assert r.headers.get("warning", "").startswith("199 - "), (r.kind, r.headers)
        if r.status == 503:
            assert r.headers.get("retry-after") == "1", (r.kind, r.headers)
        if r.kind != granted_kind:
            assert r.status != 200, (r.kind, r.headers)
    assert len(forwarded_paths) == sum(1 for r in results if r.status == 200)
    slow = sorted(r.took for r in results if r.took > max_latency_s)
    assert not slow, f"{len(slow)} requests took longer than {max_latency_s} s: {slow[-5:]}"

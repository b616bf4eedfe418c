"""`make run`: a working uma-pep demo on this machine.

Starts the development AS (a test fixture, NOT for production) on :9090, the echo upstream on
:9080 and real Envoy on :10000 with the built filter and envoy/demo.yaml, then walks through
one UMA round trip and leaves everything running until Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import requests  # noqa: E402

from support.devas import DevAs  # noqa: E402
from support.echo import Echo  # noqa: E402
from support.envoy import ENVOY_BIN  # noqa: E402
from support.uma_client import parse_challenge, rpt_for_ticket  # noqa: E402

PEP = "http://127.0.0.1:10000"


def main() -> int:
    check_only = "--check" in sys.argv  # walk through once and exit: how the tests run the demo
    services = [DevAs("uma2", port=9090), Echo(port=9080)]
    envoy = subprocess.Popen([ENVOY_BIN, "-c", "envoy/demo.yaml", "--concurrency", "2", "--disable-hot-restart",
                              "--log-level", "warn", "--component-log-level", "wasm:debug"], cwd=ROOT)
    try:
        for _ in range(100):
            try:
                requests.get(PEP + "/", timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.2)
        devas = services[0]
        print("\n== uma-pep demo: Envoy :10000 -> echo :9080, development AS :9090 (not for production) ==")
        first = requests.get(PEP + "/alice/docs/report", timeout=5)
        print(f"$ curl -i {PEP}/alice/docs/report\n  -> {first.status_code}  WWW-Authenticate: "
              f"{first.headers.get('www-authenticate')}")
        ticket = parse_challenge(first.headers["www-authenticate"])["ticket"]
        rpt = rpt_for_ticket(devas, ticket, "alice").json()["access_token"]
        print("  alice trades the ticket for an RPT at the AS token endpoint (UMA grant)")
        second = requests.get(PEP + "/alice/docs/report", headers={"Authorization": f"Bearer {rpt}"}, timeout=5)
        print(f"$ curl -H 'Authorization: Bearer <RPT>' {PEP}/alice/docs/report\n  -> {second.status_code} "
              f"(the echo upstream answered: {second.json()['method']} {second.json()['path']})")
        if check_only:
            return 0 if (first.status_code, second.status_code) == (401, 200) else 1
        print(f"\nTry it yourself:\n  curl -i {PEP}/bob\n  curl -i {PEP}/public   (unmatched: passed through)\n"
              f"  curl -i -H 'X-Original-URI: /alice' -H 'X-Original-Method: GET' {PEP}/authorize   (PARTIAL)\n"
              "  Users alice/alice-pw, bob/bob-pw; client demo-app/demo-secret; see devas/README.md.\n"
              "  Envoy stats: curl -s localhost:9901/stats | grep uma_pep\nCtrl-C stops the demo.")
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        envoy.terminate()
        envoy.wait()
        for s in services:
            s.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

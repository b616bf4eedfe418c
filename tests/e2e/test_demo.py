"""`make run` works: the demo starts the development AS, the echo upstream and Envoy with
envoy/demo.yaml, and one UMA round trip (401 with a ticket, the ticket traded for an RPT at the
AS, then 200 from the upstream) succeeds through it."""

import subprocess
import sys

from support.processes import ROOT


def test_demo_walks_through_a_uma_round_trip():
    done = subprocess.run([sys.executable, "examples/demo.py", "--check"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "-> 401  WWW-Authenticate: UMA realm=\"eoepca\"" in done.stdout
    assert "-> 200 (the echo upstream answered: GET /alice/docs/report)" in done.stdout

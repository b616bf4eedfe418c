"""docs/quickstart.md's operator journey, run as written: its one `sh` block (register the
client, apply the resources, render Envoy with the identity key, run Envoy, 401 → ticket → RPT →
200 with the identity header). Only the ports and the working directory are chosen here, through
the variables the block reads, so that the test cannot collide with anything else."""

from __future__ import annotations

import json
import os
import re
import subprocess

from support.processes import ROOT, free_port

DOC = ROOT / "docs" / "quickstart.md"
# make test builds the debug pepctl (PEPCTL_BIN); the document defaults to make build's.
PEPCTL = os.environ.get("PEPCTL_BIN") or str(ROOT / "target" / "debug" / "pepctl")


def the_block() -> str:
    blocks = re.findall(r"```sh\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1, "docs/quickstart.md must hold exactly one sh block"
    return blocks[0]


def test_the_documented_journey_runs_as_written(tmp_path):
    assert os.path.exists(PEPCTL), f"{PEPCTL} is missing: build pepctl first"
    env = {**os.environ, "PEPCTL": PEPCTL, "AS_PORT": str(free_port()), "APP_PORT": str(free_port()),
           "PEP_PORT": str(free_port()), "ADMIN_PORT": str(free_port()), "WORK": str(tmp_path)}
    env.pop("PEPCTL_ISSUER", None)
    env.pop("PEPCTL_PROFILE", None)
    run = subprocess.run(["bash", "-c", the_block()], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    logs = "".join((tmp_path / f).read_text(errors="replace")[-2000:]
                   for f in ("envoy.log", "devas.log") if (tmp_path / f).exists())
    assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}\n{logs}"
    assert re.search(r'^challenge: www-authenticate: UMA realm="eoepca", as_uri="http://127\.0\.0\.1:\d+/realms/eoepca", '
                     r'ticket=\.\.\.$', run.stdout, flags=re.M | re.I), run.stdout
    identity = json.loads((tmp_path / "identity.json").read_text())
    client = json.loads((tmp_path / "client.json").read_text())
    assert identity["sub"] == "alice-0001", identity
    assert identity["client_id"] == "demo-app"
    assert "protected_get" in identity["permissions"][0]["resource_scopes"], identity
    assert client["client_id"] == "uma-pep"

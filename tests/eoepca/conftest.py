"""The EOEPCA PEP Engine's own test suite (EOEPCA/um-pep-engine v1.2 `tests/`, and the UMA flow
of the EOEPCA acceptance tests), translated to run against uma-pep: the old assertions, with
only addresses and fixtures changed (each module's docstring names its changes).

One stack for the session, as the old suite ran against one deployment:

- devas as Gluu (`uma2`), never reset while the session runs (the resources pepctl registered
  there must stay), with the PDP stand-in (tests/support/pdp.py) turning pepctl's default
  ownership policies into the AS's grants;
- `pepctl serve` for the Resource API (the old port 5576), with the old startup resource file
  applied first (`resources apply`, the old `default-resources.json`);
- Envoy rendered by `pepctl render envoy --eoepca-compat --xds-address` (the old port 5566):
  FULL mode, and PARTIAL mode at `/authorize` (the old PEP's check endpoint) in the same
  Envoy, its filter configuration (`render filter-config --eoepca-compat`) served by pepctl over
  xDS, so that a resource is enforced when the Resource API answers its creation, as the old
  PEP's was.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import requests

from support.devas import ALL_SCOPES, SUBS, DevAs
from support.echo import Echo
from support.envoy import WASM, RenderedEnvoy
from support.pdp import PdpStandIn
from support.pepctl import PEPCTL, Pepctl, Server, write_seed
from support.eoepca_stack import render_compat_envoy
from support.processes import free_port

# The startup resource file (the old `default-resources.json` format). `/res` is the resource
# the old concurrency test inserted before starting its flows; the others are the resources the
# old read/write and authorize tests create, present from the start (see their modules).
SEED = [
    {"name": "resource", "description": "concurrency test resource", "resource_uri": "/res",
     "scopes": ["protected_access"], "default_owner": SUBS["admin"]},
    {"name": "TestResourcePEP from the file", "description": "read/write test resource",
     "resource_uri": "/FileResource1", "scopes": [], "default_owner": SUBS["admin"]},
    {"name": "Alice's space", "description": "where the non-operator owner of testROChange creates",
     "resource_uri": "/alice-space", "scopes": [], "default_owner": SUBS["alice"]},
    {"name": "TestAuthorizePEP101 from the file", "description": "authorize test resource",
     "resource_uri": "/test/FileAuthorizePEP101", "scopes": [], "default_owner": SUBS["admin"]},
]


@dataclass
class Stack:
    gluu: DevAs
    echo: Echo
    pdp: PdpStandIn
    pepctl: Pepctl
    server: Server
    envoy: RenderedEnvoy
    seeded: dict[str, str]  # path → resource id

    @property
    def pep(self) -> str:
        """The old PEP_HOST (proxy and /authorize)."""
        return self.envoy.base

    @property
    def res(self) -> str:
        """The old PEP_RES_HOST (Resource API)."""
        return self.server.base

    @property
    def token_endpoint(self) -> str:
        return self.gluu.discovery["token_endpoint"]


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    if not WASM.exists():
        pytest.fail(f"{WASM} is missing: run `make wasm` first (or set UMA_PEP_WASM)")
    if not PEPCTL.exists():
        pytest.fail(f"pepctl binary not found at {PEPCTL}; build it or set PEPCTL_BIN")
    workdir = tmp_path_factory.mktemp("eoepca")
    started: list = []
    try:
        gluu = DevAs("uma2")
        started.append(gluu)
        # Gluu has no resource owner (devas/README.md, "Grants"): only grant rows, here the PDP's
        # policies, open a resource. devas would otherwise take a resource registered without
        # an owner as owned by any party that has no identity id.
        gluu.configure(owner_has_access=False)
        echo = Echo()
        started.append(echo)
        pdp = PdpStandIn(gluu)
        started.append(pdp)
        pepctl = Pepctl(workdir, gluu)
        pepctl.use_seeded_client()
        pepctl.run("resources", "apply", "-f", str(write_seed(workdir / "default-resources.json", SEED)))
        seeded = {r["uri"]: r["id"] for r in pepctl.json("resources", "list", "--json")}
        # What the old PEP's startup registration left at the PDP: the owner's policy per scope.
        for entry in SEED:
            gluu.grant(entry["default_owner"], seeded[entry["resource_uri"]], ALL_SCOPES)
        filter_config = workdir / "filter.json"
        filter_config.write_text(
            pepctl.run("render", "filter-config", "--eoepca-compat", "--authorize-path", "/authorize").stdout)
        xds = f"127.0.0.1:{free_port()}"
        server = pepctl.serve("--pdp-url", pdp.url, "--xds-listen", xds, "--xds-filter-config", str(filter_config),
                              "--xds-wasm", str(WASM))
        started.append(server)
        envoy = render_compat_envoy(pepctl, workdir, echo.port, "--authorize-path", "/authorize",
                                    "--xds-address", xds)
        started.append(envoy)
        yield Stack(gluu, echo, pdp, pepctl, server, envoy, seeded)
    finally:
        for service in reversed(started):
            service.stop()


@pytest.fixture(scope="session")
def filter_json(stack) -> dict:
    """The filter configuration the stack's Envoy runs with: the one pepctl served it over xDS,
    read from Envoy's own config dump."""
    dump = requests.get(f"http://127.0.0.1:{stack.envoy.admin_port}/config_dump", timeout=10).json()
    ecds = next(c for c in dump["configs"] if c["@type"].endswith("EcdsConfigDump"))
    filters = [f["ecds_filter"] for f in ecds["ecds_filters"]]
    assert [f["name"] for f in filters] == ["uma-pep"], filters
    return json.loads(filters[0]["typed_config"]["config"]["configuration"]["value"])

"""`concurrencyTest.py` (EOEPCA/um-pep-engine v1.2 `tests/`): 60 UMA flows at once on one
resource. Each asks for the resource with no RPT (401 and a ticket), trades the ticket and the
admin's ID token for an RPT at the token endpoint (200), and asks again with the RPT.

Fixtures: 60 threads instead of 60 processes; the admin's ID token from devas. The old test had
no upstream behind the PEP and so expected the last request to fail (500); here the echo
upstream answers, so a request let through is 200."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import requests

from support.devas import PEP_CLIENT
from support.eoepca_client import id_token, request_rpt, ticket_of

N_THREADS = 60


def uma_flow_single_resource(stack, jwt: str, path: str) -> None:
    ticket_response = requests.get(f"{stack.pep}{path}", timeout=30)
    ticket = ticket_of(ticket_response)
    assert ticket_response.status_code == 401
    rpts_response = request_rpt(stack.token_endpoint, jwt, ticket, PEP_CLIENT)
    rpt = rpts_response.json()["access_token"]
    assert rpts_response.status_code == 200
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {rpt}"}
    resource_response = requests.get(f"{stack.pep}{path}", headers=headers, timeout=30)
    assert resource_response.status_code == 200


def run_flows(stack, jwt: str, path: str) -> None:
    with ThreadPoolExecutor(max_workers=N_THREADS) as pool:
        futures = [pool.submit(uma_flow_single_resource, stack, jwt, path) for _ in range(N_THREADS)]
        errors = [f.exception() for f in futures if f.exception() is not None]
    assert not errors, f"{len(errors)} of {N_THREADS} flows failed, first: {errors[0]!r}"


def test_concurrent_flows_on_one_resource(stack):
    """The resource the old test inserted before starting its flows is in the resource file
    (`/res`, owned by the admin)."""
    def reached() -> int:
        return sum(1 for e in stack.echo.log() if e.get("path") == "/res")

    before = reached()
    run_flows(stack, id_token(stack.gluu, "admin"), "/res")
    assert reached() - before == N_THREADS, "each flow reached the upstream once, with its RPT"


def test_concurrent_flows_on_a_resource_inserted_first(stack):
    """The old sequence: the resource is inserted through the Resource API (200, or 422 when it
    is there already), then the 60 flows start at once. The old body's `scopes` is written
    `resource_scopes` here: pepctl refuses unknown keys, and the old PEP ignored it anyway."""
    jwt = id_token(stack.gluu, "admin")
    data = {"icon_uri": "/resconc", "name": "resourceconc", "resource_scopes": ["protected_access"]}
    insertion = requests.post(f"{stack.res}/resources", json=data,
                              headers={"Content-Type": "application/json", "Authorization": f"Bearer {jwt}"}, timeout=10)
    assert insertion.status_code in (200, 422)
    run_flows(stack, jwt, "/resconc")

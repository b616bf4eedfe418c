"""End to end, PARTIAL mode with the real proxies in front: Debian's nginx with `auth_request`
(examples/nginx/nginx.conf.template) and an edge Envoy with `ext_authz` (envoy/ext-authz-edge.yaml),
each asking a PEP Envoy (the filter with `authorize_path` and `forward`) and forwarding allowed
requests to the echo upstream. The configs are rendered from the shipped examples, ports
replaced, so the examples cannot rot: the UMA challenge reaches the client, a valid RPT reaches
the upstream with the identity the PEP minted, a client's identity header never does, a dead AS
is a 403, and a non-canonical path is refused (400) even by an edge that does not normalise."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from support.devas import RESOURCES
from support.envoy import Envoy, filter_config
from support.processes import ROOT, free_port, stop_process
from support.uma_client import parse_challenge, raw_request, rpt_for_ticket



NGINX_TEMPLATE = ROOT / "examples/nginx/nginx.conf.template"
EDGE_YAML = ROOT / "envoy/ext-authz-edge.yaml"
NGINX_BIN = shutil.which("nginx") or "/usr/sbin/nginx"
AS_UNREACHABLE = '199 - "UMA Authorization Server Unreachable"'
NON_CANONICAL = ["/alice/%2e%2e/zzz", "/alice/../zzz", "/alice//../zzz", "/alice/./x", "//alice/x"]
SPOOF = {"X-User-Id": "admin-0003", "X_User_Id": "admin-0003"}


def replace_once(text: str, old: str, new: str) -> str:
    """A placeholder of the example: it must still be there, exactly once."""
    assert text.count(old) == 1, f"{old!r} is not exactly once in the example any more"
    return text.replace(old, new)


def wait_port(port: int, proc: subprocess.Popen, what: str, log: Path, timeout: float = 10.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {log.read_text(errors='replace')[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} not listening on {port} in {timeout}s")


class Nginx:
    """Debian's nginx in the foreground, every file it writes inside its own prefix."""

    def __init__(self, pep_port: int, upstream_port: int):
        if not Path(NGINX_BIN).exists():
            pytest.fail("nginx is not installed (Debian: apt-get install -y nginx)")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="uma-pep-nginx-"))
        self.dir.chmod(0o755)  # nginx's workers drop root and still need their temp paths
        text = NGINX_TEMPLATE.read_text()
        for name, value in {"LISTEN": f"127.0.0.1:{self.port}", "PEP": f"127.0.0.1:{pep_port}",
                            "UPSTREAM": f"127.0.0.1:{upstream_port}"}.items():
            assert "${" + name + "}" in text, name
            text = text.replace("${" + name + "}", value)
        assert "${" not in text
        (self.dir / "nginx.conf").write_text(text)
        self.log_path = self.dir / "error.log"
        self.proc = subprocess.Popen(
            [NGINX_BIN, "-p", str(self.dir), "-c", "nginx.conf", "-e", str(self.log_path), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            wait_port(self.port, self.proc, "nginx", self.log_path)
        except Exception:
            stop_process(self.proc)
            raise

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.proc)  # SIGTERM: nginx's fast shutdown, workers included
        shutil.rmtree(self.dir, ignore_errors=True)


class EdgeEnvoy(Envoy):
    """envoy/ext-authz-edge.yaml with its ports replaced; `normalising=False` turns off the
    edge's own path normalisation (Envoy's defaults), leaving the PEP alone to refuse."""

    def __init__(self, pep_port: int, upstream_port: int, normalising: bool = True):
        self._pep_port = pep_port
        self._normalising = normalising
        super().__init__(None, 0, upstream_port)

    def _bootstrap(self, filter_json, as_port, upstream_port, with_filter) -> str:
        text = EDGE_YAML.read_text()
        text = replace_once(text, "port_value: 8000}", f"port_value: {self.port}}}")
        text = replace_once(text, "port_value: 9902}", f"port_value: {self.admin_port}}}")
        text = replace_once(text, "port_value: 10000}", f"port_value: {self._pep_port}}}")
        text = replace_once(text, "port_value: 9080}", f"port_value: {upstream_port}}}")
        if not self._normalising:
            text = replace_once(text, "normalize_path: true", "normalize_path: false")
            text = replace_once(text, "merge_slashes: true", "merge_slashes: false")
            text = replace_once(text, "path_with_escaped_slashes_action: REJECT_REQUEST",
                                "path_with_escaped_slashes_action: KEEP_UNCHANGED")
        return text

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# ---- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def signing_key():
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def pep(envoy_factory, uma2_as, echo, signing_key) -> Envoy:
    """The PEP Envoy: PARTIAL mode at /authorize, minting the identity header."""
    pem = signing_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
    config = filter_config(uma2_as, resources=RESOURCES, authorize_path="/authorize",
                           forward={"alg": "EdDSA", "key_pem": pem, "aud": "app"})
    return envoy_factory(config, uma2_as.port, echo.port)


@pytest.fixture(scope="module")
def nginx(pep, echo):
    server = Nginx(pep.port, echo.port)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def edge(pep, echo):
    server = EdgeEnvoy(pep.port, echo.port)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def bare_edge(pep, echo):
    server = EdgeEnvoy(pep.port, echo.port, normalising=False)
    yield server
    server.stop()


@pytest.fixture(params=["nginx", "edge"])
def proxy(request):
    """Each proxy in front of the PEP, for the behaviour both must have."""
    return request.getfixturevalue(request.param)


# ---- helpers ----------------------------------------------------------------------------------

def get(proxy, path: str, token: str | None = None, method: str = "GET", headers: dict | None = None):
    headers = dict(headers or {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.request(method, proxy.url(path), headers=headers, timeout=10)


def rpt(uma2_as, resource_id: str = "res-alice", scopes=("protected_get",), sub: str = "alice-0001") -> str:
    return uma2_as.mint_rpt(sub, [{"resource_id": resource_id, "resource_scopes": list(scopes)}])


def identity(token: str, signing_key) -> dict:
    """The forwarded header, verified with the PEP's public key (PyJWT, not the minting code)."""
    return jwt.decode(token, signing_key.public_key(), algorithms=["EdDSA"], audience="app", issuer="uma-pep")


def assert_challenge(resp: requests.Response, uma2_as) -> str:
    assert resp.status_code == 401, resp.text
    # One header, exactly the PEP's (a second copy would be joined by requests and not parse).
    challenge = parse_challenge(resp.headers["www-authenticate"])
    assert challenge["as_uri"] == uma2_as.issuer
    assert challenge["realm"] == "eoepca"
    return challenge["ticket"]


# ---- both proxies -------------------------------------------------------------------------------

def test_no_token_gets_the_uma_challenge_and_nothing_reaches_the_upstream(proxy, uma2_as, echo):
    assert_challenge(get(proxy, "/alice/docs/report"), uma2_as)
    # The original method reached the PEP: the ticket is for DELETE's scope, not the check's GET.
    assert_challenge(get(proxy, "/bob/x", method="DELETE"), uma2_as)
    asked = [c["body"] for c in uma2_as.calls("permission")]
    assert '"res-alice-docs"' in asked[0] and '"protected_get"' in asked[0]
    assert '"res-bob"' in asked[1] and '"protected_delete"' in asked[1]
    assert echo.log() == []


def test_the_uma_round_trip_reaches_the_upstream_with_the_identity(proxy, uma2_as, echo, signing_key):
    # The client does what a UMA client does with the challenge it got through the proxy.
    ticket = assert_challenge(get(proxy, "/alice/docs/report?x=1"), uma2_as)
    grant = rpt_for_ticket(uma2_as, ticket, "alice")
    assert grant.status_code == 200, grant.text
    token = grant.json()["access_token"]
    resp = get(proxy, "/alice/docs/report?x=1", token=token, headers=SPOOF)
    assert resp.status_code == 200, resp.text
    (seen,) = echo.log()
    assert seen["method"] == "GET"
    assert seen["path"] == "/alice/docs/report?x=1"
    headers = seen["headers"]
    claims = identity(headers["x-user-id"], signing_key)  # one value: the client's copy is gone
    assert claims["sub"] == "alice-0001"
    assert [p["resource_id"] for p in claims["permissions"]] == ["res-alice-docs"]
    assert "x_user_id" not in headers
    assert headers["authorization"] == f"Bearer {token}"


def test_a_method_the_rpt_does_not_cover_is_challenged(proxy, uma2_as, echo):
    token = rpt(uma2_as, scopes=["protected_get"])
    assert get(proxy, "/alice/x", token=token).status_code == 200
    assert_challenge(get(proxy, "/alice/x", token=token, method="DELETE"), uma2_as)
    assert [e["method"] for e in echo.log()] == ["GET"]


def test_a_spoofed_identity_never_reaches_the_upstream(proxy, uma2_as, echo):
    # Unmatched: allowed by the PEP without an identity; the client's must not stand in for it.
    resp = get(proxy, "/public/page", headers=SPOOF)
    assert resp.status_code == 200, resp.text
    # Denied: nothing forwarded at all.
    assert get(proxy, "/alice/x", headers=SPOOF).status_code == 401
    (seen,) = echo.log()
    assert seen["path"] == "/public/page"
    assert "x-user-id" not in seen["headers"]
    assert "x_user_id" not in seen["headers"]


def test_the_as_down_is_403_with_the_warning(proxy, uma2_as, echo):
    uma2_as.fault("any", "drop")  # every AS call dropped, until the next test's reset
    for token in (None, rpt(uma2_as)):
        resp = get(proxy, "/alice/x", token=token)
        assert resp.status_code == 403, resp.text
        assert resp.headers.get("warning") == AS_UNREACHABLE
        assert "www-authenticate" not in resp.headers
    assert echo.log() == []


def test_a_method_without_scope_is_405(proxy, echo):
    # nginx turns a check's 405 into 500 unless told otherwise (the example's @uma_refused).
    resp = get(proxy, "/alice/x", method="OPTIONS")
    assert resp.status_code == 405, resp.text
    assert echo.log() == []


def test_a_pep_that_cannot_be_reached_lets_nothing_through(echo):
    # Fail closed in the proxy too: nginx's auth_request gives 500, ext_authz `status_on_error`
    # 403 (failure_mode_allow: false), even for a path the PEP would have passed through.
    dead = free_port()
    nginx, edge = Nginx(dead, echo.port), None
    try:
        edge = EdgeEnvoy(dead, echo.port)
        assert get(nginx, "/public/page").status_code == 500
        assert get(edge, "/public/page").status_code == 403
    finally:
        nginx.stop()
        if edge is not None:
            edge.stop()
    assert echo.log() == []


# ---- non-canonical paths ---------------------------------------------------------------------------

@pytest.mark.parametrize("path", NON_CANONICAL)
def test_nginx_refuses_non_canonical_paths(nginx, echo, path):
    # nginx routes on its normalised $uri but forwards the raw request line: the PEP is asked
    # about that raw line (X-Original-URI = $request_uri) and refuses it.
    status, _, _ = raw_request(nginx.port, "GET", path)
    assert status == 400
    assert echo.log() == []


@pytest.mark.parametrize("path", NON_CANONICAL + ["/../alice/x", "/zzz/../alice/x"])
def test_an_edge_that_does_not_normalise_cannot_get_a_non_canonical_path_past_the_pep(
        bare_edge, uma2_as, echo, path):
    # Envoy's defaults: the edge routes the raw path and checks /authorize + that raw path. The
    # PEP cannot change what the edge forwards, so it must refuse to vouch for it, with or
    # without a token, and never pass the check on to its own upstream.
    for token in (None, rpt(uma2_as, scopes=["protected_get"])):
        status, _, body = raw_request(bare_edge.port, "GET", path,
                                      [("Authorization", f"Bearer {token}")] if token else [])
        assert status == 400, (path, token is not None, body)
    assert echo.log() == []


def test_the_shipped_edge_normalises_before_it_checks(edge, uma2_as, echo, signing_key):
    # envoy/ext-authz-edge.yaml as shipped: the edge normalises, so what is checked is what is
    # routed: /alice/../zzz is /zzz (unmatched, allowed) at both.
    status, _, _ = raw_request(edge.port, "GET", "/alice/../zzz")
    assert status == 200
    status, _, _ = raw_request(edge.port, "GET", "/zzz/../alice/x",
                               [("Authorization", f"Bearer {rpt(uma2_as)}")])
    assert status == 200
    first, second = echo.log()
    assert first["path"] == "/zzz"
    assert second["path"] == "/alice/x"
    assert identity(second["headers"]["x-user-id"], signing_key)["sub"] == "alice-0001"
    # An encoded slash is refused at the edge (path_with_escaped_slashes_action).
    status, _, _ = raw_request(edge.port, "GET", "/alice%2f..%2fzzz")
    assert status == 400


def test_the_shipped_edge_strips_method_overrides(edge, uma2_as, echo):
    # The check sees only Authorization, so the edge itself removes the method-override headers:
    # a GET-scoped RPT must not become a DELETE at a framework that honours them.
    overrides = [("X-HTTP-Method-Override", "DELETE"), ("X-HTTP-Method", "DELETE"), ("X-Method-Override", "DELETE")]
    status, _, _ = raw_request(edge.port, "GET", "/alice/x",
                               [("Authorization", f"Bearer {rpt(uma2_as)}"), *overrides])
    assert status == 200
    (seen,) = echo.log()
    assert not {"x-http-method-override", "x-http-method", "x-method-override"} & set(seen["headers"]), seen["headers"]

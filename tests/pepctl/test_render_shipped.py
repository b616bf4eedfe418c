"""The shipped configurations cannot diverge from the renderer, and what render adds for them.

- envoy/keycloak.yaml, envoy/gluu.yaml and istio/wasmplugin.yaml are `pepctl render` output: each
  equals what pepctl renders today from the client file and command recorded in its header
  (computed here independently of envoy/regenerate.sh, whose --check is tested too);
- every shipped Envoy configuration verifies the AS's certificate when the AS is https, and the
  rendered ones pass `envoy --mode validate` (through envoy/validate.sh, what `make
  validate-envoy` runs) with the module built;
- `--wasm` is absolute in the output, relative paths resolved against the directory render runs in;
- `--forward-header` and `--jwks-path` reach the filter: real Envoy with the built module answers
  the JWKS at the path and strips a client's forged identity header.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest
import requests
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from support.echo import Echo
from support.envoy import ENVOY_BIN, RenderedEnvoy, WASM
from support.pepctl import PEPCTL
from support.processes import ROOT, free_port

RENDERED = ["envoy/keycloak.yaml", "envoy/gluu.yaml", "istio/wasmplugin.yaml"]
COMMAND = "# pepctl render "
CLIENT = "# client.json: "


def header_and_body(path: Path) -> tuple[list[str], str]:
    lines = path.read_text().splitlines(keepends=True)
    end = next(i for i, line in enumerate(lines) if line.startswith(COMMAND)) + 1
    return lines[:end], "".join(lines[end:])


def render_recorded(path: Path, tmp_path: Path) -> str:
    header, _ = header_and_body(path)
    client = next(line for line in header if line.startswith(CLIENT))[len(CLIENT):]
    command = next(line for line in header if line.startswith(COMMAND))[len(COMMAND):]
    (tmp_path / "client.json").write_text(client)
    (tmp_path / "client.json").chmod(0o600)
    p = subprocess.run([str(PEPCTL), "render", *shlex.split(command), "--client", str(tmp_path / "client.json"),
                        "--db", str(tmp_path / "pepctl.db")], capture_output=True, text=True, timeout=60,
                       cwd=ROOT, env={**os.environ, "PEPCTL_LOG": "error"})
    assert p.returncode == 0, p.stderr
    return p.stdout


@pytest.mark.parametrize("name", RENDERED)
def test_each_shipped_file_is_what_pepctl_renders(name, tmp_path):
    path = ROOT / name
    _, body = header_and_body(path)
    assert body == render_recorded(path, tmp_path), f"{name} differs from the render: run envoy/regenerate.sh"


def test_regenerate_check_passes_and_catches_an_edit(tmp_path):
    env = {**os.environ, "PEPCTL": str(PEPCTL)}
    p = subprocess.run([str(ROOT / "envoy/regenerate.sh"), "--check"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    edited = tmp_path / "keycloak.yaml"
    edited.write_text((ROOT / "envoy/keycloak.yaml").read_text().replace("port_value: 8080", "port_value: 8081"))
    p = subprocess.run([str(ROOT / "envoy/regenerate.sh"), "--check", str(edited)], capture_output=True, text=True,
                       env=env, timeout=60)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "+        port_value: 8080" in p.stdout and "differs from what pepctl renders" in p.stderr
    # And without --check it writes the render back.
    p = subprocess.run([str(ROOT / "envoy/regenerate.sh"), str(edited)], capture_output=True, text=True, env=env,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert edited.read_text() == (ROOT / "envoy/keycloak.yaml").read_text()


def _wasm_configs(doc) -> list[dict]:
    """The uma-pep filter configurations of an Envoy configuration."""
    out = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("@type", "").endswith("extensions.filters.http.wasm.v3.Wasm"):
                value = node["config"]["configuration"]["value"]
                out.append(json.loads(value))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    return out


def _verified(tls: dict, host: str) -> list[str]:
    problems = []
    ctx = tls.get("common_tls_context", {}).get("validation_context")
    if not ctx:
        return [f"no validation_context: the certificate of {host} is not verified"]
    if not ctx.get("trusted_ca"):
        problems.append("no trusted_ca")
    sans = [m.get("matcher", {}).get("exact") for m in ctx.get("match_typed_subject_alt_names", [])]
    if host not in sans:
        problems.append(f"subject alt names {sans} lack {host}")
    if tls.get("sni") != host:
        problems.append(f"sni {tls.get('sni')!r} is not {host!r}")
    return problems


@pytest.mark.parametrize("path", sorted((ROOT / "envoy").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_envoy_config_verifies_an_https_as(path):
    doc = yaml.safe_load(path.read_text())
    clusters = {c["name"]: c for c in doc.get("static_resources", {}).get("clusters", [])}
    problems = []
    for cfg in _wasm_configs(doc):
        issuer = cfg["issuer"]
        if not issuer.startswith("https://"):
            # The development AS on loopback (demo.yaml): plain http is accepted there only.
            assert issuer.split("/")[2].split(":")[0] in ("127.0.0.1", "localhost", "[::1]"), issuer
            continue
        host = issuer.split("/")[2].split(":")[0]
        cluster = clusters.get(cfg["as_cluster"])
        if cluster is None:
            problems.append(f"no cluster {cfg['as_cluster']}")
            continue
        tls = cluster.get("transport_socket", {}).get("typed_config")
        if not tls:
            problems.append(f"cluster {cfg['as_cluster']} has no TLS to {issuer}")
            continue
        problems += [f"cluster {cfg['as_cluster']}: {p}" for p in _verified(tls, host)]
    assert not problems, f"{path.name}: " + "; ".join(problems)


def test_rendered_envoy_configs_pass_envoy_validate():
    if not WASM.exists():
        pytest.fail(f"the filter is not built ({WASM}); `make wasm` first")
    p = subprocess.run([str(ROOT / "envoy/validate.sh"), "envoy/keycloak.yaml", "envoy/gluu.yaml"],
                       capture_output=True, text=True, timeout=300, cwd=ROOT,
                       env={**os.environ, "ENVOY": ENVOY_BIN, "WASM": str(WASM)})
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("OK") == 2, p.stdout
    # The check can fail: a configuration Envoy refuses is reported.
    broken = ROOT / "target" / "validate-broken.yaml"
    broken.write_text((ROOT / "envoy/gluu.yaml").read_text().replace("FAIL_CLOSED", "FAIL_SOMETIMES"))
    try:
        p = subprocess.run([str(ROOT / "envoy/validate.sh"), str(broken)], capture_output=True, text=True,
                           timeout=300, cwd=ROOT, env={**os.environ, "ENVOY": ENVOY_BIN, "WASM": str(WASM)})
        assert p.returncode != 0
    finally:
        broken.unlink()


def _client(tmp_path: Path) -> Path:
    client = tmp_path / "client.json"
    client.write_text(json.dumps({"client_id": "pep-client", "client_secret": "s3cret"}))
    client.chmod(0o600)
    return client


def _render(tmp_path: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(PEPCTL), "--issuer", "https://as.example.org", "--client", str(_client(tmp_path)),
                           "--db", str(tmp_path / "pepctl.db"), "render", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd or tmp_path)


def _module_path(out: str) -> str:
    doc = json.loads(out)
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm["http_filters"][0]["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"]


def test_wasm_is_absolute_whatever_the_directory(tmp_path):
    elsewhere = tmp_path / "ops"
    elsewhere.mkdir()
    p = _render(tmp_path, "envoy", "--json", "--wasm", "modules/uma_pep.wasm", cwd=elsewhere)
    assert p.returncode == 0, p.stderr
    assert _module_path(p.stdout) == str(elsewhere / "modules/uma_pep.wasm")
    # The module is not there: said, not refused (Envoy's machine may differ from this one).
    assert "not at this path here" in p.stderr
    p = _render(tmp_path, "envoy", "--json", cwd=elsewhere)
    assert _module_path(p.stdout) == str(elsewhere / "target/wasm32-wasip1/release/uma_pep.wasm")
    p = _render(tmp_path, "envoy", "--json", "--wasm", str(WASM))
    assert _module_path(p.stdout) == str(WASM)
    helptext = subprocess.run([str(PEPCTL), "render", "--help"], capture_output=True, text=True).stdout
    assert "resolved against the current directory at render time" in helptext


def test_forward_flags_name_themselves_when_refused(tmp_path):
    key = tmp_path / "forward.pem"
    key.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    p = _render(tmp_path, "filter-config", "--forward-key", str(key), "--forward-header", "x identity")
    assert p.returncode != 0 and "--forward-header: " in p.stderr and "forward.header" in p.stderr, p.stderr
    p = _render(tmp_path, "filter-config", "--forward-key", str(key), "--jwks-path", "/keys/../jwks")
    assert p.returncode != 0 and '--jwks-path: "/keys/../jwks" is not in normal form: write "/jwks"' in p.stderr
    p = _render(tmp_path, "filter-config", "--jwks-path", "/jwks")
    assert p.returncode != 0 and "--forward-key" in p.stderr
    cfg = json.loads(_render(tmp_path, "filter-config", "--forward-key", str(key), "--forward-header", "x-identity",
                             "--jwks-path", "/.well-known/pep/jwks.json").stdout)
    assert cfg["forward"]["header"] == "x-identity"
    assert cfg["forward"]["jwks_path"] == "/.well-known/pep/jwks.json"
    assert cfg["forward"]["alg"] == "ES256"


def test_forward_header_and_jwks_path_work_in_envoy(tmp_path):
    """Real Envoy with the built module and a rendered configuration: the JWKS at --jwks-path is
    `pepctl jwks` of the key, and a client's own --forward-header is stripped before the upstream."""
    if not WASM.exists():
        pytest.fail(f"the filter is not built ({WASM}); `make wasm` first")
    key = tmp_path / "forward.pem"
    key.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    echo = Echo()
    echo_port = echo.port
    envoy = None
    try:
        listen, admin = free_port(), free_port()
        # No resources and unmatched allow: /open reaches the upstream without the AS (on a
        # closed port here).
        p = _render(tmp_path, "envoy", "--json", "--wasm", str(WASM), "--upstream", f"127.0.0.1:{echo_port}",
                    "--listen-address", "127.0.0.1", "--listen-port", str(listen), "--admin-port", str(admin),
                    "--as-address", "127.0.0.1:9", "--forward-key", str(key), "--forward-header", "x-pep-identity",
                    "--jwks-path", "/.well-known/pep/jwks.json")
        assert p.returncode == 0, p.stderr
        config = tmp_path / "envoy.json"
        config.write_text(p.stdout)
        envoy = RenderedEnvoy(config, listen, admin)
        base = f"http://127.0.0.1:{listen}"
        r = requests.get(base + "/.well-known/pep/jwks.json", timeout=10)
        assert r.status_code == 200, r.text
        expected = json.loads(subprocess.run([str(PEPCTL), "jwks", "--key", str(key)], capture_output=True,
                                             text=True, check=True).stdout)
        assert r.json() == expected
        r = requests.get(base + "/open", headers={"x-pep-identity": "forged", "x_pep_identity": "forged",
                                                  "x-user-id": "kept"}, timeout=10)
        assert r.status_code == 200, r.text
        seen = r.json()["headers"]
        assert "x-pep-identity" not in seen and "x_pep_identity" not in seen, seen
        # Another header name is no longer the forwarded one: it reaches the upstream.
        assert seen.get("x-user-id") == "kept", seen
    finally:
        if envoy:
            envoy.stop()
        echo.stop()

"""`pepctl render` (validated by the filter's parser inside real Envoy) and `pepctl jwks`
(checked against an independent RFC 7638 computation)."""

import base64
import hashlib
import json
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from support.envoy import ENVOY_BIN, WASM
from support.pepctl import write_seed


def seeded(pepctl, tmp_path):
    pepctl.use_seeded_client()
    return {r["name"]: r["id"] for r in pepctl.json("resources", "apply", "-f", str(write_seed(tmp_path / "s.json", [
        {"name": "Alice", "description": "a", "resource_uri": "/alice", "scopes": [], "default_owner": "alice-0001"},
        {"name": "Open", "description": "o", "resource_uri": "/", "scopes": ["public_access"]}])), "--json")}


def test_filter_config_has_repository_ids_and_client(pepctl, devas, tmp_path):
    ids = seeded(pepctl, tmp_path)
    cfg = json.loads(pepctl.run("render", "filter-config", "--unmatched", "deny").stdout)
    assert cfg["issuer"] == devas.issuer
    assert cfg["as_profile"] == devas.profile
    assert (cfg["client_id"], cfg["client_secret"]) == ("pep-client", "pep-secret")
    assert cfg["unmatched"] == "deny"
    assert {r["uri"]: r["id"] for r in cfg["resources"]} == {"/alice": ids["Alice"], "/": ids["Open"]}


def test_render_envoy_passes_envoy_validate(pepctl, devas, tmp_path):
    seeded(pepctl, tmp_path)
    if not WASM.exists():
        pytest.fail(f"the filter is not built ({WASM}); `make wasm` first")
    out = pepctl.run("render", "envoy", "--wasm", str(WASM), "--upstream", "127.0.0.1:9",
                     "--listen-port", "0", "--admin-port", "0", "--sync-url", "http://127.0.0.1:5576").stdout
    path = tmp_path / "envoy.yaml"
    path.write_text(out)
    doc = json.loads(pepctl.run("render", "envoy", "--json", "--wasm", str(WASM), "--upstream", "127.0.0.1:9",
                                "--sync-url", "http://127.0.0.1:5576").stdout)
    assert {c["name"] for c in doc["static_resources"]["clusters"]} == {"uma_as", "upstream", "pepctl"}
    p = subprocess.run([ENVOY_BIN, "--mode", "validate", "-c", str(path), "--log-level", "info"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "OK" in p.stdout + p.stderr
    # The filter itself parsed the rendered configuration with the repository's resources.
    assert "resources=2" in p.stdout + p.stderr


def test_render_envoy_for_an_https_as_verifies_it(pepctl, devas, tmp_path):
    seeded(pepctl, tmp_path)
    if not WASM.exists():
        pytest.fail(f"the filter is not built ({WASM})")
    pepctl.env["PEPCTL_ISSUER"] = "https://as.example.org/realms/eoepca"
    doc = json.loads(pepctl.run("render", "envoy", "--json", "--wasm", str(WASM)).stdout)
    as_cluster = next(c for c in doc["static_resources"]["clusters"] if c["name"] == "uma_as")
    tls = as_cluster["transport_socket"]["typed_config"]
    assert tls["sni"] == "as.example.org"
    assert tls["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"][0]["matcher"] == {"exact": "as.example.org"}
    assert as_cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["port_value"] == 443
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(doc))
    p = subprocess.run([ENVOY_BIN, "--mode", "validate", "-c", str(path)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr


def test_envoy_validate_fails_on_a_broken_render(pepctl, devas, tmp_path):
    """The validation above can fail: a missing module is refused."""
    seeded(pepctl, tmp_path)
    out = pepctl.run("render", "envoy", "--wasm", str(tmp_path / "missing.wasm")).stdout
    path = tmp_path / "envoy.yaml"
    path.write_text(out)
    p = subprocess.run([ENVOY_BIN, "--mode", "validate", "-c", str(path)], capture_output=True, text=True, timeout=120)
    assert p.returncode != 0


def test_render_istio_wasmplugin(pepctl, devas, tmp_path):
    ids = seeded(pepctl, tmp_path)
    args = ["render", "istio", "--namespace", "apps", "--selector", "app=api",
            "--wasm-url", "oci://r.example/uma-pep:1", "--wasm-sha256", "ab" * 32]
    assert "kind: WasmPlugin" in pepctl.run(*args).stdout
    doc = json.loads(pepctl.run(*args, "--json").stdout)
    assert doc["kind"] == "WasmPlugin"
    spec = doc["spec"]
    assert (spec["phase"], spec["failStrategy"]) == ("AUTHZ", "FAIL_CLOSE")
    assert spec["selector"]["matchLabels"] == {"app": "api"}
    assert spec["sha256"] == "ab" * 32
    assert spec["pluginConfig"]["as_cluster"].startswith("outbound|")
    assert ids["Alice"] in {r["id"] for r in spec["pluginConfig"]["resources"]}


def _b64u(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _int(n: int, size: int | None = None) -> str:
    return _b64u(n.to_bytes(size or (n.bit_length() + 7) // 8, "big"))


def _thumbprint(members: dict) -> str:
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return _b64u(hashlib.sha256(canonical).digest())


@pytest.mark.parametrize("devas", ["uma2"], indirect=True)
def test_jwks_of_each_key_type(pepctl, tmp_path):
    keys = {
        "RS256": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ES256": ec.generate_private_key(ec.SECP256R1()),
        "EdDSA": ed25519.Ed25519PrivateKey.generate(),
    }
    for alg, key in keys.items():
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        path = tmp_path / f"{alg}.pem"
        path.write_bytes(pem)
        jwks = pepctl.json("jwks", "--key", str(path))
        (jwk,) = jwks["keys"]
        assert jwk["alg"] == alg and jwk["use"] == "sig"
        assert "d" not in jwk and "p" not in jwk
        pub = key.public_key()
        if alg == "RS256":
            nums = pub.public_numbers()
            expected = {"kty": "RSA", "n": _int(nums.n), "e": _int(nums.e)}
        elif alg == "ES256":
            nums = pub.public_numbers()
            expected = {"kty": "EC", "crv": "P-256", "x": _int(nums.x, 32), "y": _int(nums.y, 32)}
        else:
            raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            expected = {"kty": "OKP", "crv": "Ed25519", "x": _b64u(raw)}
        assert {k: jwk[k] for k in expected} == expected
        assert jwk["kid"] == _thumbprint(expected)
    p = pepctl.run("jwks", "--key", str(tmp_path / "nope.pem"), check=False)
    assert p.returncode != 0

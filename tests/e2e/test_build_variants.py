"""End to end, a module built with fewer algorithms (`make wasm WASM_FEATURES=...`): a
configuration asking for an algorithm it left out must stop the filter from loading, naming the
key and the feature to build with; one it can serve loads and mints as the default build does.

The module is `make wasm-no-rs256`'s (every algorithm but RS256 minting), given by
UMA_PEP_WASM_NO_RS256; `make test-e2e` builds it and sets it."""

from __future__ import annotations

import os
from pathlib import Path

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from support.devas import ALL_SCOPES, RESOURCES
from support.envoy import Envoy, envoy_config, filter_config

WASM_NO_RS256 = os.environ.get("UMA_PEP_WASM_NO_RS256")


@pytest.fixture(scope="module")
def wasm_no_rs256() -> Path:
    if not WASM_NO_RS256:
        pytest.skip("UMA_PEP_WASM_NO_RS256 is not set: `make wasm-no-rs256` builds that module "
                    "(make test-e2e builds it and sets it)")
    path = Path(WASM_NO_RS256)
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make wasm-no-rs256`")
    return path


class VariantEnvoy(Envoy):
    """Envoy loading another build of the filter."""

    def __init__(self, wasm: Path, *args, **kw):
        self.wasm = wasm
        super().__init__(*args, **kw)

    def _bootstrap(self, filter_json, as_port, upstream_port, with_filter):
        return envoy_config(filter_json, self.port, self.admin_port, as_port, upstream_port,
                            wasm=self.wasm, with_filter=with_filter)


def pkcs8_pem(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@pytest.mark.parametrize("forward", [
    {"alg": "RS256"},
    {},  # RS256 is the default `alg`
], ids=["explicit", "default-alg"])
def test_a_module_without_rs256_refuses_forward_rs256_naming_the_key_and_the_feature(
        wasm_no_rs256, uma2_as, echo, forward):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    config = filter_config(uma2_as, resources=RESOURCES, forward={**forward, "key_pem": pkcs8_pem(key)})
    envoy = VariantEnvoy(wasm_no_rs256, config, uma2_as.port, echo.port, expect_ready=False)
    try:
        code = envoy.exited(timeout=20)
        logs = envoy.logs()
        assert ("uma-pep: invalid configuration: config key `forward.alg`: RS256 is not in this build "
                "of the filter: build it with the cargo feature `forward-rs256`") in logs, logs[-2000:]
        assert "PRIVATE KEY" not in logs
        assert code not in (None, 0)
    finally:
        envoy.stop()


def test_the_same_module_loads_and_mints_es256(wasm_no_rs256, uma2_as, echo):
    key = ec.generate_private_key(ec.SECP256R1())
    config = filter_config(uma2_as, resources=RESOURCES,
                           forward={"alg": "ES256", "key_pem": pkcs8_pem(key), "aud": "ades"})
    envoy = VariantEnvoy(wasm_no_rs256, config, uma2_as.port, echo.port)
    try:
        token = uma2_as.mint_rpt("alice-0001", [{"resource_id": "res-alice", "resource_scopes": ALL_SCOPES}])
        resp = requests.get(envoy.url("/alice"), headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert resp.status_code == 200, resp.text
        minted = resp.json()["headers"]["x-user-id"]
        claims = jwt.decode(minted, key.public_key(), algorithms=["ES256"], audience="ades", issuer="uma-pep")
        assert claims["sub"] == "alice-0001"
    finally:
        envoy.stop()

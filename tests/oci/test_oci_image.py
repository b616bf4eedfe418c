"""The filter as an OCI image (oci/build_image.py) through a real registry: Debian's
`docker-registry` on loopback, pushed with `skopeo`, pulled back BY DIGEST through the registry
API, the module taken out the way Istio's wasm image fetcher does and compared byte for byte
with the built one; then `pepctl render istio` pinned to that digest.

What Istio accepts (istio-agent, pkg/wasm/imagefetcher.go and cache.go):
- compat: an OCI manifest whose (only, in older releases) layer is
  application/vnd.oci.image.layer.v1.tar+gzip, a gzip'd tar holding `plugin.wasm`;
- artifact: exactly two layers, one of them application/vnd.module.wasm.content.layer.v1+wasm,
  the raw module;
- for an oci:// URL the WasmPlugin's `sha256` is checked against the MANIFEST digest (the hex of
  what `@sha256:` names), not against the module's sha256 (that is only for http(s) URLs).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import requests

from support.envoy import WASM
from support.pepctl import PEPCTL
from support.processes import ROOT, free_port, stop_process

BUILDER = ROOT / "oci/build_image.py"
REPO = "uma-pep"
TAG = "0.1.0"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
WASM_CONFIG = "application/vnd.module.wasm.config.v1+json"
WASM_CONTENT = "application/vnd.module.wasm.content.layer.v1+wasm"
INSTALL_HINT = "apt-get install -y docker-registry skopeo"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tool(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(f"{' or '.join(names)} not found: {INSTALL_HINT}")


def build(wasm: Path, out: Path, *extra: str) -> dict:
    p = subprocess.run([sys.executable, str(BUILDER), "--wasm", str(wasm), "--out", str(out), "--tag", TAG,
                        "--json", *extra], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def layout_blob(layout: Path):
    def get(digest: str) -> bytes:
        data = (layout / "blobs/sha256" / digest.removeprefix("sha256:")).read_bytes()
        assert "sha256:" + sha256(data) == digest
        return data
    return get


def layout_manifest(layout: Path) -> tuple[str, bytes]:
    index = json.loads((layout / "index.json").read_text())
    (entry,) = index["manifests"]
    assert entry["mediaType"] == OCI_MANIFEST
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == TAG
    body = layout_blob(layout)(entry["digest"])
    assert len(body) == entry["size"]
    return entry["digest"], body


def istio_module(manifest: dict, blob) -> bytes:
    """The module Istio's fetcher takes out of an OCI image manifest: compat first (the last
    layer, tar+gzip, the entry whose base name is plugin.wasm), then the artifact variant
    (exactly two layers, the raw content of the wasm content layer)."""
    assert manifest.get("mediaType", OCI_MANIFEST) == OCI_MANIFEST
    layers = manifest["layers"]
    assert layers, "an image without layers"
    if layers[-1]["mediaType"] == OCI_LAYER_TAR_GZIP:
        data = blob(layers[-1]["digest"])
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data)), mode="r:") as tar:
            for member in tar:
                if Path(member.name).name == "plugin.wasm":
                    return tar.extractfile(member).read()
        pytest.fail("plugin.wasm not found in the layer")
    assert len(layers) == 2, "the artifact variant has exactly two layers"
    (content,) = [layer for layer in layers if layer["mediaType"] == WASM_CONTENT]
    return blob(content["digest"])


@pytest.fixture(scope="module")
def module() -> bytes:
    if not WASM.exists():
        pytest.fail(f"the filter is not built ({WASM}): `make wasm` first")
    return WASM.read_bytes()


@pytest.fixture(scope="module")
def built(tmp_path_factory, module) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("layout") / "uma-pep"
    return build(WASM, out), out


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """Debian's docker-registry, in the foreground, on a free loopback port, storing in a temp dir."""
    binary = tool("docker-registry", "registry")
    tool("skopeo")
    base = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = base / "config.yml"
    config.write_text(f"""version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {base / "storage"}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
  secret: uma-pep-test-only
""")
    log = (base / "registry.log").open("w")
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    host = f"127.0.0.1:{port}"
    deadline = time.time() + 15
    while True:
        try:
            if requests.get(f"http://{host}/v2/", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            stop_process(proc)
            pytest.fail(f"docker-registry did not start: {(base / 'registry.log').read_text()}")
        time.sleep(0.1)
    yield host
    stop_process(proc)
    log.close()


def push(layout: Path, host: str, repo: str, tmp_path: Path) -> str:
    """skopeo copy, digests preserved; returns the digest skopeo says it pushed."""
    digestfile = tmp_path / f"{repo}.digest"
    p = subprocess.run([tool("skopeo"), "--insecure-policy", "copy", "--quiet", "--preserve-digests",
                        "--dest-tls-verify=false", "--digestfile", str(digestfile),
                        f"oci:{layout}:{TAG}", f"docker://{host}/{repo}:{TAG}"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    return digestfile.read_text().strip()


def pull_manifest(host: str, repo: str, reference: str) -> tuple[str, bytes]:
    r = requests.get(f"http://{host}/v2/{repo}/manifests/{reference}", headers={"Accept": OCI_MANIFEST}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == OCI_MANIFEST
    return r.headers["Docker-Content-Digest"], r.content


def registry_blob(host: str, repo: str):
    def get(digest: str) -> bytes:
        r = requests.get(f"http://{host}/v2/{repo}/blobs/{digest}", timeout=30)
        assert r.status_code == 200, r.text
        assert "sha256:" + sha256(r.content) == digest
        return r.content
    return get


@pytest.fixture(scope="module")
def pushed(registry, built, tmp_path_factory) -> str:
    result, layout = built
    digest = push(layout, registry, REPO, tmp_path_factory.mktemp("push"))
    assert digest == result["manifest_digest"], "the registry holds another manifest than the one built"
    return digest


def test_the_layout_is_reproducible_and_changes_only_with_the_module(tmp_path, module, built):
    result, layout = built
    # Another copy of the module, elsewhere, with another mtime, built to another directory.
    copy = tmp_path / "copy.wasm"
    copy.write_bytes(module)
    os.utime(copy, (1_000_000, 1_000_000))
    again = build(copy, tmp_path / "again")
    assert again["manifest_digest"] == result["manifest_digest"]
    files = sorted(p.relative_to(layout) for p in layout.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "again") for p in (tmp_path / "again").rglob("*") if p.is_file())
    assert all((layout / f).read_bytes() == (tmp_path / "again" / f).read_bytes() for f in files)
    # Rebuilding over a layout replaces it: one manifest, no stale blobs.
    build(copy, tmp_path / "again")
    assert len(list((tmp_path / "again/blobs/sha256").iterdir())) == 3

    changed = tmp_path / "changed.wasm"
    changed.write_bytes(module + b"\0")
    assert build(changed, tmp_path / "changed")["manifest_digest"] != result["manifest_digest"]

    junk = tmp_path / "junk.wasm"
    junk.write_bytes(b"#!/bin/sh\n")
    p = subprocess.run([sys.executable, str(BUILDER), "--wasm", str(junk), "--out", str(tmp_path / "junk")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "not a WebAssembly module" in p.stderr


def test_the_layout_is_the_compat_variant_istio_accepts(module, built):
    result, layout = built
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    digest, body = layout_manifest(layout)
    assert digest == result["manifest_digest"]
    manifest = json.loads(body)
    assert manifest["schemaVersion"] == 2 and manifest["mediaType"] == OCI_MANIFEST
    assert manifest["config"]["mediaType"] == OCI_CONFIG
    assert manifest["annotations"] == {"module.wasm.image/variant": "compat"}
    (layer,) = manifest["layers"]  # older Istio releases require exactly one
    assert layer["mediaType"] == OCI_LAYER_TAR_GZIP
    blob = layout_blob(layout)
    data = blob(layer["digest"])
    assert len(data) == layer["size"]
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data)), mode="r:") as tar:
        (member,) = tar.getmembers()
        assert (member.name, member.isreg(), member.mode, member.mtime, member.uid) == ("plugin.wasm", True, 0o644, 0, 0)
    config = json.loads(blob(manifest["config"]["digest"]))
    assert config["rootfs"]["diff_ids"] == ["sha256:" + sha256(gzip.decompress(data))]
    assert istio_module(manifest, blob) == module
    assert result["module_sha256"] == sha256(module)


def test_push_then_pull_back_by_digest_gives_the_same_module(registry, pushed, module):
    digest, body = pull_manifest(registry, REPO, pushed)
    assert digest == pushed and "sha256:" + sha256(body) == pushed
    manifest = json.loads(body)
    assert (manifest["mediaType"], manifest["config"]["mediaType"]) == (OCI_MANIFEST, OCI_CONFIG)
    assert [layer["mediaType"] for layer in manifest["layers"]] == [OCI_LAYER_TAR_GZIP]
    pulled = istio_module(manifest, registry_blob(registry, REPO))
    assert pulled == module, "the module pulled back differs from the built one"
    # The tag names the same manifest, and skopeo reads back the same bytes by digest.
    assert pull_manifest(registry, REPO, TAG)[0] == pushed
    p = subprocess.run([tool("skopeo"), "inspect", "--raw", "--tls-verify=false",
                        f"docker://{registry}/{REPO}@{pushed}"], capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout == body


def test_the_artifact_variant_round_trips(registry, module, tmp_path):
    result = build(WASM, tmp_path / "artifact", "--variant", "artifact")
    digest = push(tmp_path / "artifact", registry, "uma-pep-artifact", tmp_path)
    assert digest == result["manifest_digest"]
    _, body = pull_manifest(registry, "uma-pep-artifact", digest)
    manifest = json.loads(body)
    assert manifest["config"]["mediaType"] == WASM_CONFIG
    assert sorted(layer["mediaType"] for layer in manifest["layers"]) == [WASM_CONFIG, WASM_CONTENT]
    blob = registry_blob(registry, "uma-pep-artifact")
    runtime = json.loads(blob(manifest["config"]["digest"]))
    assert runtime["type"] == "envoy_proxy" and "proxy_abi_version_0_2_1" in runtime["abiVersions"]
    assert istio_module(manifest, blob) == module


def test_pepctl_render_istio_pins_the_pushed_image(registry, pushed, module, tmp_path):
    if not PEPCTL.exists():
        pytest.fail(f"pepctl not found at {PEPCTL}: `cargo build -p pepctl` or set PEPCTL_BIN")
    client = tmp_path / "client.json"
    client.write_text(json.dumps({"client_id": "uma-pep", "client_secret": "s3cret",
                                  "issuer": "https://as.example.org/realms/uma"}))
    client.chmod(0o600)
    hexdigest = pushed.removeprefix("sha256:")
    url = f"oci://{registry}/{REPO}@{pushed}"
    p = subprocess.run([str(PEPCTL), "--issuer", "https://as.example.org/realms/uma", "--client", str(client),
                        "--db", str(tmp_path / "pepctl.db"), "render", "istio", "--json",
                        "--wasm-url", url, "--wasm-sha256", hexdigest],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path, env={**os.environ, "NO_COLOR": "1"})
    assert p.returncode == 0, p.stderr
    spec = json.loads(p.stdout)["spec"]
    assert spec["url"] == url
    assert re.fullmatch(r"[a-f0-9]{64}", spec["sha256"]), "the CRD's pattern for sha256"
    # Istio: a url with @sha256: must name the same digest as `sha256` ...
    assert spec["url"].rsplit("@sha256:", 1)[1] == spec["sha256"]
    # ... and istio-agent compares `sha256` with the digest of the manifest it pulls for the url.
    served, _ = pull_manifest(registry, REPO, spec["url"].rsplit("@", 1)[1])
    assert served == "sha256:" + spec["sha256"]
    # The module's own sha256 is another value: given as `sha256` with an oci:// url, Istio
    # would refuse the module (checksum mismatch).
    assert spec["sha256"] != sha256(module)

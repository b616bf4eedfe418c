#!/usr/bin/env python3
"""Packs the filter's .wasm as an OCI image layout (a directory with `oci-layout`, `index.json`
and `blobs/sha256/`) that Istio's WasmPlugin can pull, without Docker or any container engine.

Two variants, both accepted by Istio's wasm image fetcher (istio-agent):

* compat (default): an ordinary OCI image, manifest `application/vnd.oci.image.manifest.v1+json`,
  config `application/vnd.oci.image.config.v1+json`, exactly ONE layer
  `application/vnd.oci.image.layer.v1.tar+gzip` whose tar holds one file, `plugin.wasm`, and
  the manifest annotation `module.wasm.image/variant: compat`. Any registry and any image tool
  (skopeo, crane, oras, docker pull) handles it.
* artifact: the Wasm OCI artifact, config `application/vnd.module.wasm.config.v1+json` (the
  runtime config) and two layers, that same runtime config and the module itself as
  `application/vnd.module.wasm.content.layer.v1+wasm` (Istio requires exactly these two).

The output is reproducible: fixed mtimes, owners and modes in the tar, no timestamp in the gzip
header or in any JSON, keys sorted. The manifest digest changes only when the module does (or
the variant, or the tag's annotations: none but the ref name, which is outside the manifest).

Istio checks a WasmPlugin's `sha256` against the MANIFEST digest for an `oci://` URL (it is
the module's own sha256 only for http(s):// URLs): this prints both, and the `url`/`sha256`
pair to give to `pepctl render istio`.

Python 3 standard library only.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import re
import shutil
import sys
import tarfile
import tempfile
import tomllib
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
WASM_CONFIG = "application/vnd.module.wasm.config.v1+json"
WASM_CONTENT_LAYER = "application/vnd.module.wasm.content.layer.v1+wasm"
VARIANT_ANNOTATION = "module.wasm.image/variant"
REF_NAME = "org.opencontainers.image.ref.name"
TITLE = "org.opencontainers.image.title"
PLUGIN_FILE = "plugin.wasm"
WASM_MAGIC = b"\0asm"
# Valid in a tag (the distribution spec's grammar), so the ref name can be pushed as a tag.
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


def canonical_json(value: object) -> bytes:
    """Sorted keys, no spaces, UTF-8: the same object is always the same bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def descriptor(media_type: str, data: bytes, annotations: dict | None = None) -> dict:
    d = {"mediaType": media_type, "digest": "sha256:" + sha256_hex(data), "size": len(data)}
    if annotations:
        d["annotations"] = annotations
    return d


def plugin_tar(module: bytes) -> bytes:
    """An uncompressed tar with one regular file, plugin.wasm: mtime 0, root-owned, 0644."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(PLUGIN_FILE)
        info.size = len(module)
        info.mtime = 0
        info.mode = 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.type = tarfile.REGTYPE
        tar.addfile(info, io.BytesIO(module))
    return buf.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    """gzip with no file name and mtime 0 in its header, so only the content decides the bytes."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def abi_versions(module: bytes) -> list[str]:
    """The proxy-wasm ABI versions the module exports (`proxy_abi_version_0_2_1`, ...)."""
    found = {m.decode() for m in re.findall(rb"proxy_abi_version_\d+_\d+_\d+", module)}
    return sorted(found)


def compat_blobs(module: bytes) -> tuple[dict, dict[str, bytes]]:
    """The compat variant: (manifest, blobs by digest)."""
    tar = plugin_tar(module)
    layer = gzip_bytes(tar)
    config = canonical_json({
        "architecture": "wasm",
        "os": "wasip1",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha256_hex(tar)]},
    })
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config),
        "layers": [descriptor(OCI_LAYER_TAR_GZIP, layer)],
        "annotations": {VARIANT_ANNOTATION: "compat"},
    }
    return manifest, {manifest["config"]["digest"]: config, manifest["layers"][0]["digest"]: layer}


def artifact_blobs(module: bytes) -> tuple[dict, dict[str, bytes]]:
    """The Wasm OCI artifact variant: the runtime config as the config and as the first layer,
    the raw module as the second."""
    runtime = {"type": "envoy_proxy", "config": {"root_ids": ["uma_pep"]}}
    abis = abi_versions(module)
    if abis:
        runtime["abiVersions"] = abis
    config = canonical_json(runtime)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(WASM_CONFIG, config),
        "layers": [
            descriptor(WASM_CONFIG, config, {TITLE: "runtime-config.json"}),
            descriptor(WASM_CONTENT_LAYER, module, {TITLE: PLUGIN_FILE}),
        ],
    }
    return manifest, {manifest["config"]["digest"]: config, manifest["layers"][1]["digest"]: module}


VARIANTS = {"compat": compat_blobs, "artifact": artifact_blobs}
ROOT = Path(__file__).resolve().parents[1]


def crate_version() -> str:
    """The filter crate's version (the repository's Cargo.toml), the default tag."""
    try:
        return tomllib.loads((ROOT / "Cargo.toml").read_text())["package"]["version"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "latest"


def build(module: bytes, out: Path, tag: str, variant: str = "compat") -> dict:
    """Writes the OCI image layout at `out` (replacing a previous layout there) and returns
    what was built: manifest digest, module sha256, tag, variant."""
    if not module.startswith(WASM_MAGIC) or len(module) < 8:
        raise ValueError("not a WebAssembly module (no \\0asm header)")
    if not TAG_RE.match(tag):
        raise ValueError(f"{tag!r} is not a valid tag ([A-Za-z0-9_][A-Za-z0-9._-]{{0,127}})")
    manifest, blobs = VARIANTS[variant](module)
    manifest_bytes = canonical_json(manifest)
    digest = "sha256:" + sha256_hex(manifest_bytes)
    blobs[digest] = manifest_bytes
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [descriptor(OCI_MANIFEST, manifest_bytes, {REF_NAME: tag})],
    }

    out = out.resolve()
    if out.exists() and not (out / "oci-layout").is_file():
        raise ValueError(f"{out} exists and is not an OCI image layout: not replacing it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        (tmp / "blobs/sha256").mkdir(parents=True)
        for d, data in sorted(blobs.items()):
            (tmp / "blobs/sha256" / d.removeprefix("sha256:")).write_bytes(data)
        (tmp / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
        (tmp / "index.json").write_bytes(canonical_json(index))
        tmp.chmod(0o755)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {
        "layout": str(out),
        "tag": tag,
        "variant": variant,
        "manifest_digest": digest,
        "module_sha256": sha256_hex(module),
        "module_size": len(module),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--wasm", type=Path, default=ROOT / "target/wasm32-wasip1/release/uma_pep.wasm",
                   help="the filter module (default: %(default)s)")
    p.add_argument("--out", type=Path, default=ROOT / "target/oci/uma-pep",
                   help="OCI image layout directory to write, replaced if it is one (default: %(default)s)")
    p.add_argument("--tag", default=crate_version(),
                   help="ref name of the image in the layout, the tag to push (default: the crate version, "
                        "%(default)s)")
    p.add_argument("--variant", choices=sorted(VARIANTS), default="compat",
                   help="compat: one tar+gzip layer with plugin.wasm; artifact: Wasm OCI artifact media types "
                        "(default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    try:
        module = args.wasm.read_bytes()
        result = build(module, args.out, args.tag, args.variant)
    except (OSError, ValueError) as e:
        print(f"build_image: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        hexd = result["manifest_digest"].removeprefix("sha256:")
        print(f"OCI image layout {result['layout']} (tag {result['tag']}, {result['variant']} variant)")
        print(f"  manifest digest  {result['manifest_digest']}")
        print(f"  module sha256    {result['module_sha256']} ({result['module_size']} bytes)")
        print("push:   skopeo copy --preserve-digests oci:{}:{} docker://REGISTRY/uma-pep:{}".format(
            result["layout"], result["tag"], result["tag"]))
        print(f"render: pepctl render istio --wasm-url oci://REGISTRY/uma-pep@{result['manifest_digest']} "
              f"--wasm-sha256 {hexd}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Envoy rendered by `pepctl render envoy --eoepca-compat` (docs/migrating-from-eoepca.md), for
the translated EOEPCA suite (tests/eoepca)."""

from __future__ import annotations

from pathlib import Path

from support.envoy import RenderedEnvoy
from support.pepctl import Pepctl
from support.processes import free_port


def render_compat_envoy(pepctl: Pepctl, workdir: Path, upstream_port: int, *extra: str) -> RenderedEnvoy:
    """Renders Envoy with the EOEPCA preset (and `extra` flags) into `workdir` and starts it."""
    listen, admin = free_port(), free_port()
    path = workdir / f"envoy-{listen}.json"
    path.write_text(pepctl.render_envoy(upstream_port, listen, admin, "--eoepca-compat", *extra))
    return RenderedEnvoy(path, listen, admin)

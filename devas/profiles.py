"""The profiles of the development AS (development/test fixture, NOT for production): which
dialect class speaks for `--profile keycloak|uma2|janssen`."""

from __future__ import annotations

from devas.dialects import Dialect
from devas.gluu import Gluu, Janssen
from devas.keycloak import Keycloak

PROFILES: dict[str, type[Dialect]] = {"keycloak": Keycloak, "uma2": Gluu, "janssen": Janssen}


def make(profile: str, base_url: str, realm: str) -> Dialect:
    try:
        return PROFILES[profile](base_url, realm)
    except KeyError:
        raise ValueError(f"unknown profile {profile!r}; expected one of {sorted(PROFILES)}") from None

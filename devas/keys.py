"""The development AS's keys (development/test fixture, NOT for production).

* One RSA-2048 key per process start signs what the real servers sign with their published key
  (Keycloak PATs, user tokens and RPTs; Gluu ID tokens and RS256 JWT RPTs). It is the JWKS. Its
  `kid` is the start of the key's RFC 7638 thumbprint.
* One HMAC key per process start stands for Keycloak's realm HMAC key (`hmac-generated`, HS512):
  Keycloak signs its "internal" tokens with it (permission tickets, initial and registration
  access tokens; `JsonWebToken.getCategory()` = INTERNAL), so they are NOT verifiable with the JWKS.
* Gluu signs an HS* JWT RPT with the requesting client's secret (`JwtSigner` hmacSharedSecret).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ALG = "RS256"
INTERNAL_ALG = "HS512"  # Keycloak Constants.INTERNAL_SIGNATURE_ALGORITHM
HMAC_ALGS = ("HS256", "HS384", "HS512")
_NO_CLAIM_CHECKS = {"verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_aud": False,
                    "verify_iss": False, "verify_sub": False, "verify_jti": False}


def _b64u_int(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _decode(token: str, key: Any, algorithms: list[str]) -> dict[str, Any] | None:
    """The claims if the signature checks out (time claims are the caller's business: the store
    record is the authority on expiry and revocation), else None."""
    try:
        claims = jwt.decode(token, key, algorithms=algorithms, options=_NO_CLAIM_CHECKS)
    except jwt.PyJWTError:
        return None
    return claims if isinstance(claims, dict) else None


def header_of(token: str) -> dict[str, Any]:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        return {}
    return header if isinstance(header, dict) else {}


def sign_hmac(claims: dict[str, Any], secret: str | bytes, alg: str, kid: str | None = None) -> str:
    headers = {"typ": "JWT", **({"kid": kid} if kid else {})}
    return jwt.encode(claims, secret.encode() if isinstance(secret, str) else secret, algorithm=alg, headers=headers)


def verify_hmac(token: str, secret: str | bytes, algs: tuple[str, ...] = HMAC_ALGS) -> dict[str, Any] | None:
    return _decode(token, secret.encode() if isinstance(secret, str) else secret, list(algs))


class SigningKey:
    def __init__(self, private_key: rsa.RSAPrivateKey):
        self._private = private_key
        self._public = private_key.public_key()
        numbers = self._public.public_numbers()
        self._jwk = {"e": _b64u_int(numbers.e), "kty": "RSA", "n": _b64u_int(numbers.n)}
        thumbprint = hashlib.sha256(json.dumps(self._jwk, separators=(",", ":"), sort_keys=True).encode())
        self.kid = base64.urlsafe_b64encode(thumbprint.digest()).rstrip(b"=").decode()[:16]
        self._hmac = secrets.token_bytes(64)
        self.hmac_kid = str(uuid.uuid4())

    @classmethod
    def generate(cls) -> "SigningKey":
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=2048))

    # A restart keeps the realm's keys, as a real server's database does (`--state`).
    def to_state(self) -> dict[str, Any]:
        pem = self._private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption())
        return {"pem": pem, "hmac": self._hmac, "hmac_kid": self.hmac_kid}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "SigningKey":
        key = cls(serialization.load_pem_private_key(state["pem"], password=None))
        key._hmac, key.hmac_kid = state["hmac"], state["hmac_kid"]
        return key

    def jwks(self) -> dict[str, Any]:
        return {"keys": [{"kid": self.kid, "kty": "RSA", "alg": ALG, "use": "sig",
                          "n": self._jwk["n"], "e": self._jwk["e"]}]}

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self._private, algorithm=ALG, headers={"kid": self.kid, "typ": "JWT"})

    def verify(self, token: str) -> dict[str, Any] | None:
        return _decode(token, self._public, [ALG])

    # Keycloak's realm HMAC key: internal tokens (permission tickets, client-registration tokens).
    def sign_internal(self, claims: dict[str, Any]) -> str:
        return sign_hmac(claims, self._hmac, INTERNAL_ALG, self.hmac_kid)

    def verify_internal(self, token: str) -> dict[str, Any] | None:
        return verify_hmac(token, self._hmac, (INTERNAL_ALG,))

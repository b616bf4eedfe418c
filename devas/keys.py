"""The development AS's signing key (development/test fixture, NOT for production).

One RSA-2048 key is generated per process start; it signs every JWT the AS issues (Keycloak
PATs, user access and ID tokens, RPTs, permission tickets) and is published as the JWKS.
The `kid` is the start of the key's RFC 7638 thumbprint: short, and stable for the key's life.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

ALG = "RS256"


def _b64u_int(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class SigningKey:
    def __init__(self, private_key: rsa.RSAPrivateKey):
        self._private = private_key
        self._public = private_key.public_key()
        numbers = self._public.public_numbers()
        self._jwk = {"e": _b64u_int(numbers.e), "kty": "RSA", "n": _b64u_int(numbers.n)}
        thumbprint = hashlib.sha256(json.dumps(self._jwk, separators=(",", ":"), sort_keys=True).encode())
        self.kid = base64.urlsafe_b64encode(thumbprint.digest()).rstrip(b"=").decode()[:16]

    @classmethod
    def generate(cls) -> "SigningKey":
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def jwks(self) -> dict[str, Any]:
        return {"keys": [{"kid": self.kid, "kty": "RSA", "alg": ALG, "use": "sig",
                          "n": self._jwk["n"], "e": self._jwk["e"]}]}

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self._private, algorithm=ALG, headers={"kid": self.kid, "typ": "JWT"})

    def verify(self, token: str) -> dict[str, Any] | None:
        """The claims if `token` carries this key's signature, else None. Time claims are the
        caller's business (the store record is the authority on expiry and revocation)."""
        try:
            return jwt.decode(token, self._public, algorithms=[ALG],
                              options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                                       "verify_aud": False, "verify_iss": False, "verify_sub": False,
                                       "verify_jti": False})
        except jwt.PyJWTError:
            return None

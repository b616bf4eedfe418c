#!/usr/bin/env python3
"""Writes fuzz/corpus/jwt/: `<token>\n<JWKS>` seeds (Python `cryptography`). The Ed25519 key is
core's test key, whose public half is the jwt target's fixed JWKS; RSA and EC keys are fresh."""
import base64, json, os, sys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus", "jwt")
ISS = "http://as.local:8080/realms/eoepca"
ED_PEM = b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mteEJ/5GC\n-----END PRIVATE KEY-----\n"

def b64(b): return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
def bint(n, size=None):
    size = size or (n.bit_length() + 7) // 8
    return b64(n.to_bytes(size, "big"))
def enc(o): return b64(json.dumps(o, separators=(",", ":")).encode())

def sign(header, claims, signer):
    si = f"{enc(header)}.{enc(claims)}"
    return f"{si}.{b64(signer(si.encode()))}"

ed = serialization.load_pem_private_key(ED_PEM, None)
ed_x = b64(ed.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
rk = rsa.generate_private_key(public_exponent=65537, key_size=2048)
rn = rk.public_key().public_numbers()
eck = ec.generate_private_key(ec.SECP256R1())
en = eck.public_key().public_numbers()

def es256(m):
    r, s = decode_dss_signature(eck.sign(m, ec.ECDSA(hashes.SHA256())))
    n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    s = min(s, n - s)  # low S: the high-S twin is refused as malleated
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")

jwks = {"keys": [
    {"kid": "kc-rsa", "kty": "RSA", "alg": "RS256", "use": "sig", "n": bint(rn.n), "e": bint(rn.e),
     "x5c": ["MIIB"], "x5t": "abc", "x5t#S256": "def"},
    {"kid": "kc-enc", "kty": "RSA", "alg": "RSA-OAEP", "use": "enc", "n": bint(rn.n), "e": bint(rn.e)},
    {"kid": "ec1", "kty": "EC", "crv": "P-256", "use": "sig", "x": bint(en.x, 32), "y": bint(en.y, 32)},
    {"kid": "k1", "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "x": ed_x},
    {"kid": "h", "kty": "oct", "k": "c2VjcmV0"},
]}
keycloak = {"iss": ISS, "sub": "alice", "aud": "pep-client", "azp": "app", "typ": "Bearer", "exp": 2000000000,
            "iat": 1750000000, "authorization": {"permissions": [{"rsid": "r1", "rsname": "alice", "scopes": ["protected_get"]}]}}
gluu = {"iss": ISS, "client_id": "app", "aud": "app", "exp": 2000000000, "iat": 1750000000,
        "pct_claims": {"sub": "alice"}, "permissions": [{"resource_id": "r2", "resource_scopes": ["protected_get"], "exp": 2000000000, "params": None}]}
seeds = {
    "ed_keycloak": sign({"alg": "EdDSA", "kid": "k1", "typ": "JWT"}, keycloak, ed.sign),
    "ed_gluu": sign({"alg": "EdDSA", "kid": "k1", "typ": "JWT"}, gluu, ed.sign),
    "rs256_keycloak": sign({"alg": "RS256", "typ": "JWT", "kid": "kc-rsa"}, keycloak,
                           lambda m: rk.sign(m, padding.PKCS1v15(), hashes.SHA256())),
    "ps256": sign({"alg": "PS256", "kid": "kc-rsa"}, keycloak,
                  lambda m: rk.sign(m, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())),
    "es256_gluu": sign({"alg": "ES256", "kid": "ec1"}, gluu, es256),
    "hs256": f'{enc({"alg": "HS256", "kid": "h"})}.{enc(keycloak)}.c2ln',
    "none": f'{enc({"alg": "none", "kid": "k1"})}.{enc(keycloak)}.',
    "no_exp": sign({"alg": "EdDSA", "kid": "k1"}, {"iss": ISS, "sub": "a"}, ed.sign),
    "opaque": "7c9e6679-7425-40de-944b-e07fc1f90ae7_12345678",
}
os.makedirs(OUT, exist_ok=True)
body = json.dumps(jwks)
for name, token in seeds.items():
    with open(os.path.join(OUT, name), "w") as f:
        f.write(token + "\n" + body)
with open(os.path.join(OUT, "empty_jwks"), "w") as f:
    f.write(seeds["ed_keycloak"] + "\n" + '{"keys":[]}')
print(f"wrote {len(seeds) + 1} seeds to {OUT}", file=sys.stderr)

"""JWT (RFC 7519) verification with ``cryptography`` alone: the asymmetric JWS algorithms an
identity provider signs with (RS*, PS*, ES*), the registered claims a login depends on.

Written for start-up time: a login is a process, and PyJWT's import (it pulls its HTTP client
and the X.509 machinery) costs more than the whole check. Nothing here accepts ``none`` or an
HMAC: only the algorithms in :data:`ALGORITHMS`, and only with a key of the matching type.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from one_drivers.core.errors import BadInput, PermissionDenied

# alg -> (family, hash name, EC curve name, EC coordinate bytes)
ALGORITHMS: dict[str, tuple[str, str, str, int]] = {
    "RS256": ("rsa", "SHA256", "", 0), "RS384": ("rsa", "SHA384", "", 0),
    "RS512": ("rsa", "SHA512", "", 0),
    "PS256": ("pss", "SHA256", "", 0), "PS384": ("pss", "SHA384", "", 0),
    "PS512": ("pss", "SHA512", "", 0),
    "ES256": ("ec", "SHA256", "P-256", 32), "ES384": ("ec", "SHA384", "P-384", 48),
    "ES512": ("ec", "SHA512", "P-521", 66),
}
MAX_TOKEN = 16 << 10


def _b64(part: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except ValueError:
        raise BadInput("the token is not a JWT") from None


def split(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    """Header, claims, the signed bytes and the signature (nothing verified yet)."""
    parts = token.split(".")
    if len(token) > MAX_TOKEN or len(parts) != 3:
        raise BadInput("the token is not a JWT")
    try:
        header, claims = json.loads(_b64(parts[0])), json.loads(_b64(parts[1]))
    except ValueError:
        raise BadInput("the token is not a JWT") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise BadInput("the token is not a JWT")
    return header, claims, f"{parts[0]}.{parts[1]}".encode(), _b64(parts[2])


def _int(jwk: dict[str, Any], name: str) -> int:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise PermissionDenied(f"the issuer's key has no {name!r}")
    return int.from_bytes(_b64(value), "big")


def public_key(jwk: dict[str, Any], alg: str) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    family, _, curve, _ = ALGORITHMS[alg]
    if family in ("rsa", "pss"):
        if jwk.get("kty") != "RSA":
            raise PermissionDenied(f"the issuer's key is {jwk.get('kty')}, not RSA for {alg}")
        return rsa.RSAPublicNumbers(_int(jwk, "e"), _int(jwk, "n")).public_key()
    curves = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}
    if jwk.get("kty") != "EC" or jwk.get("crv") != curve:
        raise PermissionDenied(f"the issuer's key is not an EC {curve} key for {alg}")
    return ec.EllipticCurvePublicNumbers(_int(jwk, "x"), _int(jwk, "y"),
                                         curves[curve]).public_key()


def signature_ok(alg: str, key: Any, signed: bytes, signature: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, utils

    family, hash_name, _, size = ALGORITHMS[alg]
    digest = getattr(hashes, hash_name)()
    try:
        if family == "rsa":
            key.verify(signature, signed, padding.PKCS1v15(), digest)
        elif family == "pss":
            key.verify(signature, signed, padding.PSS(padding.MGF1(digest), digest.digest_size),
                       digest)
        else:
            if len(signature) != 2 * size:  # JWS carries R || S, not DER
                return False
            der = utils.encode_dss_signature(int.from_bytes(signature[:size], "big"),
                                             int.from_bytes(signature[size:], "big"))
            key.verify(der, signed, ec.ECDSA(digest))
    except InvalidSignature:
        return False
    return True


def check_claims(claims: dict[str, Any], *, issuer: str, audience: str, leeway: float,
                 now: float | None = None) -> None:
    """iss and aud as configured; exp required and not past; nbf and iat not in the future
    (``leeway`` seconds of clock skew either way)."""
    now = time.time() if now is None else now

    def number(name: str) -> float | None:
        value = claims.get(name)
        if value is None:
            return None
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise PermissionDenied(f"the token's {name} is not a number")
        return float(value)

    if claims.get("iss") != issuer:
        raise PermissionDenied(f"the token was not issued by {issuer!r} (iss)")
    aud = claims.get("aud")
    if audience not in (aud if isinstance(aud, list) else [aud]):
        raise PermissionDenied(f"the token is not for {audience!r} (aud)")
    exp = number("exp")
    if exp is None:
        raise PermissionDenied("the token has no expiry (exp)")
    if now > exp + leeway:
        raise PermissionDenied("the token has expired")
    for name in ("nbf", "iat"):
        value = number(name)
        if value is not None and value > now + leeway:
            raise PermissionDenied(f"the token is not valid yet ({name})")

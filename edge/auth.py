"""Who may open a session: API keys (stored as SHA-256 hashes), JWT bearer tokens (HS256 with a
shared secret, RS256 with a public key) and the browser Origin allow-list (docs/SECURITY.md).

Secrets never reach a log: refusals are logged with their reason and the peer's address only.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from edge.settings import EdgeSettings

logger = logging.getLogger(__name__)

API_KEY_PREFIX = "sme_"
"""Marks an edge API key (so a leaked one is recognisable by secret scanners)."""
HASH_SCHEME = "sha256"
"""Keys are 256 random bits, so one unsalted SHA-256 is enough: nothing to brute-force."""
JWT_ALGORITHMS = ("HS256", "RS256")
JWT_LEEWAY_S = 30
"""Clock skew tolerated on ``exp``/``nbf``/``iat``."""
JWT_REQUIRED_CLAIMS = ["exp", "sub"]
"""``sub`` names the client, for the per-key session limit."""


class AuthError(Exception):
    """A refused credential; the message is safe to log (it never contains the credential)."""


class EdgeConfigError(ValueError):
    """Authentication or TLS settings that cannot work."""


@dataclass(frozen=True)
class Principal:
    """An authenticated client: ``name`` is the API key's name or the JWT's ``sub``."""

    name: str
    kind: str
    roles: frozenset[str] = frozenset()
    """A JWT's ``roles`` claim (a list of names, or one name): ``moderator`` may decide incidents."""

    @property
    def key(self) -> str:
        """Identity the per-key session limit counts under."""
        return f"{self.kind}:{self.name}"


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    return f"{HASH_SCHEME}:{hashlib.sha256(key.encode()).hexdigest()}"


def key_line(name: str, key: str) -> str:
    """The line of an API keys file that accepts ``key`` under ``name``."""
    return f"{name} {hash_api_key(key)}"


def parse_key_hashes(text: str, source: str) -> dict[str, str]:
    """``{hash: name}`` from ``NAME sha256:HEX`` entries (lines, or commas), ``#`` comments allowed."""
    hashes: dict[str, str] = {}
    for number, raw in enumerate(text.replace(",", "\n").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        scheme, _, digest = parts[-1].partition(":")
        if len(parts) != 2 or scheme != HASH_SCHEME or len(digest) != 64:
            raise EdgeConfigError(f"{source}, entry {number}: expected 'NAME {HASH_SCHEME}:<64 hex digits>'")
        hashes[f"{scheme}:{digest.lower()}"] = parts[0]
    return hashes


class JwtVerifier:
    """Checks a JWT's signature (only with the algorithms configured), ``exp`` and, when set,
    its audience and issuer."""

    def __init__(self, keys: dict[str, object], audience: str | None, issuer: str | None):
        self.keys, self.audience, self.issuer = keys, audience, issuer

    def verify(self, token: str) -> Principal:
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
            if not isinstance(algorithm, str) or algorithm not in self.keys:
                raise AuthError(f"JWT algorithm {algorithm!r} is not accepted here")
            claims = jwt.decode(token, self.keys[algorithm], algorithms=[algorithm], audience=self.audience,
                                issuer=self.issuer, leeway=JWT_LEEWAY_S,
                                options={"require": JWT_REQUIRED_CLAIMS})
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("expired JWT") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid JWT ({type(exc).__name__})") from exc
        roles = claims.get("roles", [])
        return Principal(str(claims["sub"]), "jwt", frozenset([roles] if isinstance(roles, str) else map(str, roles)))


@dataclass(frozen=True)
class Authenticator:
    """``enabled`` False: every client is let in anonymously (EDGE_AUTH=none)."""

    enabled: bool
    key_hashes: dict[str, str] = field(default_factory=dict)
    jwt: JwtVerifier | None = None

    def authenticate(self, credential: str | None) -> Principal | None:
        """The client behind ``credential``; None when authentication is off; AuthError if refused."""
        if not self.enabled:
            return None
        if not credential:
            raise AuthError("no credential")
        name = self.key_hashes.get(hash_api_key(credential))
        if name is not None:
            return Principal(name, "api_key")
        if self.jwt is not None and credential.count(".") == 2:
            return self.jwt.verify(credential)
        raise AuthError("unknown API key")


@dataclass(frozen=True)
class OriginPolicy:
    """Browser origins allowed to open sessions; a request without Origin is not from a browser."""

    allowed: frozenset[str]
    any_origin: bool = False

    def allows(self, origin: str | None, host: str | None = None) -> bool:
        """``host`` is the request's Host: a page the edge served itself (the console) is always
        allowed, whatever the scheme a TLS-terminating proxy leaves the edge to see."""
        if origin is None or self.any_origin or origin.rstrip("/").lower() in self.allowed:
            return True
        return host is not None and urlsplit(origin).netloc.lower() == host.lower()


def origin_policy(settings: EdgeSettings) -> OriginPolicy:
    entries = {o.strip().rstrip("/").lower() for o in settings.allowed_origins.split(",") if o.strip()}
    return OriginPolicy(frozenset(entries - {"*"}), "*" in entries)


def _key_hashes(settings: EdgeSettings) -> dict[str, str]:
    hashes: dict[str, str] = {}
    if settings.api_keys_file is not None:
        try:
            text = Path(settings.api_keys_file).read_text()
        except OSError as exc:
            raise EdgeConfigError(f"EDGE_API_KEYS_FILE: cannot read {settings.api_keys_file}: {exc}") from exc
        hashes.update(parse_key_hashes(text, str(settings.api_keys_file)))
    if settings.api_key_hashes is not None:
        hashes.update(parse_key_hashes(settings.api_key_hashes, "EDGE_API_KEY_HASHES"))
    return hashes


def _jwt_verifier(settings: EdgeSettings) -> JwtVerifier | None:
    keys: dict[str, object] = {}
    if settings.jwt_secret is not None:
        keys["HS256"] = settings.jwt_secret
    if settings.jwt_public_key_file is not None:
        try:
            keys["RS256"] = serialization.load_pem_public_key(Path(settings.jwt_public_key_file).read_bytes())
        except (OSError, ValueError, TypeError) as exc:
            raise EdgeConfigError(f"EDGE_JWT_PUBLIC_KEY_FILE: no PEM public key in "
                                  f"{settings.jwt_public_key_file}: {exc}") from exc
        if not isinstance(keys["RS256"], rsa.RSAPublicKey):
            raise EdgeConfigError(f"EDGE_JWT_PUBLIC_KEY_FILE: {settings.jwt_public_key_file} is not an RSA key")
    return JwtVerifier(keys, settings.jwt_audience, settings.jwt_issuer) if keys else None


def credentials_configured(settings: EdgeSettings) -> bool:
    return any(v is not None for v in (settings.api_keys_file, settings.api_key_hashes, settings.jwt_secret,
                                       settings.jwt_public_key_file))


def authenticator(settings: EdgeSettings) -> Authenticator:
    """The authenticator ``settings`` describe; EdgeConfigError when they cannot work."""
    if settings.auth == "none" or (settings.auth is None and not credentials_configured(settings)):
        logger.warning("client authentication is OFF (%s): anyone who reaches this edge can use it",
                       "EDGE_AUTH=none" if settings.auth == "none"
                       else "EDGE_AUTH unset and no credentials; python -m edge refuses this")
        return Authenticator(enabled=False)
    hashes, verifier = _key_hashes(settings), _jwt_verifier(settings)
    if not hashes and verifier is None:
        raise EdgeConfigError("EDGE_AUTH=required but no API key or JWT key is configured (see docs/SECURITY.md)")
    logger.info("client authentication on: %d API key(s), JWT %s", len(hashes),
                "+".join(verifier.keys) if verifier else "off")
    return Authenticator(True, hashes, verifier)


def credential(headers, query_params) -> str | None:
    """``Authorization: Bearer …``, else the ``token`` query parameter (browsers cannot set headers
    on a WebSocket); an Authorization header of another scheme counts as no credential."""
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return query_params.get("token") or None


def serving_options(settings: EdgeSettings) -> dict[str, object]:
    """uvicorn options of a served edge: its TLS files. Refuses (SystemExit) to serve an edge
    whose authentication was never chosen: EDGE_AUTH unset and no credential configured."""
    if settings.auth is None and not credentials_configured(settings):
        raise SystemExit("refusing to serve without client authentication: configure API keys or JWT keys, "
                         "or set EDGE_AUTH=none to run open on purpose (docs/SECURITY.md)")
    if (settings.ssl_certfile is None) != (settings.ssl_keyfile is None):
        raise SystemExit("TLS needs both EDGE_SSL_CERTFILE and EDGE_SSL_KEYFILE")
    if settings.ssl_certfile is None:
        return {}
    return {"ssl_certfile": settings.ssl_certfile, "ssl_keyfile": settings.ssl_keyfile}


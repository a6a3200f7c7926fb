"""Authentication of the CDS client (CDS Hooks 2.0 "Trusting CDS Clients" + best practices).

Every call carries ``Authorization: Bearer <JWT>`` signed by the client.  We trust a client only
through the ``trusted_issuers`` setting ({iss: JWKS URL}); keys are fetched from that URL and
nowhere else (jwks.py): a token's own ``jku`` is ignored, so it can never make us call an
attacker's host (SSRF), and a sandbox naming its public ``jku`` can be trusted with a local copy.  Only
ES384 and RS384 are accepted: the spec forbids ``none`` and symmetric algorithms, and pinning the
algorithm before any key work closes the classic algorithm-confusion attacks.  Every failure is a
:class:`CdsAuthError` whose reason is a fixed phrase for the log: it never quotes the token or
any attacker-controlled header or claim value.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

import cachetools
import jwt

from cds_service.errors import CdsAuthError
from cds_service.protocol.jwks import KeySets
from cds_service.runtime.settings import Settings

log = logging.getLogger(__name__)

ALGORITHMS = frozenset({"ES384", "RS384"})
REQUIRED_CLAIMS = ("iss", "aud", "exp", "iat", "jti")
MAX_SEEN_JTIS = 200_000  # ~55 calls/s for an hour; beyond that the oldest jtis are forgotten


def _canonical(url: str) -> str:
    """Scheme and host lower-cased, one trailing '/' dropped: how aud values compare."""
    url = url[:-1] if url.endswith("/") else url
    scheme, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    return f"{scheme.lower()}{sep}{host.lower()}{slash}{path}" if sep else url


class ClientAuthenticator:
    """Verifies CDS client JWTs; thread-safe, one instance per app.

    ``clock`` is injectable so tests can move time without sleeping; it also drives the key-set
    cache (jwks.py) and the TTL cache of seen jtis.
    """

    def __init__(self, settings: Settings, *, key_sets: KeySets | None = None,
                 clock: Callable[[], float] = time.time,
                 claim: Callable[[str, str, float, float], bool] | None = None):
        self._issuers = dict(settings.trusted_issuers)
        self._leeway = float(settings.jwt_leeway_s)
        self._max_age = float(settings.jwt_max_age_s)
        self._clock = clock
        self.key_sets = key_sets or KeySets(set(self._issuers.values()), ttl=settings.jwks_cache_ttl_s,
                                             refresh_interval=settings.jwks_refresh_interval_s, clock=clock)
        # A token is usable until iat + max_age, and iat may be up to leeway ahead of us.
        self._seen: cachetools.TTLCache = cachetools.TTLCache(
            maxsize=MAX_SEEN_JTIS, ttl=self._max_age + self._leeway, timer=clock)
        self._seen_lock = threading.Lock()
        # The deployment's replay record (the store: shared by every worker); the in-process
        # cache above is only for an authenticator made without one (tests, embedding).
        self._claim = claim

    def verify(self, authorization: str | None, audience: str | tuple[str, ...]) -> dict:
        """Return the verified claims or raise CdsAuthError(reason).

        Cheap, offline checks come first (header, alg, trusted iss) so that a forged token
        costs no key work and no network; the jti is recorded last, so a token that fails any
        check does not burn its jti.
        """
        token = self._bearer(authorization)
        header = self._header(token)
        iss = self._unverified_issuer(token)
        url = self._issuers[iss]
        # A token's jku is never fetched: the issuer's configured JWKS URL decides (finding 14:
        # the sandbox always names its public jku, which an operator may map to a local copy).
        key = self._key(url, header["kid"], header["alg"])
        claims = self._decode(token, key, header["alg"])
        self._check_times(claims)
        self._check_audience(claims["aud"], audience)
        self._check_replay(iss, claims["jti"])
        return claims

    @staticmethod
    def _bearer(authorization: str | None) -> str:
        """The token from ``Authorization: Bearer <jwt>``; the scheme is case-insensitive."""
        if not authorization:
            raise CdsAuthError("no Authorization header")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise CdsAuthError("Authorization is not a Bearer token")
        return token.strip()

    @staticmethod
    def _header(token: str) -> dict:
        """The unverified JOSE header, vetted before any key is looked up or fetched."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise CdsAuthError("malformed token") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALGORITHMS:  # a list or object here is unhashable: no 500
            raise CdsAuthError("alg is not ES384 or RS384")
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.upper() != "JWT"):
            raise CdsAuthError("typ is not JWT")
        if not isinstance(header.get("kid"), str) or not header["kid"]:
            raise CdsAuthError("kid missing")
        return header

    def _unverified_issuer(self, token: str) -> str:
        """The ``iss`` claim, read unverified only to pick the trusted key set."""
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise CdsAuthError("malformed token payload") from None
        iss = claims.get("iss")
        if not isinstance(iss, str) or iss not in self._issuers:
            raise CdsAuthError("iss missing or not trusted")
        return iss

    def _key(self, url: str, kid: str, alg: str) -> jwt.PyJWK:
        """The public key ``kid`` of the trusted set; an unknown kid asks for a (rate-limited) refresh."""
        keys = self.key_sets.get(url)
        if keys is not None and kid not in keys:
            keys = self.key_sets.get(url, unknown_kid=True)
        if keys is None:
            raise CdsAuthError("the issuer's JWKS is unavailable")
        jwk = keys.get(kid)
        if jwk is None:
            raise CdsAuthError("kid not in the issuer's JWKS")
        if jwk.get("alg", alg) != alg:
            raise CdsAuthError("key is not meant for the token's alg")
        try:
            return jwt.PyJWK(jwk, algorithm=alg)
        except jwt.PyJWTError:
            raise CdsAuthError("key does not fit the token's alg") from None

    @staticmethod
    def _decode(token: str, key: jwt.PyJWK, alg: str) -> dict:
        """Verify the signature (with the pinned alg) and that the required claims exist."""
        options = {"require": list(REQUIRED_CLAIMS), "verify_exp": False, "verify_iat": False,
                   "verify_nbf": False, "verify_aud": False, "verify_iss": False}
        try:
            return jwt.decode(token, key=key, algorithms=[alg], options=options)
        except jwt.MissingRequiredClaimError:
            raise CdsAuthError("a required claim is missing") from None
        except jwt.PyJWTError as exc:
            raise CdsAuthError(f"token rejected ({type(exc).__name__})") from None

    def _check_times(self, claims: dict) -> None:
        """exp, iat (and nbf if present) against our clock, with the configured leeway."""
        exp, iat, nbf = claims["exp"], claims["iat"], claims.get("nbf", 0)
        if not all(_is_number(v) for v in (exp, iat, nbf)):
            raise CdsAuthError("exp/iat/nbf is not a number")
        now = self._clock()
        if exp + self._leeway <= now:
            raise CdsAuthError("token expired")
        if iat - self._leeway > now or nbf - self._leeway > now:
            raise CdsAuthError("token issued in the future")
        if now - iat > self._max_age:
            raise CdsAuthError("token too old (iat)")

    @staticmethod
    def _check_audience(aud, audience: str | tuple[str, ...]) -> None:
        """``aud`` (string or list) must name exactly one of the URLs this endpoint is known by
        (audience.py: configured or our own address, never the client's Host), give or take one
        '/'; scheme and host compare case-insensitively."""
        auds = [aud] if isinstance(aud, str) else aud
        if not isinstance(auds, list) or not all(isinstance(a, str) for a in auds):
            raise CdsAuthError("aud is not a string or list of strings")
        expected = {_canonical(a) for a in ((audience,) if isinstance(audience, str) else audience)}
        if expected.isdisjoint(_canonical(a) for a in auds):
            raise CdsAuthError("aud does not name this service's configured or own URL")

    def _check_replay(self, iss: str, jti) -> None:
        """Refuse a second use of (iss, jti) while the token could still be accepted."""
        if not isinstance(jti, str) or not jti:
            raise CdsAuthError("jti is not a non-empty string")
        if self._claim is not None:
            now = self._clock()
            if not self._claim(iss, jti, now + self._max_age + 2 * self._leeway, now):
                raise CdsAuthError("jti replayed")
            return
        with self._seen_lock:
            if (iss, jti) in self._seen:
                raise CdsAuthError("jti replayed")
            self._seen[(iss, jti)] = True


def _is_number(value) -> bool:
    """A finite JSON number (Python's json accepts NaN/Infinity, which would defeat exp/iat)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


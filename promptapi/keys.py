"""Credentials: consumer API keys (stored hashed, checked in memory) and the admin token."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

KEY_PREFIX = "pk_"
ADMIN_TOKEN_PREFIX = "pa_"


def hash_secret(secret: str) -> str:
    # Keys are 256-bit random strings, so a fast hash is enough: nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key() -> tuple[str, str, str, str]:
    """(plaintext, id, display prefix, hash) for a new consumer key."""
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    return plaintext, "key_" + secrets.token_hex(8), plaintext[:10], hash_secret(plaintext)


def new_admin_token() -> str:
    return ADMIN_TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: a consumer key, the admin, or nobody (when anonymous calls are open)."""

    key_id: str | None
    name: str
    admin: bool = False
    scopes: tuple[str, ...] = field(default=("*",))
    allow_drafts: bool = False

    @property
    def drafts(self) -> bool:
        """May call draft versions: the admin, or a key created with allow_drafts."""
        return self.admin or self.allow_drafts


def _caller(key: dict) -> Caller:
    return Caller(
        key_id=key["id"],
        name=key["name"],
        scopes=tuple(key["scopes"]),
        allow_drafts=bool(key.get("allow_drafts")),
    )


ANONYMOUS = Caller(key_id=None, name="anonymous")
ADMIN = Caller(key_id=None, name="admin", admin=True)


class KeyCache:
    """Every active key by hash. Updated at once on this process's writes, and on refresh."""

    def __init__(self) -> None:
        self._by_hash: dict[str, Caller] = {}
        self._admin_hash: str | None = None

    def replace(self, active: list[tuple[str, dict]]) -> None:
        self._by_hash = {key_hash: _caller(k) for key_hash, k in active}

    def add(self, key_hash: str, key: dict) -> None:
        self._by_hash[key_hash] = _caller(key)

    def remove(self, key_id: str) -> None:
        self._by_hash = {h: c for h, c in self._by_hash.items() if c.key_id != key_id}

    def set_admin_hash(self, token_hash: str) -> None:
        self._admin_hash = token_hash

    def check(self, token: str) -> Caller | None:
        digest = hash_secret(token)
        caller = self._by_hash.get(digest)
        if caller is not None:
            return caller
        if self._admin_hash is not None and hmac.compare_digest(digest, self._admin_hash):
            return ADMIN
        return None

    def is_admin(self, token: str) -> bool:
        return self._admin_hash is not None and hmac.compare_digest(
            hash_secret(token), self._admin_hash
        )

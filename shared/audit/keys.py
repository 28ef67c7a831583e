"""The audit chain's key: HMAC-SHA-256 as the database computes it, as Python checks it, and checkpoints.

The key (SHOUHU_AUDIT_KEY, from settings) is never stored in the database. Each
connection of an engine made with it carries it as a connection setting
(`shouhu.audit_key`, sent in the connection's start-up packet, so it is in no
statement text, no pg_stat_activity row and no statement log); the sealing
trigger reads it there while the COMMIT runs (migration 0014). What is sent is
the key's two padded HMAC blocks (RFC 2104: K xor ipad, K xor opad), so the
database computes a standard HMAC with its built-in sha256() and no extension,
and Python checks it with `hmac` independently.

Three things are keyed, each with its own first field so no MAC can stand in
for another: an entry's hash (its material starts with its sequence number),
the chain head's signature ("head"), and a checkpoint ("checkpoint").
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

CONNECTION_SETTING = "shouhu.audit_key"
_SEP = "\x1f"  # the unit separator, which no field can contain (see shared.audit.service.entry_hash)
_BLOCK = 64  # SHA-256's block size in bytes


def key_bytes(secret: str) -> bytes:
    return secret.encode()


def connection_value(secret: str) -> str:
    """The key as the database's audit_hmac() takes it: the inner and outer padded blocks, hex."""
    key = key_bytes(secret)
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return (bytes(b ^ 0x36 for b in key) + bytes(b ^ 0x5C for b in key)).hex()


def mac(key: bytes, *fields: str) -> str:
    """HMAC-SHA-256 over the fields joined by the unit separator, hex."""
    return hmac.digest(key, _SEP.join(fields).encode(), "sha256").hex()


def head_signature(key: bytes, *, seq: int, hash_: str, keyed_from: int) -> str:
    """The chain head's signature: moving the head back (a cut tail) needs the key."""
    return mac(key, "head", str(seq), hash_, str(keyed_from))


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement "the chain had `entries` entries, the last with hash `hash`", kept outside the database.

    `token()` is what a supervisor stores and later passes to GET /v1/audit/verify?checkpoint=...
    """

    entries: int
    hash: str
    signature: str

    PREFIX = "shouhu-audit"

    @classmethod
    def make(cls, key: bytes, *, entries: int, hash_: str) -> Checkpoint:
        return cls(entries, hash_, cls._sign(key, entries, hash_))

    @staticmethod
    def _sign(key: bytes, entries: int, hash_: str) -> str:
        return mac(key, "checkpoint", str(entries), hash_)

    def token(self) -> str:
        return f"{self.PREFIX}:{self.entries}:{self.hash}:{self.signature}"

    @classmethod
    def parse(cls, token: str, key: bytes) -> Checkpoint:
        """Read a token and check its signature; ValueError says what is wrong."""
        parts = token.strip().split(":")
        if len(parts) != 4 or parts[0] != cls.PREFIX:
            raise ValueError(f"expected {cls.PREFIX}:<entries>:<hash>:<signature>, as `shouhu audit checkpoint` prints")
        _, entries, hash_, signature = parts
        if not entries.isdigit() or len(entries) > 18:
            raise ValueError("entries must be a whole number")
        hexdigits = set("0123456789abcdef")
        if len(hash_) != 64 or len(signature) != 64 or not set(hash_ + signature) <= hexdigits:
            raise ValueError("hash and signature must be 64 lowercase hex digits each")
        if not hmac.compare_digest(signature, cls._sign(key, int(entries), hash_)):
            raise ValueError("signature does not match: not made with this deployment's audit key, or altered")
        return cls(int(entries), hash_, signature)

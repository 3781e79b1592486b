"""Admin passwords and API tokens: scrypt hashes (RFC 7914) and SHA-256 of random tokens.

A password is stored as `scrypt$N$r$p$SALT$HASH` (salt and hash in hex); `verify_password` compares in
constant time and accepts only this form. Hashing costs about 16 MiB and tens of milliseconds by design: the
console runs it in a thread (`in_thread`), never on the reactor. An unknown user is checked against a dummy
hash, so a wrong name and a wrong password take the same time (no user enumeration).

Tokens are 32 random bytes (URL-safe base64, `pbx_` prefix); the store keeps only their SHA-256.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
_DKLEN = 32
_MAXMEM = 64 * 1024 * 1024
MIN_PASSWORD = 8
"""The shortest admin password accepted."""
MAX_PASSWORD = 1024


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """A new salted scrypt hash of `password`."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=_DKLEN, maxmem=_MAXMEM)
    return f"scrypt${n}${r}${p}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches `stored` (a `hash_password` result); False for anything malformed."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return False
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, expected = bytes.fromhex(parts[4]), bytes.fromhex(parts[5])
    except ValueError:
        return False
    if not (2 <= n <= 2**20 and 1 <= r <= 32 and 1 <= p <= 16 and len(expected) == _DKLEN):
        return False
    if len(password) > MAX_PASSWORD:
        return False
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=_DKLEN, maxmem=_MAXMEM)
    return hmac.compare_digest(digest, expected)


_DUMMY: list[str] = []


def dummy_hash() -> str:
    """Checked when a login names no user, so that it costs what a wrong password costs (made once)."""
    if not _DUMMY:
        _DUMMY.append(hash_password(secrets.token_urlsafe(16)))
    return _DUMMY[0]


def password_problem(password: str) -> str | None:
    """Why `password` cannot be an admin password, or None."""
    if len(password) < MIN_PASSWORD:
        return f"a password needs at least {MIN_PASSWORD} characters"
    if len(password) > MAX_PASSWORD:
        return f"a password has at most {MAX_PASSWORD} characters"
    return None


def new_token() -> str:
    """A new bearer token (shown once to its owner)."""
    return "pbx_" + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What the store keeps of a token."""
    return hashlib.sha256(token.encode()).hexdigest()

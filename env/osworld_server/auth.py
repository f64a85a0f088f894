"""The per-session token every request must carry.

OSWorld's own controllers build their URLs as ``f"http://{vm_ip}:{port}/..."``; given
``vm_ip="TOKEN:@127.0.0.1"`` the ``requests`` library sends HTTP basic auth with TOKEN as the user
name (the colon matters: with no password part requests sends no auth at all). So the token is
accepted both as ``Authorization: Bearer TOKEN`` and as basic auth with it as the user name (the
password is ignored).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets

MIN_TOKEN_CHARS = 16


def new_token() -> str:
    """URL-safe (it must survive being put in a URL's user part), and never starting with "-": a
    token that does reads as an option in `--vm-token TOKEN` (1 in 64 did)."""
    while True:
        token = secrets.token_urlsafe(24)
        if not token.startswith("-"):
            return token


def check_token(token: str) -> str:
    """A usable token or a one-line ValueError: short tokens are guessable, and ``@``, ``:`` or
    ``/`` would break the basic-auth-in-the-URL form OSWorld's code relies on."""
    token = token.strip()
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"the token must have at least {MIN_TOKEN_CHARS} characters, got {len(token)}")
    bad = sorted({c for c in token if not (c.isascii() and (c.isalnum() or c in "-_.~"))})
    if bad:
        raise ValueError(f"the token may hold only letters, digits and -_.~, not {''.join(bad)!r}")
    return token


def presented_token(authorization: str | None) -> str | None:
    """The token in an Authorization header, bearer or basic (user name), else None."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            user, _, _password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user
    return None


def token_matches(expected: str, authorization: str | None) -> bool:
    got = presented_token(authorization)
    # compare_digest on bytes: constant time in the content, whatever the presented length.
    return got is not None and hmac.compare_digest(got.encode(), expected.encode())

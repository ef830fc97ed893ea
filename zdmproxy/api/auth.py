"""Bearer-token authentication: the token is read from a file (a Kubernetes secret), compared in
constant time, and required on every route but the health probes when the daemon has one."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from zdmproxy.api.problems import ApiError
from zdmproxy.errors import ConfigError

_scheme = HTTPBearer(auto_error=False, description="the token from the daemon's token file")


def read_token(path: Path) -> str:
    """The token in ``path``, surrounding whitespace removed; a missing or empty file is an error."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the token file {path}: {exc.strerror}") from None
    if len(token) < 16:
        raise ConfigError(f"the token file {path} holds {len(token)} characters; use at least 16 (random)")
    return token


def bearer(token: str | None) -> Callable[..., Awaitable[None]]:
    """A dependency that checks the Authorization header against ``token`` (None: no check)."""
    expected = token.encode() if token is not None else None

    async def check(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_scheme)],
    ) -> None:
        if expected is None:
            return
        given = credentials.credentials.encode() if credentials is not None else b""
        if not hmac.compare_digest(given, expected):
            raise ApiError("unauthorized", "missing or wrong bearer token (Authorization: Bearer <token>)")

    return check

"""A bound on request bodies, enforced before anything reads them whole."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zdmproxy.api.models import MAX_SQL_BYTES
from zdmproxy.api.problems import problem

MAX_BODY_BYTES = MAX_SQL_BYTES + 64 * 1024  # the largest SQL accepted, JSON-escaped, and the knobs


class BodyLimit:
    """413 for a body over ``limit`` bytes: by its Content-Length, or while it streams in."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge()
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(
            "body_too_large",
            f"the request body is over {self.limit} bytes; split the migration into several",
        )
        await response(scope, receive, send)


class _TooLarge(HTTPException):
    """Raised from ``receive``: an HTTPException, so the framework's body reader passes it on."""

    def __init__(self) -> None:
        super().__init__(413, "the request body is too large; split the migration into several")

"""Errors as RFC 9457 problem details: a stable ``code`` (errors.py's), a message saying what was
wrong and what to do, and the SQLSTATE and position where PostgreSQL gave them.

Bad input is always a 4xx: only a bug in zdmproxy is a 500, and its body says nothing of the
internals (no traceback, no connection string).
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from zdmproxy.api.models import Problem
from zdmproxy.errors import ZdmError

log = logging.getLogger("zdmproxy.api")

MEDIA_TYPE = "application/problem+json"

# A ZdmError's code -> HTTP status; anything not listed is a 422 (the request cannot be done).
_STATUS = {
    "usage": 400,
    "parse_error": 400,
    "malformed_json": 400,
    "unauthorized": 401,
    "not_found": 404,
    "checksum_conflict": 409,
    "not_running": 409,
    "body_too_large": 413,
    "not_implemented": 501,
    "database_unreachable": 503,
    "bad_configuration": 503,
    "shutting_down": 503,
    "wait_timed_out": 504,
}


class ApiError(ZdmError):
    """An error of the HTTP layer itself, with its own code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def problem(code: str, message: str, status: int | None = None, **extra: Any) -> JSONResponse:
    status = status or _STATUS.get(code, 422)
    body = Problem(
        title=HTTPStatus(status).phrase, status=status, detail=message, code=code, **extra
    ).model_dump(exclude_none=True)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def from_error(error: ZdmError) -> JSONResponse:
    details = error.as_dict()
    return problem(
        error.code,
        error.message,
        sqlstate=details.get("sqlstate"),
        position=details.get("position"),
    )


def install(app: FastAPI) -> None:
    """Every error the app can produce becomes a problem document."""

    async def zdm_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ZdmError)
        return from_error(exc)

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"location": [str(part) for part in e.get("loc", ())], "message": str(e.get("msg", ""))}
            for e in exc.errors()
        ]
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            return problem(
                "malformed_json", f"the body is not valid JSON: {errors[0]['message']}", errors=errors
            )
        said = "; ".join(f"{'.'.join(e['location'])}: {e['message']}" for e in errors)
        return problem("invalid_request", f"the request is not valid: {said}", errors=errors)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(
            exc.status_code, "http_error"
        )
        return problem(code, str(exc.detail), status=exc.status_code)

    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s %s: %s", request.method, request.url.path, type(exc).__name__)
        return problem("internal_error", "internal error in zdmproxy (see the daemon's log)", status=500)

    app.add_exception_handler(ZdmError, zdm_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, bug)

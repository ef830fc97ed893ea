"""``zdmproxy cancel|pause|resume ID``, ``throttle ID ...``, and ``apply`` through a running daemon.

With a daemon configured (``--daemon-url``, ZDM_DAEMON_URL: ``http://host:port`` or
``unix:/path/to/api.sock``) the commands go through its HTTP API; without one, the control
commands write the request into the journal directly (``--dsn``): the process running the
migration obeys it either way, whichever daemon or CLI that is.
"""

from __future__ import annotations

import argparse
import json
import typing
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Literal

import httpx
from rich.markup import escape

from zdmproxy.api.auth import read_token
from zdmproxy.api.models import Throttle
from zdmproxy.cli.progress import ServerSentEvents, follow_events
from zdmproxy.cli.shared import add_database_arguments, database_url, err, out, run_async
from zdmproxy.engine.events import Event
from zdmproxy.errors import DatabaseUnreachable, ExitCode, NotFound, RecordedFailure, UsageError, ZdmError
from zdmproxy.journal import control
from zdmproxy.journal.coordinator import Request
from zdmproxy.journal.folder import check_id
from zdmproxy.journal.store import Journal, open_existing
from zdmproxy.policy import MigrationPolicy
from zdmproxy.settings import Settings, load_settings

_EXIT_BY_STATUS = {
    400: ExitCode.USAGE,
    401: ExitCode.BAD_CONFIG,
    409: ExitCode.CONFLICT,
    422: ExitCode.FAILED,
    503: ExitCode.UNREACHABLE,
    504: ExitCode.WAIT_TIMED_OUT,
}
_EXIT_BY_STATE = {"succeeded": ExitCode.OK, "cancelled": ExitCode.CANCELLED, "paused": ExitCode.CANCELLED}
_WAIT_S = 300.0  # one long-poll; apply polls again until the migration settles


class DaemonClient:
    """The daemon's HTTP API; problem documents become ZdmErrors with the daemon's code."""

    def __init__(self, url: str, token: str | None, timeout_s: float = _WAIT_S + 30) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if url.startswith("unix:"):
            path = url.removeprefix("unix:").removeprefix("//")
            self.http = httpx.Client(
                transport=httpx.HTTPTransport(uds=path),
                base_url="http://zdmproxy",
                headers=headers,
                timeout=timeout_s,
            )
        else:
            self.http = httpx.Client(base_url=url, headers=headers, timeout=timeout_s)
        self.url = url

    def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise DatabaseUnreachable(f"cannot reach the daemon at {self.url}: {exc}") from None
        body: dict[str, Any] = response.json() if response.content else {}
        if response.is_success:
            return body
        raise RecordedFailure(
            f"the daemon answered {response.status_code}: {body.get('detail', response.text)}",
            code=str(body.get("code", "http_error")),
            exit_code=int(_EXIT_BY_STATUS.get(response.status_code, ExitCode.FAILED)),
        )

    def events(self, migration_id: str) -> Iterator[Event | str]:
        """The migration's event stream (from its first event): Events, and state names."""
        parser = ServerSentEvents()
        try:
            with self.http.stream("GET", f"/v1/migrations/{migration_id}/events", timeout=None) as stream:
                for line in stream.iter_lines():
                    item = parser.feed(line)
                    if item is not None:
                        yield item
        except httpx.TransportError as exc:
            raise DatabaseUnreachable(f"lost the daemon at {self.url}: {exc}") from None

    def close(self) -> None:
        self.http.close()


def add_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    for name, what in (
        ("cancel", "stop a migration (its running step is cut when a daemon runs it; resume goes on)"),
        ("pause", "pause a migration between steps (a backfill between batches)"),
        ("resume", "go on with a paused or cancelled migration"),
    ):
        command = commands.add_parser(name, help=what)
        command.add_argument("id", help="the migration id")
        _add_target(command)
        command.set_defaults(handler=run, action=name)
    throttle = commands.add_parser("throttle", help="change a running backfill's knobs, live")
    throttle.add_argument("id", help="the migration id")
    for field, info in Throttle.model_fields.items():
        flag = f"--{field.replace('_', '-')}"
        throttle.add_argument(flag, type=_knob_type(info.annotation), help=info.description)
    throttle.add_argument(
        "--clear",
        action="append",
        default=[],
        metavar="KNOB",
        help="remove a knob set before (e.g. sleep_ms)",
    )
    _add_target(throttle)
    throttle.set_defaults(handler=run, action="throttle")


def _add_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--daemon-url", help="a running daemon (ZDM_DAEMON_URL); without one, --dsn is written to"
    )
    parser.add_argument("--token-file", type=Path, help="the daemon's bearer token (ZDM_TOKEN_FILE)")
    add_database_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    migration_id = check_id(args.id)
    knobs = _knobs(args) if args.action == "throttle" else {}
    client = client_for(settings, args.daemon_url, args.token_file)
    if client is not None:
        try:
            path = f"/v1/migrations/{migration_id}/{args.action}"
            result = client.call("PATCH", path, json=knobs) if knobs else client.call("POST", path)
        finally:
            client.close()
    else:
        with ExitStack() as stack:
            dsn = database_url(args, settings, stack)
            result = run_async(_direct(dsn, migration_id, args.action, knobs), dsn=dsn)
    if args.json:
        out.print_json(json.dumps(result, default=str))
    else:
        err.print(f"{escape(migration_id)}: {escape(str(result.get('message') or result.get('throttle')))}")
    return int(ExitCode.OK)


def client_for(settings: Settings, url: str | None, token_file: Path | None) -> DaemonClient | None:
    """A client of the configured daemon, or None when there is none."""
    url = url or settings.daemon_url
    if url is None:
        return None
    token_file = token_file or settings.token_file
    return DaemonClient(url, read_token(token_file) if token_file is not None else None)


def _knob_type(annotation: Any) -> Callable[[str], object]:
    kinds = typing.get_args(annotation) or (annotation,)
    if bool in kinds:
        return _boolean
    return int if int in kinds else float


def _boolean(text: str) -> bool:
    if text.lower() in ("true", "yes", "on", "1"):
        return True
    if text.lower() in ("false", "no", "off", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def _knobs(args: argparse.Namespace) -> dict[str, Any]:
    given = {
        field: getattr(args, field) for field in Throttle.model_fields if getattr(args, field) is not None
    }
    unknown = [name for name in args.clear if name not in Throttle.model_fields]
    if unknown:
        raise UsageError(f"--clear {unknown[0]}: not a knob; knobs: {', '.join(Throttle.model_fields)}")
    given.update(dict.fromkeys(args.clear))
    if not given:
        raise UsageError(
            "throttle needs at least one knob: "
            + ", ".join(f"--{f.replace('_', '-')}" for f in Throttle.model_fields)
        )
    Throttle.model_validate(given)
    MigrationPolicy.model_validate({k: v for k, v in given.items() if v is not None})
    return given


async def _direct(dsn: str, migration_id: str, action: str, knobs: dict[str, Any]) -> dict[str, Any]:
    journal = await open_existing(dsn, "zdmproxy-control")
    if journal is None:
        raise NotFound("this database has no journal (schema zdmproxy): zdmproxy applied nothing here")
    try:
        return await _write(journal, migration_id, action, knobs)
    finally:
        await journal.close()


async def _write(journal: Journal, migration_id: str, action: str, knobs: dict[str, Any]) -> dict[str, Any]:
    if action == "throttle":
        merged = await control.set_throttle(journal, migration_id, knobs)
        if merged is None:
            raise NotFound(f"no migration {migration_id!r} in the journal")
        return {"id": migration_id, "throttle": merged}
    if action == "resume":
        state = await control.resume(journal, migration_id)
        said = "resumable: apply it again (or submit it to a daemon) to run the rest"
    else:
        what: Literal["pause", "cancel"] = "pause" if action == "pause" else "cancel"
        state = await control.request(journal, migration_id, what)
        said = f"{action} asked: the process running it obeys before its next step"
    if state is None:
        found = await journal.migration(migration_id)
        if found is None:
            raise NotFound(f"no migration {migration_id!r} in the journal")
        finished = {"succeeded": "has succeeded", "failed": "has failed", "cancelled": "was cancelled"}
        where = finished.get(found.state, f"is {found.state}")
        raise ZdmError(f"migration {migration_id!r} {where}: nothing to {action}")
    return {"id": migration_id, "state": state, "message": said}


def apply_through_daemon(
    client: DaemonClient,
    migrations: Sequence[Request],
    policy: dict[str, Any],
    phase: str | None,
    *,
    as_json: bool,
) -> int:
    """Submit each migration to the daemon in order and wait until it settles; stop at
    the first that does not succeed. The exit code is the one ``apply`` gives in-process."""
    params: dict[str, Any] = {"wait": _WAIT_S, **({"phase": phase} if phase else {})}
    body: dict[str, Any] = {}
    answers = []
    try:
        for migration in migrations:
            migration_id = migration.migration_id
            request = {
                "sql": migration.script,
                **({"policy": policy} if policy else {}),
                **({"version": migration.version, "source": migration.source} if migration.version else {}),
            }
            path = f"/v1/migrations/{migration_id}"
            body = client.call("PUT", path, json=request, params={**params, "wait": 0})
            if body["state"] in ("queued", "running"):  # show it run, as apply does in-process
                follow_events(client.events(migration_id))
                body = client.call("PUT", path, json=request, params=params)
            while body["state"] in ("queued", "running"):
                err.print(f"[dim]{escape(migration_id)}: {body['state']}, waiting[/dim]")
                body = client.call("PUT", path, json=request, params=params)
            answers.append(body)
            if body["state"] != "succeeded" and not (phase == "expand" and body.get("phase") == "expand"):
                break
            err.print(f"{escape(migration_id)}: {body['state']} (through the daemon at {escape(client.url)})")
    finally:
        client.close()
    if as_json:
        out.print_json(
            json.dumps(answers[0] if len(migrations) == 1 else {"migrations": answers}, default=str)
        )
    if body.get("state") == "succeeded" or (phase == "expand" and body.get("phase") == "expand"):
        return int(ExitCode.OK)
    error = body.get("error") or {}
    said = f" [{error.get('code')}]: {error.get('message', '')}" if error else ""
    err.print(f"[red]{escape(str(body.get('id')))}: {body.get('state')}[/red]{escape(said)}")
    return int(error.get("exit_code", _EXIT_BY_STATE.get(str(body.get("state")), ExitCode.FAILED)))

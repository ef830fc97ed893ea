"""A TCP proxy in front of a test server that loses an answer on purpose: the statement
finished on the server, the client never hears it (a failover, a cut network)."""

from __future__ import annotations

import asyncio
import struct


def simple_query(sql: str) -> bytes:
    """The wire bytes of ``sql`` sent as a simple Query message (how the engine sends a step)."""
    body = sql.encode() + b"\x00"
    return b"Q" + struct.pack("!I", 4 + len(body)) + body


def command_complete(tag: str) -> bytes:
    """The wire bytes of the server's CommandComplete message with ``tag``."""
    body = tag.encode() + b"\x00"
    return b"C" + struct.pack("!I", 4 + len(body)) + body


class AnswerCutter:
    """A TCP proxy in front of the server that, once, lets the server finish a statement and
    cuts the connection before the client hears the answer: after the client sent ``arm`` (on
    that connection), then ``query``, the server's ``done`` is never delivered."""

    def __init__(
        self, upstream_port: int, arm: bytes, query: bytes, done: bytes, *, refuse_after: bool = False
    ) -> None:
        self.upstream_port = upstream_port
        self.arm, self.query, self.done = arm, query, done
        self.fired = False
        # After cutting, refuse every new connection (a server that stays unreachable).
        self.refuse_after = refuse_after
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self.fired and self.refuse_after:
            client_w.transport.abort()
            return
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        state = {"armed": False, "sent": False}

        async def upstream() -> None:
            while data := await client_r.read(65536):
                if not self.fired and self.arm in data:
                    state["armed"] = True
                if state["armed"] and self.query in data:
                    state["sent"] = True
                server_w.write(data)
                await server_w.drain()

        async def downstream() -> None:
            while data := await server_r.read(65536):
                if state["sent"] and not self.fired and self.done in data:
                    self.fired = True  # done on the server; the client never hears it
                    break
                client_w.write(data)
                await client_w.drain()

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except (ConnectionError, OSError):
            pass
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for writer in (client_w, server_w):
                writer.transport.abort()

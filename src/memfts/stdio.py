"""The stdio transport: newline-delimited JSON-RPC on stdin/stdout, as MCP clients launch it."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import re
import stat
from collections.abc import AsyncIterator

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.server.mcpserver import MCPServer
from mcp.shared.message import SessionMessage
from mcp.types import (
    INVALID_REQUEST,
    PARSE_ERROR,
    ErrorData,
    JSONRPCError,
    JSONRPCNotification,
    JSONRPCRequest,
    JSONRPCResponse,
    jsonrpc_message_adapter,
)
from pydantic import ValidationError

log = logging.getLogger(__name__)


_REQUEST_ID = re.compile(rb'"id"\s*:\s*(-?\d{1,15}|"(?:[^"\\]|\\.){0,200}")')


def _parse_error(line: str, exc: Exception) -> JSONRPCError:
    """The JSON-RPC answer to a line the SDK could not read: Parse error (-32700) or
    Invalid Request (-32600), with the request's id when it can be read."""
    request_id: str | int | None = None
    try:
        message = json.loads(line)
        if isinstance(message, dict) and isinstance(message.get("id"), (str, int)):
            request_id = message["id"]
        readable_json = True
    except (ValueError, RecursionError):
        readable_json = False
        request_id = _request_id(line.encode("utf-8", "replace"))
    reason = str(exc)
    if readable_json and _has_lone_surrogate(line):
        reason = (
            "a string holds a lone UTF-16 surrogate escape (like \\ud800), "
            "which is not Unicode text"
        )
    elif isinstance(exc, ValidationError):
        errors = exc.errors(include_url=False, include_input=False)
        reason = "; ".join(dict.fromkeys(str(e["msg"]) for e in errors[:5]))
        readable_json = readable_json and not any(e["type"] == "json_invalid" for e in errors)
    code, title = (
        (INVALID_REQUEST, "Invalid request") if readable_json else (PARSE_ERROR, "Parse error")
    )
    return JSONRPCError(
        jsonrpc="2.0", id=request_id, error=ErrorData(code=code, message=f"{title}: {reason}"[:500])
    )


def _request_id(raw: bytes) -> str | int | None:
    """The id of a request that could not be read whole, if its first 4 KB show one."""
    found = _REQUEST_ID.search(raw[:4096])
    if found:
        with contextlib.suppress(ValueError, RecursionError, UnicodeDecodeError):
            request_id: str | int | None = json.loads(found.group(1))
            return request_id
    return None


def _not_utf8(raw: bytes, exc: UnicodeDecodeError) -> JSONRPCError:
    """The answer to a line that is not UTF-8 text, with its id when it can be read."""
    bad = raw[exc.start : exc.start + 4].hex(" ")
    return JSONRPCError(
        jsonrpc="2.0",
        id=_request_id(raw),
        error=ErrorData(
            code=PARSE_ERROR,
            message=f"Parse error: the message is not UTF-8 text (bytes {bad} at offset "
            f"{exc.start}); JSON-RPC messages must be UTF-8. Nothing was done",
        ),
    )


def _has_id(line: str) -> bool:
    if '"id"' not in line:
        return False
    try:
        message = json.loads(line)
    except (ValueError, RecursionError):
        return False
    return isinstance(message, dict) and "id" in message


def _bad_id() -> JSONRPCError:
    return JSONRPCError(
        jsonrpc="2.0",
        id=None,
        error=ErrorData(
            code=INVALID_REQUEST,
            message="Invalid request: the id must be a string or an integer "
            "(a notification has no id)",
        ),
    )


def _has_lone_surrogate(line: str) -> bool:
    try:
        json.dumps(json.loads(line), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    except (ValueError, RecursionError):
        return False
    return False


CANCELLED = "notifications/cancelled"

EOF_GRACE_S = 30.0
"""At stdin EOF, how long the requests already read may take to be answered before exit."""


async def run_stdio(server: MCPServer) -> None:
    """Serve ``server`` over stdin/stdout as newline-delimited JSON-RPC.

    Our own transport rather than the SDK's ``stdio_server``, for two reasons: that one answers
    nothing to a line it cannot parse (the client waits forever on that request), and it moves
    every read, write and flush to a worker thread (about a dozen thread hops per call, ~0.5 ms).
    Here pipes are read and written by the event loop itself. As in the SDK, fd 0 and fd 1 are
    pointed away (the null device, stderr) while serving, so a stray ``print`` or a child
    process cannot corrupt the wire. At stdin EOF, the requests already read are answered
    before the session ends (up to :data:`EOF_GRACE_S`), as a client piping a batch expects.
    """
    wire_in, wire_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    to_server, from_wire = anyio.create_memory_object_stream[SessionMessage | Exception](16)
    to_wire, from_server = anyio.create_memory_object_stream[SessionMessage](16)
    in_flight = _InFlight()
    lowlevel = server._lowlevel_server
    async with anyio.create_task_group() as writing:
        writing.start_soon(_write_wire, wire_out, from_server, in_flight)
        async with anyio.create_task_group() as reading:
            reading.start_soon(_read_wire, wire_in, to_server, to_wire.clone(), in_flight)
            async with to_wire:
                await lowlevel.run(from_wire, to_wire, lowlevel.create_initialization_options())
            reading.cancel_scope.cancel()
        # every sending end is closed now: the writer writes what is left, then returns


class _InFlight:
    """Ids of the requests read from the wire and not answered yet."""

    def __init__(self) -> None:
        self._ids: set[str | int] = set()
        self.idle = anyio.Event()
        self.idle.set()

    def started(self, request_id: str | int) -> None:
        if not self._ids:
            self.idle = anyio.Event()
        self._ids.add(request_id)

    def answered(self, request_id: str | int | None) -> None:
        if request_id in self._ids:
            self._ids.discard(request_id)
            if not self._ids:
                self.idle.set()


def _is_pipe(fd: int) -> bool:
    """A pipe or socket, which the event loop can wait on (not a file, /dev/null, a TTY)."""
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


async def _wire_lines(fd: int) -> AsyncIterator[bytes]:
    """The lines arriving on ``fd``: read by the event loop from a pipe or socket, by a worker
    thread from anything else."""
    if not _is_pipe(fd):
        buffered = os.fdopen(fd, "rb")  # buffered: readline on a raw file reads byte by byte
        while line := await anyio.to_thread.run_sync(buffered.readline):
            yield line
        return
    file = os.fdopen(fd, "rb", buffering=0)
    reader = asyncio.StreamReader(limit=1 << 31)  # a request may be tens of MB
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), file)
    while line := await reader.readline():
        yield line


async def _read_wire(
    fd: int,
    to_server: MemoryObjectSendStream[SessionMessage | Exception],
    answers: MemoryObjectSendStream[SessionMessage],
    in_flight: _InFlight,
) -> None:
    """Parse each line as the SDK does; answer those it cannot parse here, with their id."""
    async with to_server, answers:
        async for raw in _wire_lines(fd):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                # JSON text is UTF-8 (RFC 8259): refused like a lone surrogate, never stored
                # with U+FFFD in place of what the client meant
                await answers.send(SessionMessage(_not_utf8(raw, exc)))
                continue
            if not line.strip():
                continue
            try:
                message = jsonrpc_message_adapter.validate_json(line, by_name=False)
            except Exception as exc:  # anything a line can hold must get an answer
                await answers.send(SessionMessage(_parse_error(line, exc)))
                continue
            if isinstance(message, JSONRPCRequest):
                in_flight.started(message.id)
            elif isinstance(message, JSONRPCNotification) and _has_id(line):
                # an id that is not a string or an integer: not a notification, a bad request
                await answers.send(SessionMessage(_bad_id()))
                continue
            elif isinstance(message, JSONRPCNotification) and message.method == CANCELLED:
                # a cancelled request gets no answer: do not wait for one at EOF
                in_flight.answered((message.params or {}).get("requestId"))
            await to_server.send(SessionMessage(message))
        with anyio.move_on_after(EOF_GRACE_S):
            await in_flight.idle.wait()


async def _write_wire(
    fd: int, from_server: MemoryObjectReceiveStream[SessionMessage], in_flight: _InFlight
) -> None:
    """Write each message as one line; waits (without blocking the loop) for a slow reader."""
    file: io.RawIOBase | None = os.fdopen(fd, "wb", buffering=0)
    writer: asyncio.StreamWriter | None = None
    if _is_pipe(fd):
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, file)
        writer = asyncio.StreamWriter(transport, protocol, None, loop)
    async with from_server:
        async for message in from_server:
            data = (
                message.message.model_dump_json(by_alias=True, exclude_unset=True) + "\n"
            ).encode()
            if isinstance(message.message, (JSONRPCResponse, JSONRPCError)):
                in_flight.answered(message.message.id)
            try:
                if writer is not None:
                    writer.write(data)
                    await writer.drain()
                elif file is not None:
                    await anyio.to_thread.run_sync(file.write, data)
            except (BrokenPipeError, ConnectionResetError):
                # the client stopped reading: drop what it would have read, but keep taking
                # the session's answers so nothing blocks; the session ends at stdin EOF
                log.info("the client closed stdout; answers are dropped until stdin closes")
                writer, file = None, None
    if writer is not None:
        writer.close()

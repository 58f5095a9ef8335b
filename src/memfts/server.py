"""The MCP face of the store: the official memory server's 9 tools and its resource.

Each tool is a flat declaration calling exactly one :class:`~memfts.store.Store` method.
Names, arguments, titles, annotations and result shapes (``structuredContent`` plus one JSON
text block) match ``@modelcontextprotocol/server-memory``, so switching is one config line.
"""

# no `from __future__ import annotations`: MCP evaluates tool signatures, which use locals

import asyncio
import contextlib
import io
import json
import logging
import os
import re
import stat
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, TypeVar

import anyio
import pydantic_core
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.shared.message import SessionMessage
from mcp.types import (
    INVALID_REQUEST,
    PARSE_ERROR,
    CallToolResult,
    ErrorData,
    JSONRPCError,
    JSONRPCNotification,
    JSONRPCRequest,
    JSONRPCResponse,
    TextContent,
    ToolAnnotations,
    jsonrpc_message_adapter,
)
from pydantic import BaseModel, Field, ValidationError

from memfts import __version__
from memfts.errors import MemftsError
from memfts.models import (
    AddedObservationsResult,
    CreatedEntities,
    CreatedRelations,
    DeleteResult,
    Entity,
    KnowledgeGraph,
    ObservationAddition,
    ObservationDeletion,
    Relation,
    SearchResult,
    Text,
)
from memfts.store import Store

GRAPH_URI = "memory://knowledge-graph"

WRITE = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False
)
DELETE = ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False
)
READ = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)

SEARCH_DESCRIPTION = """\
Search for nodes in the knowledge graph based on a query.
Ranked full-text search (bm25) over entity names (weighted highest), entity types and \
observations; best matches first, at most `limit` (default 20), with `total` saying how many \
matched. Every word must appear somewhere in an entity (any field, any order); whole words rank \
above word starts and words inside longer words ("auth" finds "authentication", "script" finds \
"TypeScript"). If no entity has every word, the best partial matches come back (rare words \
count more). Question words (what, does, the...) are ignored when the query has other words. \
Case and accents are ignored; Chinese/Japanese/Korean words are found inside longer runs. \
A misspelt word that matches nothing is replaced by the closest indexed word \
(`correctedQuery` says what was searched, `suggestions` lists the words).
Syntax (optional; anything else is plain words): "exact phrase", -exclude, word1 OR word2, \
prefix*, name:word (names only), type:person (entity type filter; -type:person leaves it out).
`snippets: true` adds the best-matching observation fragments per entity (matches in **bold**); \
`compact: true` returns only names, types and snippets (cheap to scan; then open_nodes); \
`depth` 1-2 also returns entities related to the hits, after them. An empty query lists the \
most recently changed entities."""

T = TypeVar("T")

log = logging.getLogger(__name__)


MAX_QUERY_CHARS = 100_000
"""Longest ``search_nodes`` query: far past anything typed or pasted (only the first 16 words
are searched), short of a payload meant to stall the server."""


def _json(value: Any) -> str:
    """JSON exactly as the official server writes it (``JSON.stringify(x, null, 2)``).

    pydantic-core's encoder writes the same bytes as ``json.dumps(indent=2,
    ensure_ascii=False)`` (tests/test_protocol.py checks), 6x faster: with ``indent``, the
    standard library falls back to its pure-Python encoder."""
    return pydantic_core.to_json(value, indent=2).decode()


def _result(text_of: Any, structured: BaseModel) -> CallToolResult:
    """One JSON (or message) text block plus the same data as ``structuredContent``."""
    text = text_of if isinstance(text_of, str) else _json(text_of)
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=structured.model_dump(mode="json", by_alias=True, exclude_none=True),
    )


def _graph_result(graph: KnowledgeGraph | SearchResult) -> CallToolResult:
    return _result(graph.model_dump(mode="json", by_alias=True, exclude_none=True), graph)


def _run(call: Callable[..., T], *args: Any) -> T:
    """Call the store; a :class:`MemftsError` becomes a tool error the model can read."""
    try:
        return call(*args)
    except MemftsError as exc:
        raise ToolError(str(exc)) from exc


class _Server(MCPServer):
    """The SDK's server, with argument errors said in one line a model can act on."""

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(exc, UnexpectedToolError) or not isinstance(cause, ValidationError):
                raise
            raise ToolError(f"Invalid arguments for {name}: {_brief(cause)}") from cause


def _brief(error: ValidationError) -> str:
    """``field: problem`` for the first few problems, without the rejected values (the
    caller's data) and without pydantic's links."""
    problems = []
    for item in error.errors(include_url=False, include_input=False)[:5]:
        where = ".".join(str(part) for part in item["loc"]) or "arguments"
        problems.append(f"{where}: {str(item['msg']).removeprefix('Value error, ')}")
    more = len(error.errors()) - len(problems)
    return "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")


def build_server(store: Store) -> MCPServer:
    """An MCP server exposing ``store``; run it with ``.run()`` (stdio) or an HTTP transport."""
    mcp = _Server(
        "memfts",
        version=__version__,
        instructions="Persistent knowledge-graph memory with ranked full-text search. "
        "Use search_nodes to find what you stored before; open_nodes to read entities by name.",
        log_level="WARNING",
    )

    @mcp.tool(
        title="Create Entities",
        description="Create multiple new entities in the knowledge graph",
        annotations=WRITE,
    )
    async def create_entities(entities: list[Entity]) -> Annotated[CallToolResult, CreatedEntities]:
        created = _run(store.create_entities, entities)
        result = CreatedEntities(entities=created)
        return _result(result.model_dump(mode="json")["entities"], result)

    @mcp.tool(
        title="Create Relations",
        description="Create multiple new relations between entities in the knowledge graph. "
        "Relations should be in active voice",
        annotations=WRITE,
    )
    async def create_relations(
        relations: list[Relation],
    ) -> Annotated[CallToolResult, CreatedRelations]:
        created = _run(store.create_relations, relations)
        result = CreatedRelations(relations=created)
        return _result(result.model_dump(mode="json", by_alias=True)["relations"], result)

    @mcp.tool(
        title="Add Observations",
        description="Add new observations to existing entities in the knowledge graph",
        annotations=WRITE,
    )
    async def add_observations(
        observations: list[ObservationAddition],
    ) -> Annotated[CallToolResult, AddedObservationsResult]:
        added = _run(store.add_observations, observations)
        result = AddedObservationsResult(results=added)
        return _result(result.model_dump(mode="json")["results"], result)

    @mcp.tool(
        title="Delete Entities",
        description="Delete multiple entities and their associated relations from the "
        "knowledge graph",
        annotations=DELETE,
    )
    async def delete_entities(
        entityNames: Annotated[list[Text], Field(description="An array of entity names to delete")],
    ) -> Annotated[CallToolResult, DeleteResult]:
        deleted, not_found = _run(store.delete_entities, entityNames)
        message = (
            "Entities deleted successfully"
            if not not_found
            else f"Deleted {len(deleted)} of {len(entityNames)} entities. "
            f"Not found: {', '.join(not_found)}"
        )
        return _result(message, DeleteResult(success=True, message=message))

    @mcp.tool(
        title="Delete Observations",
        description="Delete specific observations from entities in the knowledge graph",
        annotations=DELETE,
    )
    async def delete_observations(
        deletions: list[ObservationDeletion],
    ) -> Annotated[CallToolResult, DeleteResult]:
        count, missing = _run(store.delete_observations, deletions)
        requested = sum(len(d.observations) for d in deletions)
        message = (
            "Observations deleted successfully"
            if count == requested
            else f"Deleted {count} of {requested} observations."
            + (f" Entities not found: {', '.join(missing)}" if missing else "")
        )
        return _result(message, DeleteResult(success=True, message=message))

    @mcp.tool(
        title="Delete Relations",
        description="Delete multiple relations from the knowledge graph",
        annotations=DELETE,
    )
    async def delete_relations(
        relations: Annotated[list[Relation], Field(description="An array of relations to delete")],
    ) -> Annotated[CallToolResult, DeleteResult]:
        count = _run(store.delete_relations, relations)
        message = (
            "Relations deleted successfully"
            if count == len(relations)
            else f"Deleted {count} of {len(relations)} relations. The rest matched nothing."
        )
        return _result(message, DeleteResult(success=True, message=message))

    @mcp.tool(title="Read Graph", description="Read the entire knowledge graph", annotations=READ)
    async def read_graph() -> Annotated[CallToolResult, KnowledgeGraph]:
        return _graph_result(_run(store.read_graph))

    # a store configured for fewer results than the usual 20 answers calls that give no limit
    default_limit = min(20, store.limits.max_search_limit)

    @mcp.tool(title="Search Nodes", description=SEARCH_DESCRIPTION, annotations=READ)
    async def search_nodes(
        query: Annotated[
            str,
            Field(
                max_length=MAX_QUERY_CHARS,
                description="The search query to match against entity names, types, and "
                "observation content",
            ),
        ],
        limit: Annotated[
            int,
            Field(
                ge=1,
                le=store.limits.max_search_limit,
                description="Most entities to return, best first",
            ),
        ] = default_limit,
        entityType: Annotated[
            str | None,
            Field(description="Only return entities of this type (case-insensitive)"),
        ] = None,
        snippets: Annotated[
            bool, Field(description="Add the best-matching observation fragments per entity")
        ] = False,
        compact: Annotated[
            bool,
            Field(
                description="Return only names, types and snippets: no observations, no relations"
            ),
        ] = False,
        depth: Annotated[
            int,
            Field(
                ge=0,
                le=2,
                description="Also return entities this many relation hops "
                "from the hits, ranked after them",
            ),
        ] = 0,
    ) -> Annotated[CallToolResult, SearchResult]:
        return _graph_result(
            _run(
                lambda: store.search_nodes(
                    query, limit, entityType, snippets=snippets, compact=compact, depth=depth
                )
            )
        )

    @mcp.tool(
        title="Open Nodes",
        description="Open specific nodes in the knowledge graph by their names",
        annotations=READ,
    )
    async def open_nodes(
        names: Annotated[list[Text], Field(description="An array of entity names to retrieve")],
    ) -> Annotated[CallToolResult, KnowledgeGraph]:
        return _graph_result(_run(store.open_nodes, names))

    @mcp.resource(
        GRAPH_URI,
        name="knowledge-graph",
        title="Knowledge Graph",
        description="The full knowledge graph with all entities and relations",
        mime_type="application/json",
    )
    async def knowledge_graph() -> str:
        return _json(store.read_graph().model_dump(mode="json", by_alias=True))

    return mcp


# ---- stdio transport -----------------------------------------------------------------------


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
        found = _REQUEST_ID.search(line[:4096].encode("utf-8", "replace"))
        if found:
            with contextlib.suppress(ValueError, RecursionError):
                request_id = json.loads(found.group(1))
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
            line = raw.decode("utf-8", errors="replace")
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

"""The MCP face of the store: the official memory server's 9 tools and its resource.

Each tool is a flat declaration calling exactly one :class:`~memfts.store.Store` method.
Names, arguments, titles, annotations and result shapes (``structuredContent`` plus one JSON
text block) match ``@modelcontextprotocol/server-memory``, so switching is one config line.
"""

# no `from __future__ import annotations`: MCP evaluates tool signatures, which use locals

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.types import (
    CallToolResult,
    SubscribeRequestParams,
    TextContent,
    Tool,
    ToolAnnotations,
    UnsubscribeRequestParams,
)
from pydantic import BaseModel, Field, ValidationError

from memfts import __version__, results
from memfts.errors import MemftsError
from memfts.models import (
    AddedObservationsResult,
    CreatedEntities,
    CreatedRelations,
    DeleteResult,
    Entity,
    GraphPage,
    KnowledgeGraph,
    ObservationAddition,
    ObservationDeletion,
    Relation,
    SearchResult,
    Text,
)
from memfts.results import GraphRequest, dump, official_json
from memfts.store import Store
from memfts.subscriptions import GRAPH_URI, GraphSubscriptions, ListenerCount

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
Ranked full-text search (bm25) over entity names, entity types and observations; best matches \
first, at most `limit` (default 20), with `total` saying how many matched. Entities holding \
every word (any field, any order, any form of it: "renewing" finds "renew") come first, then \
the best partial matches fill the page (`withEveryWord` says how many hold every word). Words \
as typed rank above their other forms, word starts and words inside longer words ("auth" finds \
"authentication", "script" finds "TypeScript"). Common English words (what, does, the...) are \
ignored when the query has other words. \
Case and accents are ignored; Chinese/Japanese/Korean words are found inside longer runs. \
A misspelt word that matches nothing is replaced by the closest indexed word \
(`correctedQuery` says what was searched, `suggestions` lists the words).
Syntax (optional; anything else is plain words): "exact phrase", -exclude (a --flag or an \
-x or -rf option is searched for), word1 OR word2, prefix*, name:word (names only), type:person \
(entity type filter; -type:person leaves it out).
`snippets: true` adds the best-matching observation fragments per entity (matches in **bold**); \
`compact: true` returns only names, types and snippets (cheap to scan; then open_nodes); \
`depth` 1-2 also returns entities related to the hits, after them. An empty query lists the \
most recently changed entities."""

SEARCH_BY_MEANING = """
Search by meaning is on: after the entities holding every word, entities close in meaning \
fill the page too ("time off" finds "vacation"), and `foundBy` says what found each hit \
(lexical: its words, semantic: its meaning). Quoted phrases, prefix* and name: stay exact."""

T = TypeVar("T")

PageLimit = Annotated[
    int | None,
    Field(
        ge=1,
        description="Optional: at most this many entities and relations per answer (entities "
        "first, in creation order); the answer then gives nextCursor for the next page",
    ),
]
Cursor = Annotated[
    str | None,
    Field(
        description="Optional: the nextCursor of the previous answer, for its next page (a "
        "result too large for one answer comes in pages even without limit)"
    ),
]
MaxObservations = Annotated[
    int | None,
    Field(
        ge=0,
        description="Optional: at most this many observations per entity (the first ones; "
        "omittedObservations says how many were left out); 0 gives names and types only",
    ),
]


MAX_QUERY_CHARS = 100_000
"""Longest ``search_nodes`` query: far past anything typed or pasted (only the first 16 words
are searched), short of a payload meant to stall the server."""


def _result(text_of: Any, structured: BaseModel) -> CallToolResult:
    """One JSON (or message) text block plus the same data as ``structuredContent``."""
    text = text_of if isinstance(text_of, str) else official_json(text_of)
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=dump(structured)
    )


def _graph_result(graph: KnowledgeGraph | GraphPage | SearchResult) -> CallToolResult:
    return _result(dump(graph), graph)


async def _run(store: Store, call: Callable[..., T], *args: Any, writes: bool = False) -> T:
    """Call the store in its threads, off the event loop (a call may wait seconds for another
    process's lock); a :class:`MemftsError` becomes a tool error the model can read."""
    try:
        return await store.run(call, *args, writes=writes)
    except MemftsError as exc:
        raise ToolError(str(exc)) from exc


class _SessionOrder:
    """Within one MCP session, a call starts once every write the session sent before it has
    ended, so a client that sends a write and then a read without waiting for the answer (a
    piped batch, parallel tool calls) reads what it wrote. Other sessions never wait: while
    one client's write waits for a lock, everyone else's calls go on."""

    def __init__(self) -> None:
        self._last_write: dict[int, anyio.Event] = {}
        """Per client connection (by id; it is alive while it has a call in progress): the end
        of its latest write."""

    @asynccontextmanager
    async def turn(self, connection: object, *, writes: bool) -> AsyncIterator[None]:
        if connection is None:  # nothing to order by
            yield
            return
        key = id(connection)
        previous = self._last_write.get(key)
        done = None
        if writes:
            done = self._last_write[key] = anyio.Event()
        try:
            if previous is not None:
                await previous.wait()
            yield
        finally:
            if done is not None:
                done.set()
                if self._last_write.get(key) is done:
                    del self._last_write[key]


def _connection_of(context: Any) -> object:
    """The client connection a tool call came on: the SDK makes a session object per request
    but keeps one connection per client (one per request on the stateless 2026-07-28
    protocol, whose requests are independent by design). None if the SDK hides it."""
    session = getattr(getattr(context, "request_context", None), "session", None)
    return getattr(session, "_connection", None)


class MemoryServer(MCPServer):
    """The SDK's server, speaking as the official server does: tool errors in its words, input
    schemas written out inline (some clients do not follow ``$ref``), and subscribers told
    when a write tool changed the graph; calls of one session in the order they were sent
    (see :class:`_SessionOrder`)."""

    graph: GraphSubscriptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._session_order = _SessionOrder()

    def close(self) -> None:
        """Let go of the file (the subscription watch's connection); for a signal handler,
        before the store closes, so that the last connection to close removes the WAL."""
        self.graph.close()

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        """Tool errors worded as the official server words them.

        The SDK prefixes every failure with "Error executing tool <name>: "; the official
        server (TypeScript SDK) sends the message alone ("Entity with name Ghost not found"),
        "Input validation error: Invalid arguments for tool <name>: ..." for arguments that
        fail the schema, and "Tool <name> not found" for an unknown tool. A crash keeps the
        SDK's bare "Error executing tool <name>": its text stays in the server's log.
        """
        tool = self._tool_manager.get_tool(name)
        if tool is None:
            raise ToolError(f"Tool {name} not found")
        writes = not (tool.annotations and tool.annotations.read_only_hint)
        try:
            async with self._session_order.turn(_connection_of(context), writes=writes):
                result = await super().call_tool(name, arguments, context)
                if writes and self.graph.wanted():
                    await self.graph.check()  # subscribers hear before the result, officially
                return result
        except UnexpectedToolError:
            raise
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, ValidationError):
                raise ToolError(
                    f"Input validation error: Invalid arguments for tool {name}: {_brief(cause)}"
                ) from cause
            if isinstance(cause, ToolError):  # raised by the tool itself (see _run)
                raise ToolError(str(cause)) from cause.__cause__
            raise

    async def list_tools(self) -> list[Tool]:
        return [
            tool.model_copy(
                update={
                    "input_schema": inline_refs(tool.input_schema),
                    "output_schema": tool.output_schema and inline_refs(tool.output_schema),
                }
            )
            for tool in await super().list_tools()
        ]


def inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with every ``{"$ref": "#/$defs/X"}`` replaced by X itself and no ``$defs``,
    as the official server's schemas are written (memfts' models are not recursive)."""
    definitions: dict[str, Any] = schema.get("$defs", {})

    def resolve(node: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [resolve(item, seen) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = ref.removeprefix("#/$defs/")
            if name in seen:
                raise ValueError(f"recursive schema {name} cannot be inlined")
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            return {**resolve(definitions[name], (*seen, name)), **resolve(siblings, seen)}
        return {k: resolve(v, seen) for k, v in node.items() if k != "$defs"}

    inlined: dict[str, Any] = resolve(schema, ())
    return inlined


def _brief(error: ValidationError) -> str:
    """``field: problem`` for the first few problems, without the rejected values (the
    caller's data) and without pydantic's links."""
    problems = []
    for item in error.errors(include_url=False, include_input=False)[:5]:
        where = ".".join(str(part) for part in item["loc"]) or "arguments"
        problems.append(f"{where}: {str(item['msg']).removeprefix('Value error, ')}")
    more = len(error.errors()) - len(problems)
    return "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")


def build_server(store: Store) -> MemoryServer:
    """An MCP server exposing ``store``; run it with ``.run()`` (stdio) or an HTTP transport."""
    bus = ListenerCount()
    graph = GraphSubscriptions(store, bus)

    @asynccontextmanager
    async def watching(_: MCPServer) -> AsyncIterator[dict[str, Any]]:
        """While the server serves: check the file for other processes' writes."""
        await graph.check()  # the version a first change is told from
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(graph.watch)
            try:
                yield {}
            finally:
                tasks.cancel_scope.cancel()

    mcp = MemoryServer(
        "memfts",
        version=__version__,
        instructions="Persistent knowledge-graph memory with ranked full-text search. "
        "Use search_nodes to find what you stored before; open_nodes to read entities by name.",
        log_level="WARNING",
        lifespan=watching,
        subscriptions=bus,  # subscriptions/listen (2026-07-28) streams hear of changes here
    )
    mcp.graph = graph
    # resources/subscribe and unsubscribe (protocol versions through 2025-11-25); registering
    # them makes the server advertise resources.subscribe, as the official server does
    lowlevel = mcp._lowlevel_server
    lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, graph.subscribe)
    lowlevel.add_request_handler(
        "resources/unsubscribe", UnsubscribeRequestParams, graph.unsubscribe
    )

    @mcp.tool(
        title="Create Entities",
        description="Create multiple new entities in the knowledge graph",
        annotations=WRITE,
    )
    async def create_entities(entities: list[Entity]) -> Annotated[CallToolResult, CreatedEntities]:
        created = await _run(store, store.create_entities, entities, writes=True)
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
        created = await _run(store, store.create_relations, relations, writes=True)
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
        added = await _run(store, store.add_observations, observations, writes=True)
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
        deleted, not_found = await _run(store, store.delete_entities, entityNames, writes=True)
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
        count, missing = await _run(store, store.delete_observations, deletions, writes=True)
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
        count = await _run(store, store.delete_relations, relations, writes=True)
        message = (
            "Relations deleted successfully"
            if count == len(relations)
            else f"Deleted {count} of {len(relations)} relations. The rest matched nothing."
        )
        return _result(message, DeleteResult(success=True, message=message))

    budget = store.limits.max_result_chars

    def graph_page(request: GraphRequest) -> KnowledgeGraph | GraphPage:
        """One page of a read_graph / open_nodes walk, read in one go (one thread, one
        snapshot); with no budget and no paging asked for, simply the whole result."""
        plain = request.limit is None and request.cursor is None
        if plain and request.max_observations is None and not budget:
            if request.names is None:
                return store.read_graph()
            return store.open_nodes(request.names)
        start, _, _ = request.start()
        return results.graph_page(
            store.walk_graph(start, request.names),
            request,
            budget,
            totals=lambda: store.count_graph(request.names),
        )

    @mcp.tool(title="Read Graph", description="Read the entire knowledge graph", annotations=READ)
    async def read_graph(
        limit: PageLimit = None, cursor: Cursor = None, maxObservations: MaxObservations = None
    ) -> Annotated[CallToolResult, GraphPage]:
        request = GraphRequest(
            tool="read_graph", limit=limit, cursor=cursor, max_observations=maxObservations
        )
        # a big graph takes a while to turn into JSON: that, too, in the store's threads
        return await _run(store, lambda: _graph_result(graph_page(request)))

    # a store configured for fewer results than the usual 20 answers calls that give no limit
    default_limit = min(20, store.limits.max_search_limit)

    search_description = SEARCH_DESCRIPTION
    if store.searches_by_meaning:  # the semantic extra: installed and on
        search_description += SEARCH_BY_MEANING

    @mcp.tool(title="Search Nodes", description=search_description, annotations=READ)
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
        cursor: Annotated[
            str | None,
            Field(
                description="To get the next page of a result too large for one answer: the "
                "nextCursor it gave, with the same other arguments"
            ),
        ] = None,
    ) -> Annotated[CallToolResult, SearchResult]:
        arguments = {
            "query": query,
            "limit": limit,
            "entityType": entityType,
            "snippets": snippets,
            "compact": compact,
            "depth": depth,
        }

        def search_page() -> SearchResult:
            offset = results.search_offset(cursor, arguments)
            with store.walk_search(
                query,
                limit,
                entityType,
                snippets=snippets,
                compact=compact,
                depth=depth,
                start=offset,
            ) as walk:
                return results.search_page(walk, offset, arguments, budget)

        return await _run(store, lambda: _graph_result(search_page()))

    @mcp.tool(
        title="Open Nodes",
        description="Open specific nodes in the knowledge graph by their names",
        annotations=READ,
    )
    async def open_nodes(
        names: Annotated[list[Text], Field(description="An array of entity names to retrieve")],
        limit: PageLimit = None,
        cursor: Cursor = None,
        maxObservations: MaxObservations = None,
    ) -> Annotated[CallToolResult, GraphPage]:
        request = GraphRequest(
            tool="open_nodes",
            names=names,
            limit=limit,
            cursor=cursor,
            max_observations=maxObservations,
        )
        return await _run(store, lambda: _graph_result(graph_page(request)))

    @mcp.resource(
        GRAPH_URI,
        name="knowledge-graph",
        title="Knowledge Graph",
        description="The full knowledge graph with all entities and relations",
        mime_type="application/json",
    )
    async def knowledge_graph() -> str:
        return await store.run(
            lambda: official_json(store.read_graph().model_dump(mode="json", by_alias=True))
        )

    return mcp

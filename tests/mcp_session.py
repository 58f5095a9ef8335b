"""A real MCP client session on a spawned ``python -m memfts``, usable from plain sync tests.

The client runs in a background event loop (an anyio blocking portal), so one server process
can be shared by every test of a module through a module-scoped fixture, and tests stay
ordinary functions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mcp
from anyio.from_thread import BlockingPortal, start_blocking_portal
from mcp import StdioServerParameters
from mcp.types import CallToolResult

from conftest import build_schema, memfts_command, server_env

TIMEOUT_S = 20.0


def params_for(db: Path) -> StdioServerParameters:
    """Spawn parameters for a memfts server on ``db`` (built from sql/ if it does not exist)."""
    if not db.exists():
        build_schema(db)
    command = memfts_command()
    return StdioServerParameters(command=command[0], args=command[1:], env=server_env(db))


class Session:
    """Sync facade over :class:`mcp.Client` (legacy handshake, real JSON-RPC over stdio)."""

    def __init__(self, portal: BlockingPortal, client: mcp.Client) -> None:
        self._portal = portal
        self.client = client

    def call(self, tool: str, arguments: dict[str, Any] | None = None) -> CallToolResult:
        return self._portal.call(
            lambda: self.client.call_tool(tool, arguments or {}, read_timeout_seconds=TIMEOUT_S)
        )

    def ok(self, tool: str, arguments: dict[str, Any] | None = None) -> CallToolResult:
        """Call a tool that must succeed; fail the test with the server's message otherwise."""
        result = self.call(tool, arguments)
        assert not result.is_error, f"{tool} failed: {error_text(result)}"
        return result

    def run(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        """Run any coroutine function of the client (list_tools, read_resource...)."""
        return self._portal.call(lambda: func(*args, **kwargs))


@contextmanager
def session(params: StdioServerParameters) -> Iterator[Session]:
    """One server process and one initialized client session for the duration of the block."""
    with start_blocking_portal() as portal:
        client = mcp.Client(params, mode="legacy", read_timeout_seconds=TIMEOUT_S)
        with portal.wrap_async_context_manager(client) as connected:
            yield Session(portal, connected)


def whole_graph(server: Session) -> dict[str, Any]:
    """The whole graph, following read_graph's pages (a large graph comes in several)."""
    graph: dict[str, Any] = {"entities": [], "relations": []}
    arguments: dict[str, Any] = {}
    while True:
        page = server.ok("read_graph", arguments).structured_content
        assert page is not None
        graph["entities"] += page["entities"]
        graph["relations"] += page["relations"]
        if "nextCursor" not in page:
            return graph
        arguments = {"cursor": page["nextCursor"]}


def emptied(server: Session) -> Session:
    """``server`` with its graph deleted through its own tools, so a test starts from nothing."""
    graph = whole_graph(server)
    if graph["relations"]:
        server.ok("delete_relations", {"relations": graph["relations"]})
    if graph["entities"]:
        server.ok("delete_entities", {"entityNames": [e["name"] for e in graph["entities"]]})
    assert server.ok("read_graph").structured_content == {"entities": [], "relations": []}
    return server


def text_blocks(result: CallToolResult) -> list[str]:
    texts = []
    for block in result.content:
        assert block.type == "text", f"unexpected content block {block!r}"
        texts.append(block.text)
    return texts


def only_text(result: CallToolResult) -> str:
    """The single text block every memfts tool result carries."""
    texts = text_blocks(result)
    assert len(texts) == 1, f"expected one text block, got {len(texts)}: {texts!r}"
    return texts[0]


def text_json(result: CallToolResult) -> Any:
    return json.loads(only_text(result))


def error_text(result: CallToolResult) -> str:
    return " ".join(text_blocks(result))

"""Resource subscriptions, through real clients on spawned ``memfts`` processes.

As the official server: ``resources.subscribe`` advertised, ``resources/subscribe`` and
``resources/unsubscribe`` on protocol versions through 2025-11-25, and
``notifications/resources/updated`` for ``memory://knowledge-graph`` after a write. On
2026-07-28 the same notification arrives on a ``subscriptions/listen`` stream. Beyond the
official server: writes made by another process on the same file are announced too.
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp
import pytest
from mcp.shared.exceptions import MCPError
from mcp.types import ResourceUpdatedNotification

from mcp_session import params_for
from memfts.models import Entity
from memfts.store import Store

GRAPH_URI = "memory://knowledge-graph"
WAIT_S = 10.0  # generous: another process's write is seen within half a second


def entities(*names: str) -> dict[str, Any]:
    return {"entities": [{"name": n, "entityType": "t"} for n in names]}


class Updates:
    """The ``notifications/resources/updated`` a handshake-era client receives."""

    def __init__(self) -> None:
        self.uris: list[str] = []
        self._arrived = anyio.Event()

    async def handler(self, message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification):
            self.uris.append(message.params.uri)
            self._arrived.set()

    async def next(self, timeout: float = WAIT_S) -> str:
        with anyio.fail_after(timeout):
            await self._arrived.wait()
        self._arrived = anyio.Event()
        return self.uris.pop(0)

    async def none_within(self, seconds: float) -> bool:
        await anyio.sleep(seconds)
        return not self.uris


@asynccontextmanager
async def legacy_client(db: Path, updates: Updates | None = None) -> AsyncIterator[mcp.Client]:
    handler = updates.handler if updates is not None else None
    async with mcp.Client(params_for(db), mode="legacy", message_handler=handler) as client:
        yield client


async def subscribe(client: mcp.Client, uri: str = GRAPH_URI) -> None:
    with warnings.catch_warnings():  # deprecated only as of 2026-07-28, which this is not
        warnings.simplefilter("ignore")
        await client.subscribe_resource(uri)


async def unsubscribe(client: mcp.Client, uri: str = GRAPH_URI) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        await client.unsubscribe_resource(uri)


def run(test: Callable[[], Any]) -> None:
    anyio.run(test)


# ---- protocol versions through 2025-11-25: resources/subscribe ----------------------------


def test_subscribe_is_advertised_and_a_write_is_announced_before_its_result(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        updates = Updates()
        async with legacy_client(tmp_path / "m.db", updates) as client:
            assert client.protocol_version == "2025-11-25"
            assert client.server_capabilities.resources is not None
            assert client.server_capabilities.resources.subscribe is True
            await subscribe(client)
            await client.call_tool("create_entities", entities("Alice"))
            # the notification precedes the result on the wire, as the official server sends
            assert updates.uris == [GRAPH_URI]

    run(scenario)


def test_a_write_by_another_memfts_process_is_announced(tmp_path: Path) -> None:
    db = tmp_path / "m.db"

    async def scenario() -> None:
        updates = Updates()
        async with legacy_client(db, updates) as watcher, legacy_client(db) as other:
            await subscribe(watcher)
            result = await other.call_tool("create_entities", entities("from the other one"))
            assert not result.is_error
            assert await updates.next() == GRAPH_URI
            # and what the notification announces is there to read
            read = await watcher.read_resource(GRAPH_URI)
            assert "from the other one" in read.contents[0].text  # type: ignore[union-attr]

    run(scenario)


def test_a_write_by_any_process_on_the_file_is_announced(tmp_path: Path) -> None:
    """Not only other servers: an import, a script or the UI writing through the store."""
    db = tmp_path / "m.db"

    async def scenario() -> None:
        updates = Updates()
        async with legacy_client(db, updates) as client:
            await subscribe(client)
            store = Store(db)
            try:
                store.create_entities([Entity(name="written by a script", entityType="t")])
            finally:
                store.close()
            assert await updates.next() == GRAPH_URI

    run(scenario)


def test_no_notification_without_a_subscription_after_unsubscribe_or_for_no_change(
    tmp_path: Path,
) -> None:
    db = tmp_path / "m.db"

    async def scenario() -> None:
        updates = Updates()
        async with legacy_client(db, updates) as client:
            await client.call_tool("create_entities", entities("before subscribing"))
            assert await updates.none_within(1.2)

            await subscribe(client)
            await client.call_tool("create_entities", entities("before subscribing"))
            assert await updates.none_within(1.2)  # it existed: nothing changed

            await client.call_tool("add_observations", {
                "observations": [{"entityName": "before subscribing", "contents": ["new"]}]
            })  # fmt: skip
            assert await updates.next() == GRAPH_URI

            await unsubscribe(client)
            await client.call_tool("delete_entities", {"entityNames": ["before subscribing"]})
            assert await updates.none_within(1.2)

    run(scenario)


def test_subscribers_on_two_connections_each_hear_once(tmp_path: Path) -> None:
    db = tmp_path / "m.db"

    async def scenario() -> None:
        first, second = Updates(), Updates()
        async with legacy_client(db, first) as a, legacy_client(db, second) as b:
            await subscribe(a)
            await subscribe(a)  # twice: still one notification per change
            await subscribe(b)
            await a.call_tool("create_entities", entities("shared"))
            assert await first.next() == GRAPH_URI
            assert await second.next() == GRAPH_URI
            assert await first.none_within(1.2) and not second.uris

    run(scenario)


# ---- 2026-07-28: subscriptions/listen -------------------------------------------------------


def test_listen_stream_hears_own_and_other_processes_writes(tmp_path: Path) -> None:
    db = tmp_path / "m.db"

    async def scenario() -> None:
        async with (
            mcp.Client(params_for(db), mode="2026-07-28") as client,
            legacy_client(db) as other,
        ):
            assert client.protocol_version == "2026-07-28"
            async with client.listen(resource_subscriptions=[GRAPH_URI]) as stream:
                assert stream.honored.resource_subscriptions == [GRAPH_URI]
                events = aiter(stream)

                await client.call_tool("create_entities", entities("mine"))
                with anyio.fail_after(WAIT_S):
                    event = await anext(events)
                assert event.uri == GRAPH_URI  # type: ignore[union-attr]

                await other.call_tool("create_entities", entities("theirs"))
                with anyio.fail_after(WAIT_S):
                    event = await anext(events)
                assert event.uri == GRAPH_URI  # type: ignore[union-attr]

    run(scenario)


def test_auto_mode_discovers_subscribe_and_the_old_method_is_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with mcp.Client(params_for(tmp_path / "m.db"), mode="auto") as client:
            assert client.protocol_version == "2026-07-28"
            assert client.server_capabilities.resources is not None
            assert client.server_capabilities.resources.subscribe is True
            with pytest.raises(MCPError, match="Method not found"):
                await subscribe(client)  # removed in 2026-07-28: listen is the way

    run(scenario)

"""``notifications/resources/updated`` for ``memory://knowledge-graph``, like the official
server, and also for writes made by other processes on the same file.

Two protocol eras, one source of truth:

- sessions on protocol versions through 2025-11-25 subscribe with ``resources/subscribe`` (and
  ``resources/unsubscribe``); the notification goes to each subscribed connection;
- on 2026-07-28 a client opens a ``subscriptions/listen`` stream naming the resource in its
  ``resourceSubscriptions``; the SDK serves those streams, and an event published on the
  server's subscription bus reaches each stream that asked for the URI.

What changed is learnt from the file itself: ``PRAGMA data_version``, read on a connection of
the watch's own that never writes, moves with every commit that changed the file, by any
connection of any process (this one's store included). It is read right after each write tool
call of this server (so the notification goes out before the call's result, as the official
server sends it), and every :data:`POLL_S` seconds for the writes of other processes (other
Claude Code sessions, ``memfts import``, the browser UI), which the official server, holding
its graph in one process's JSONL file, cannot see. A call that changed nothing (an entity that
already existed) leaves the file as it was and notifies nobody.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
import apsw
from mcp.server.context import ServerRequestContext
from mcp.server.session import ServerSession
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourceUpdated, ServerEvent
from mcp.types import EmptyResult, SubscribeRequestParams, UnsubscribeRequestParams

from memfts.store import Store

log = logging.getLogger(__name__)

GRAPH_URI = "memory://knowledge-graph"

POLL_S = 0.5
"""How often the file is checked for other processes' writes: a notification for such a write
arrives within this long. Each check is one read of SQLite's data version (microseconds)."""


class ListenerCount(InMemorySubscriptionBus):
    """The SDK's in-process bus, counting the ``subscriptions/listen`` streams open on it."""

    def __init__(self) -> None:
        super().__init__()
        self.listeners = 0

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        unsubscribe = super().subscribe(listener)
        self.listeners += 1
        done = False

        def counted_unsubscribe() -> None:
            nonlocal done
            if not done:
                done = True
                self.listeners -= 1
            unsubscribe()

        return counted_unsubscribe


class GraphSubscriptions:
    """Who asked to hear about changes to the graph, and the watch that tells them."""

    def __init__(self, store: Store, bus: ListenerCount) -> None:
        self._store = store
        self.bus = bus
        self._subscribed: dict[int, tuple[ServerSession, set[str]]] = {}
        """Per connection (handshake era): a session to notify through, and its URIs."""
        self._version: int | None = None
        self._checking = anyio.Lock()
        self._watcher: apsw.Connection | None = None

    # ---- resources/subscribe and resources/unsubscribe (handshake era) ----------------------

    async def subscribe(
        self, ctx: ServerRequestContext[Any], params: SubscribeRequestParams
    ) -> EmptyResult:
        # One entry per connection, not per request: each request brings its own session
        # object, all of them speaking on the connection's channel.
        connection = ctx.session._connection  # the SDK names no public way to it
        key = id(connection)
        if key not in self._subscribed:
            self._subscribed[key] = (ctx.session, set())
            connection.exit_stack.callback(self._subscribed.pop, key, None)
        self._subscribed[key][1].add(params.uri)
        return EmptyResult()

    async def unsubscribe(
        self, ctx: ServerRequestContext[Any], params: UnsubscribeRequestParams
    ) -> EmptyResult:
        subscribed = self._subscribed.get(id(ctx.session._connection))
        if subscribed is not None:
            subscribed[1].discard(params.uri)
        return EmptyResult()

    # ---- noticing changes ----------------------------------------------------------------

    def wanted(self) -> bool:
        """Whether anyone listens (else a write need not be checked at once: the watch keeps
        up with the file every :data:`POLL_S` seconds)."""
        return self.bus.listeners > 0 or any(uris for _, uris in self._subscribed.values())

    async def check(self) -> None:
        """Read the file's data version; if it moved since the last check and someone is
        subscribed, notify them. Called after each write call and by :meth:`watch`."""
        async with self._checking:
            try:
                version = await anyio.to_thread.run_sync(self._data_version)
            except apsw.Error as exc:  # a file gone or unreadable: nothing to tell anyone
                log.debug("data version of %s unreadable: %s", self._store.path, exc)
                return
            changed = self._version is not None and version != self._version
            self._version = version
            if changed and self.wanted():
                await self._notify()

    def _data_version(self) -> int:
        if self._watcher is None:
            # its own connection: on the store's, a commit that changed nothing moves it too
            self._watcher = apsw.Connection(str(self._store.path), flags=apsw.SQLITE_OPEN_READONLY)
            self._watcher.set_busy_timeout(1_000)
        return int(self._watcher.pragma("data_version"))

    async def watch(self) -> None:
        """Check for other processes' writes every :data:`POLL_S` seconds, until cancelled."""
        try:
            while True:
                await self.check()
                await anyio.sleep(POLL_S)
        finally:
            with anyio.CancelScope(shield=True):
                async with self._checking:
                    self.close()

    def close(self) -> None:
        """Close the watch's connection (a later check opens it again)."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            try:
                watcher.close()
            except apsw.Error as exc:  # in use by a check at this instant: the OS closes it
                log.debug("watch connection left open: %s", exc)

    async def _notify(self) -> None:
        await self.bus.publish(ResourceUpdated(uri=GRAPH_URI))
        for session, uris in list(self._subscribed.values()):
            if GRAPH_URI in uris:
                try:
                    await session.send_resource_updated(GRAPH_URI)
                except Exception as exc:  # the client went away meanwhile: its loss only
                    log.debug("resource update not delivered: %s", exc)

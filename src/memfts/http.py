"""Streamable HTTP for a team memory on one host: who may reach it, and how long anyone may
hold a connection.

The MCP app comes from :func:`memfts.server.build_server`; this module only decides who may
reach it. Listening on loopback needs no token; listening on any other address is refused
unless a token is set, and once a token is set every request must carry it, loopback or not.
A request without the right token is answered 401 before the MCP app sees it (and before its
body is read), so it can read or change nothing. Host/Origin checks (DNS rebinding) are
configured explicitly for every address: the SDK only switches them on by itself for loopback
hosts.

Anyone who can reach the port can open connections, token or not, so connections are bounded
(:class:`HttpLimits`): a request's headers must arrive within a few seconds and its body
within a minute, an idle connection is closed after a few seconds, and past the most open
connections the process can afford, the oldest connection still waiting for its request is
dropped to make room. Slow or idle clients therefore cannot starve those that send requests.
A body may be as large as the per-call text limit allows (:func:`body_limit`).
"""

from __future__ import annotations

import asyncio
import copy
import errno
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import socket
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Receive, Scope, Send

from memfts.errors import MemftsError
from memfts.store import Store

if TYPE_CHECKING:  # importing mcp costs half a second: not before the options are checked
    from mcp.server.transport_security import TransportSecuritySettings

log = logging.getLogger(__name__)

TOKEN_ENV = "MEMFTS_TOKEN"
MCP_PATH = "/mcp"
_WILDCARDS = ("0.0.0.0", "::", "")


class HttpConfigError(MemftsError):
    """The HTTP transport's options are unsafe or unusable; nothing was started."""


MIN_TOKEN_CHARS = 16
"""A shorter token could be guessed, and then it guards nothing."""

_MAKE_A_TOKEN = '(umask 077; python3 -c "import secrets; print(secrets.token_urlsafe(32))" > FILE)'


def load_token(token_file: Path | None, environ: dict[str, str] | None = None) -> str | None:
    """The bearer token from ``--token-file``, else ``$MEMFTS_TOKEN``; None if neither is set.

    Refused with the reason: a token shorter than :data:`MIN_TOKEN_CHARS`, and a token file
    other users may read (they could then read and change the memory)."""
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
            mode = stat.S_IMODE(token_file.stat().st_mode)
        except OSError as exc:
            raise HttpConfigError(f"cannot read token file {token_file}: {exc.strerror}") from None
        if not token:
            raise HttpConfigError(f"token file {token_file} is empty")
        if mode & 0o044:
            raise HttpConfigError(
                f"token file {token_file} is readable by other users (mode {mode:o}): anyone "
                f"who reads it can read and change the memory; run `chmod 600 {token_file}`"
            )
        source = f"token file {token_file}"
    else:
        env = os.environ if environ is None else environ
        token = env.get(TOKEN_ENV, "").strip()
        if not token:
            return None
        source = f"${TOKEN_ENV}"
    if len(token) < MIN_TOKEN_CHARS:
        raise HttpConfigError(
            f"the token in {source} is {len(token)} characters; it must be at least "
            f"{MIN_TOKEN_CHARS} (a short token can be guessed). Make one: {_MAKE_A_TOKEN}"
        )
    return token


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, token: str | None) -> None:
    """Refuse to serve beyond this machine without a token."""
    if token is None and not is_loopback(host):
        raise HttpConfigError(
            f"refusing to listen on {host or '*'} without a token: anyone who can reach it "
            f"could read and change the memory. Set ${TOKEN_ENV} or pass --token-file "
            "(or listen on 127.0.0.1)"
        )


def url_host(host: str) -> str:
    """``host`` as it appears in a URL or a Host header (IPv6 in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def allowed_host_names(host: str, extra: Iterable[str] = ()) -> list[str]:
    """Names clients may use to reach ``host``: it, this machine's names and addresses, and
    loopback; a wildcard address adds every address the host name resolves to."""
    names = {"127.0.0.1", "localhost", "[::1]", *extra}
    if host in _WILDCARDS:
        hostname = socket.gethostname()
        names |= {hostname, socket.getfqdn()}
        try:
            for info in socket.getaddrinfo(hostname, None):
                names.add(url_host(str(info[4][0])))
        except OSError:
            pass
        names |= set(_outbound_addresses())
    else:
        names.add(url_host(host))
    return sorted(n for n in names if n)


def _outbound_addresses() -> list[str]:
    """The addresses this machine sends from: its LAN addresses, which /etc/hosts often does
    not map the host name to. Found by routing a UDP socket (nothing is sent)."""
    found = []
    for family, probe in ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")):
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as udp:
                udp.connect((probe, 9))
                found.append(url_host(str(udp.getsockname()[0])))
        except OSError:
            continue
    return found


def security_settings(host: str, extra_hosts: Iterable[str] = ()) -> TransportSecuritySettings:
    """DNS-rebinding protection: the Host header must name this server, Origin likewise."""
    from mcp.server.transport_security import TransportSecuritySettings

    names = allowed_host_names(host, extra_hosts)
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[v for n in names for v in (n, f"{n}:*")],
        allowed_origins=[
            f"{scheme}://{n}{port}"
            for n in names
            for scheme in ("http", "https")
            for port in ("", ":*")
        ],
    )


class BearerAuth:
    """ASGI middleware: 401 for any HTTP request without ``Authorization: Bearer <token>``."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        # Compare fixed-length digests so neither the content nor the length of the
        # token leaks through timing.
        self._expected = hashlib.sha256(token.encode("utf-8")).digest()

    def _authorized(self, scope: Scope) -> bool:
        for key, value in scope.get("headers", ()):
            if key == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                given = hashlib.sha256(credentials.strip()).digest()
                return scheme.lower() == b"bearer" and hmac.compare_digest(given, self._expected)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # a websocket: nothing is served there, refuse it anyway
            await send({"type": "websocket.close", "code": 1008})
            return
        client = scope.get("client")
        _refusals.log("401 for %s %s from %s", scope.get("method"), scope.get("path"), client)
        body = b'{"error":"unauthorized","message":"missing or wrong bearer token"}'
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="memfts"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _Throttled:
    """A warning anyone on the network can cause, logged at most once per ``every_s`` seconds
    (with how many were left out), so that a flood of them cannot fill the log."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self._next = 0.0
        self._skipped = 0

    def log(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now < self._next:
            self._skipped += 1
            return
        if self._skipped:
            message += f" (and {self._skipped} more like it in the last {self.every_s:g} s)"
        self._skipped = 0
        self._next = now + self.every_s
        log.warning(message, *args)


_refusals = _Throttled()
_evictions = _Throttled()


BODY_SLACK_BYTES = 1 << 20
"""Room in a request body for the JSON around the text (names, keys, quotes, the envelope)."""


def body_limit(max_call_chars: int) -> int:
    """The largest request body: any call within the per-call text limit fits, whatever its
    characters (at most 4 bytes each in UTF-8 JSON), with room for the JSON around them."""
    return 4 * max_call_chars + BODY_SLACK_BYTES


class _BodyTooLarge(Exception):
    pass


DRAIN_BYTES = 256 << 20
"""How much of a refused body is read and dropped (no memory kept) before answering: a client
still sending when the connection closes sees a reset, not the answer that says why."""


async def _drain(receive: Receive, received: int) -> None:
    """Read and drop the rest of a request body, up to :data:`DRAIN_BYTES` (the body
    deadline bounds how long a slow sender can make this take)."""
    while received <= DRAIN_BYTES:
        message = await receive()
        if message["type"] != "http.request":
            return
        received += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is answered 413 with a JSON-RPC
    error naming the limit (a client shows it), before the MCP app parses any of it."""

    def __init__(self, app: ASGIApp, limit: int, max_call_chars: int) -> None:
        self.app = app
        self.limit = limit
        self.message = (
            f"the request body is over {limit:,} bytes, the most this server takes (4 bytes "
            f"per character of the per-call text limit, MEMFTS_MAX_CALL_CHARS="
            f"{max_call_chars:,}, plus 1 MiB): split the call into smaller ones"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", ()):
            if key == b"content-length" and value.isdigit() and int(value) > self.limit:
                await _drain(receive, 0)
                await self._refuse(send)
                return
        received = 0
        started = False

        async def counted() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _BodyTooLarge
            return message

        async def noted(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, noted)
        except _BodyTooLarge:
            if not started:
                await _drain(receive, received)
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        error = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": self.message}}
        body = json.dumps(error).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _NameTheFlag(logging.Filter):
    """The SDK logs a refused Host or Origin header without saying what to do about it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        for prefix, status in (("Invalid Host header: ", 421), ("Invalid Origin header: ", 403)):
            if message.startswith(prefix):
                value = message.removeprefix(prefix)
                name = value.split("://")[-1]  # an Origin has a scheme; then drop the port
                name = name.split("]")[0] + "]" if name.startswith("[") else name.split(":")[0]
                record.msg = (
                    "%d for %s %r: not a name of this server; if clients reach it by that name, "
                    "restart with --allow-host %s"
                )
                record.args = (status, prefix.split()[1], value, name)
        return True


def build_app(
    store: Store, *, host: str, token: str | None, extra_hosts: Iterable[str] = ()
) -> ASGIApp:
    """The MCP Streamable HTTP app at ``/mcp`` for ``store``, behind the token if one is set."""
    from memfts.server import build_server

    check_exposure(host, token)
    logging.getLogger("mcp.server.transport_security").addFilter(_NameTheFlag())
    max_call_chars = store.limits.max_call_chars
    limit = body_limit(max_call_chars)
    app: ASGIApp = build_server(store).streamable_http_app(
        streamable_http_path=MCP_PATH,
        host=host,
        transport_security=security_settings(host, extra_hosts),
        max_request_body_size=limit,
    )
    app = BodyLimit(app, limit, max_call_chars)
    return BearerAuth(app, token) if token is not None else app


def _log_config() -> dict[str, Any]:
    """uvicorn's logging, with access lines on stderr too (its default prints them to stdout)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    for handler in config["handlers"].values():
        if handler.get("stream") == "ext://sys.stdout":
            handler["stream"] = "ext://sys.stderr"
    return config


@dataclass(frozen=True)
class HttpLimits:
    """How long a client may take and how many connections may be open. Override with
    ``MEMFTS_HTTP_*`` variables (``MEMFTS_HTTP_HEADER_TIMEOUT_S=5``)."""

    header_timeout_s: float = 10.0
    """From the connection (or the end of the previous request) to the end of the headers."""
    body_timeout_s: float = 60.0
    """From the end of the headers to the end of the body."""
    idle_timeout_s: float = 5.0
    """An idle connection between requests is closed after this (clients reconnect)."""
    max_connections: int = 1000
    """At most this many open connections, and fewer if the file-descriptor limit is lower."""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> HttpLimits:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for spec in fields(cls):
            raw = env.get(f"MEMFTS_HTTP_{spec.name.upper()}")
            if raw is not None:
                kind = int if spec.name == "max_connections" else float
                try:
                    values[spec.name] = kind(raw)
                except ValueError:
                    raise HttpConfigError(
                        f"MEMFTS_HTTP_{spec.name.upper()}={raw!r} is not a number"
                    ) from None
        return cls(**values)


BACKLOG = 64
"""Connections the kernel queues, which is also how many asyncio accepts in one burst. A new
connection is looked at (and an old one dropped for it) a loop turn after it is accepted,
and a dropped one frees its descriptor a turn later, while each turn may accept another
burst: :func:`connection_budget` keeps four bursts' worth of descriptors free."""

FD_RESERVE = 64
"""File descriptors kept for the database, the logs and the store's threads."""


def connection_budget(limits: HttpLimits) -> int:
    """How many connections may be open: the configured most, within the file-descriptor
    limit (raised to the hard limit first: running out of descriptors stalls accept)."""
    try:
        import resource
    except ImportError:  # Windows: no descriptor limit to speak of
        return limits.max_connections
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 65536)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return max(8, min(limits.max_connections, soft - 4 * BACKLOG - FD_RESERVE))


def _guarded_protocol(limits: HttpLimits, budget: int) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with the deadlines and the connection bound uvicorn lacks: it
    has an idle timeout between requests but none for a request's headers or body, and a
    concurrency limit that answers 503 to new requests (legitimate ones) while slow
    connections keep their places."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    open_connections: dict[Guarded, None] = {}  # oldest first

    class Guarded(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _waiting_for = ""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            open_connections[self] = None
            self._wait_for("headers", limits.header_timeout_s)
            if len(open_connections) > budget:
                self._make_room()

        def connection_lost(self, exc: Exception | None) -> None:
            self._wait_for("", 0)
            open_connections.pop(self, None)
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            state = self.conn.their_state
            if state is h11.IDLE:  # part of the next request's headers
                if not self._waiting_for:
                    self._wait_for("headers", limits.header_timeout_s)
            elif state is h11.SEND_BODY:
                if self._waiting_for != "body":
                    self._wait_for("body", limits.body_timeout_s)
            else:  # the request is in (or the connection is ending): the app takes its time
                self._wait_for("", 0)

        def _wait_for(self, what: str, seconds: float) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            self._waiting_for = what
            if what:
                self._deadline = self.loop.call_later(seconds, self._too_slow)

        def _too_slow(self) -> None:
            self._deadline = None
            log.debug("closing %s: its request %s took too long", self.client, self._waiting_for)
            self.transport.close()

        def _idle(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _make_room(self) -> None:
            """Drop the oldest connection still sending its request, else the oldest idle one,
            else this new one: a connection that is being answered is never dropped."""
            live = [c for c in open_connections if not c.transport.is_closing()]
            victim = next((c for c in live if c._waiting_for and c._idle()), None)
            victim = victim or next((c for c in live if c._idle()), self)
            _evictions.log(
                "%d connections open, the most this server keeps (MEMFTS_HTTP_MAX_CONNECTIONS, "
                "file-descriptor limit): dropping the oldest that is not being answered",
                len(open_connections),
            )
            victim.transport.close()

    return Guarded


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything is printed: a port in use is one line."""
    address = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    # IPPROTO_TCP named, not left 0: asyncio turns Nagle off (TCP_NODELAY) only for accepted
    # sockets whose proto says TCP, and with Nagle on, every answer on a kept-alive connection
    # waited ~40 ms for the client's delayed ACK (its headers and body are two writes)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        where = f"{url_host(address)}:{port}"
        if exc.errno == errno.EADDRINUSE:
            raise HttpConfigError(
                f"port {port} on {url_host(address)} is in use by another program: stop it or "
                "pass --port"
            ) from None
        raise HttpConfigError(f"cannot listen on {where}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def serve(
    store: Store,
    *,
    host: str,
    port: int,
    token: str | None,
    extra_hosts: Iterable[str] = (),
    sock: socket.socket | None = None,
    access_log: bool = False,
) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM), then return so the caller closes the store."""
    app = build_app(store, host=host, token=token, extra_hosts=extra_hosts)
    run(app, host=host, port=port, sock=sock, access_log=access_log)


def run(
    app: ASGIApp,
    *,
    host: str,
    port: int,
    sock: socket.socket | None = None,
    access_log: bool = False,
    limits: HttpLimits | None = None,
) -> None:
    """Serve ``app`` with uvicorn until interrupted (Ctrl-C or SIGTERM), then return.

    Shared by ``serve --http`` and ``memfts ui``, so both run with the same server settings:
    the deadlines and connection bound of :class:`HttpLimits`, access lines only when asked
    for (on stderr), and a shutdown that waits a few seconds at most for calls in progress.
    """
    import uvicorn

    limits = limits or HttpLimits.from_env()

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            # uvicorn re-raises the signal after its graceful shutdown, which would kill the
            # process before the store is closed (and the WAL checkpointed); exit normally
            self._captured_signals.clear()

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:  # uvicorn says where it listens only for sockets it opened
                self._log_started_message(sockets or [])

    sock = sock or listen(host, port)
    config = uvicorn.Config(
        app,
        host=host.strip("[]"),
        port=sock.getsockname()[1],
        log_config=_log_config(),
        access_log=access_log,
        lifespan="on",
        http=_guarded_protocol(limits, connection_budget(limits)),
        timeout_keep_alive=limits.idle_timeout_s,  # type: ignore[arg-type]
        timeout_graceful_shutdown=5,
        backlog=BACKLOG,
    )
    Server(config).run(sockets=[sock])

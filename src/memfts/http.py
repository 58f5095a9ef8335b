"""Streamable HTTP for a team memory on one host: bearer-token auth and DNS-rebinding checks.

The MCP app comes from :func:`memfts.server.build_server`; this module only decides who may
reach it. Listening on loopback needs no token; listening on any other address is refused
unless a token is set, and once a token is set every request must carry it, loopback or not.
A request without the right token is answered 401 before the MCP app sees it, so it can
read or change nothing. Host/Origin checks (DNS rebinding) are configured explicitly for
every address: the SDK only switches them on by itself for loopback hosts.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import ipaddress
import logging
import os
import socket
from collections.abc import Iterable
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


def load_token(token_file: Path | None, environ: dict[str, str] | None = None) -> str | None:
    """The bearer token from ``--token-file``, else ``$MEMFTS_TOKEN``; None if neither is set."""
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise HttpConfigError(f"cannot read token file {token_file}: {exc.strerror}") from None
        if not token:
            raise HttpConfigError(f"token file {token_file} is empty")
        return token
    env = os.environ if environ is None else environ
    return env.get(TOKEN_ENV, "").strip() or None


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
        log.warning("401 for %s %s from %s", scope.get("method"), scope.get("path"), client)
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


def build_app(
    store: Store, *, host: str, token: str | None, extra_hosts: Iterable[str] = ()
) -> ASGIApp:
    """The MCP Streamable HTTP app at ``/mcp`` for ``store``, behind the token if one is set."""
    from memfts.server import build_server

    check_exposure(host, token)
    app: ASGIApp = build_server(store).streamable_http_app(
        streamable_http_path=MCP_PATH,
        host=host,
        transport_security=security_settings(host, extra_hosts),
    )
    return BearerAuth(app, token) if token is not None else app


def _log_config() -> dict[str, Any]:
    """uvicorn's logging, with access lines on stderr too (its default prints them to stdout)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    for handler in config["handlers"].values():
        if handler.get("stream") == "ext://sys.stdout":
            handler["stream"] = "ext://sys.stderr"
    return config


def serve(
    store: Store, *, host: str, port: int, token: str | None, extra_hosts: Iterable[str] = ()
) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM), then return so the caller closes the store."""
    run(build_app(store, host=host, token=token, extra_hosts=extra_hosts), host=host, port=port)


def run(app: ASGIApp, *, host: str, port: int) -> None:
    """Serve ``app`` with uvicorn until interrupted (Ctrl-C or SIGTERM), then return.

    Shared by ``serve --http`` and ``memfts ui``, so both run with the same server settings.
    """
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            # uvicorn re-raises the signal after its graceful shutdown, which would kill the
            # process before the store is closed (and the WAL checkpointed); exit normally
            self._captured_signals.clear()

    config = uvicorn.Config(
        app, host=host.strip("[]"), port=port, log_config=_log_config(), lifespan="on"
    )
    Server(config).run()

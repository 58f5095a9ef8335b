"""``memfts serve --http``: a real server process on a free loopback port, driven by the mcp
client over Streamable HTTP and by raw HTTP requests, with and without the bearer token."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import mcp
import pytest
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from conftest import build_schema, memfts_command
from memfts.http import HttpConfigError, check_exposure, load_token, security_settings
from memfts.models import Entity
from memfts.store import Store
from workers import ForeignLock, HttpSession, initialize_request

STARTUP_S = 20.0
SERVE = [*memfts_command(), "serve", "--http"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    db: Path
    token: str | None
    connect_host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.connect_host}:{self.port}/mcp"


def start(
    db: Path, *args: str, token: str | None = None, nofile: int | None = None, **env: str
) -> Server:
    """Spawn ``memfts serve --http`` and wait until its port accepts connections; ``nofile``
    sets its file-descriptor limit (soft and hard, as ``ulimit -n`` would)."""
    environ = {k: v for k, v in os.environ.items() if k not in ("MEMFTS_TOKEN", "MEMORY_DB_PATH")}
    environ.update(env)
    if token is not None:
        environ["MEMFTS_TOKEN"] = token
    port = free_port()
    process = subprocess.Popen(
        [*memfts_command(), "serve", "--http", "--db", str(db), "--port", str(port), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environ,
        preexec_fn=None if nofile is None else lambda: _limit_files(nofile),
    )
    deadline = time.monotonic() + STARTUP_S
    while True:
        if process.poll() is not None:
            raise AssertionError(f"server exited: {process.stderr.read().decode()}")  # type: ignore[union-attr]
        try:  # the port is bound before the store opens: wait for an answer, not a connection
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1):
                break
        except urllib.error.HTTPError:
            break
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise AssertionError("server did not start listening") from None
            time.sleep(0.05)
    return Server(process, port, db, token)


def _limit_files(n: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))


def stop(server: Server) -> tuple[bytes, bytes]:
    server.process.send_signal(signal.SIGTERM)
    out, err = server.process.communicate(timeout=15)
    assert server.process.returncode == 0, err.decode()
    return out, err


def post(
    server: Server, body: dict[str, Any], *, token: str | None, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    """A raw JSON-RPC POST, as a script (or an attacker) would send it."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/mcp",
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            **({"Authorization": f"Bearer {token}"} if token is not None else {}),
            **headers,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


INITIALIZE = initialize_request(1)
CREATE_INTRUDER = {
    "jsonrpc": "2.0",
    "id": 2,
    "method": "tools/call",
    "params": {
        "name": "create_entities",
        "arguments": {"entities": [{"name": "Intruder", "entityType": "x", "observations": []}]},
    },
}


async def _session(
    server: Server, token: str | None, calls: list[tuple[str, dict[str, Any]]]
) -> list[Any]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else None
    async with create_mcp_http_client(headers=headers) as http:
        transport = streamable_http_client(server.url, http_client=http)
        async with mcp.Client(transport, mode="legacy") as client:
            results = []
            for tool, arguments in calls:
                result = await client.call_tool(tool, arguments)
                assert not result.is_error, result.content
                results.append(result.structured_content)
            return results


def call(server: Server, token: str | None, *calls: tuple[str, dict[str, Any]]) -> list[Any]:
    return anyio.run(_session, server, token, list(calls))


def names_in(db: Path) -> list[str]:
    store = Store(db)
    try:
        return [e.name for e in store.read_graph().entities]
    finally:
        store.close()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One loopback server with a token for the whole module."""
    db = tmp_path_factory.mktemp("http") / "memory.db"
    build_schema(db)
    server = start(db, token=secrets.token_urlsafe(24))
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


# ---- with the token ------------------------------------------------------------------------


def test_client_with_token_uses_the_memory(guarded: Server) -> None:
    created, found = call(
        guarded,
        guarded.token,
        (
            "create_entities",
            {"entities": [{"name": "Alice", "entityType": "person", "observations": ["likes Go"]}]},
        ),
        ("open_nodes", {"names": ["Alice"]}),
    )
    assert created["entities"][0]["name"] == "Alice"
    assert [e["name"] for e in found["entities"]] == ["Alice"]
    assert "Alice" in names_in(guarded.db)  # the same file other sessions and the CLI use


def test_two_sessions_at_once_share_one_memory(guarded: Server) -> None:
    async def writer(tag: str) -> None:
        await _session(
            guarded,
            guarded.token,
            [
                (
                    "create_entities",
                    {"entities": [{"name": f"{tag}{i}", "entityType": "t"}]},
                )
                for i in range(15)
            ],
        )

    async def both() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer, "left-")
            tg.start_soon(writer, "right-")

    anyio.run(both)
    names = names_in(guarded.db)
    assert sum(n.startswith(("left-", "right-")) for n in names) == 30


# ---- without it ----------------------------------------------------------------------------


def test_requests_without_or_with_a_wrong_token_get_401_and_change_nothing(guarded: Server) -> None:
    before = names_in(guarded.db)
    for token in (None, "wrong", guarded.token + "x", ""):  # type: ignore[operator]
        status, headers, body = post(guarded, CREATE_INTRUDER, token=token)
        assert status == 401, token
        assert headers["www-authenticate"] == 'Bearer realm="memfts"'
        assert json.loads(body)["error"] == "unauthorized"
    status, _, _ = post(guarded, INITIALIZE, token=None, Authorization=f"Basic {guarded.token}")
    assert status == 401
    assert names_in(guarded.db) == before
    assert "Intruder" not in before


def test_mcp_client_without_token_cannot_connect(guarded: Server) -> None:
    with pytest.raises(ExceptionGroup) as caught:
        call(guarded, None, ("read_graph", {}))
    # the SDK turns the 401 into this error on the very first request (initialize)
    assert caught.group_contains(MCPError, match="Server returned an error response", depth=2)


def test_token_does_not_bypass_dns_rebinding_checks(guarded: Server) -> None:
    status, _, _ = post(guarded, INITIALIZE, token=guarded.token, Host="evil.example")
    assert status == 421
    status, _, _ = post(guarded, INITIALIZE, token=guarded.token, Origin="http://evil.example")
    assert status == 403
    status, _, _ = post(guarded, INITIALIZE, token=guarded.token)
    assert status == 200


# ---- without a token, and beyond loopback --------------------------------------------------


def test_loopback_without_token_is_open_and_logs_only_to_stderr(tmp_path: Path) -> None:
    db = tmp_path / "open.db"
    server = start(db)
    try:
        (graph,) = call(server, None, ("read_graph", {}))
        assert graph == {"entities": [], "relations": []}
    finally:
        out, err = stop(server)
    assert out == b""  # stdout stays clean: logs and the banner go to stderr
    assert b"no token: loopback only" in err
    assert b"POST /mcp" not in err  # no line per request unless asked for


def test_access_lines_only_with_access_log(tmp_path: Path) -> None:
    server = start(tmp_path / "open.db", "--access-log")
    try:
        call(server, None, ("read_graph", {}))
    finally:
        out, err = stop(server)
    assert out == b"" and b"POST /mcp" in err


def test_a_busy_port_is_one_line_before_any_banner(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*SERVE, "--db", str(tmp_path / "m.db"), "--port", str(port)],
            capture_output=True,
            timeout=60,
            env={k: v for k, v in os.environ.items() if k != "MEMFTS_TOKEN"},
        )
    assert done.returncode == 1
    assert done.stderr.decode().splitlines() == [
        f"Error: port {port} on 127.0.0.1 is in use by another program: stop it or pass --port"
    ]
    assert not (tmp_path / "m.db").exists()  # nothing was opened or created


def test_a_refused_host_is_logged_with_the_flag_that_allows_it(tmp_path: Path) -> None:
    server = start(tmp_path / "m.db", token=secrets.token_urlsafe(24))
    try:
        host = f"memory-host:{server.port}"
        assert post(server, INITIALIZE, token=server.token, Host=host)[0] == 421
    finally:
        _, err = stop(server)
    assert f"421 for Host '{host}': not a name of this server".encode() in err
    assert b"restart with --allow-host memory-host" in err


def test_public_address_needs_a_token_and_checks_the_host_header(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token = secrets.token_urlsafe(24)
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)

    db = tmp_path / "team.db"
    server = start(db, "--host", "0.0.0.0", "--token-file", str(token_file))
    try:
        assert post(server, INITIALIZE, token=None)[0] == 401
        assert post(server, INITIALIZE, token=token, Host="evil.example")[0] == 421
        assert post(server, INITIALIZE, token=token, Host=f"localhost:{server.port}")[0] == 200
        (graph,) = call(server, token, ("read_graph", {}))
        assert graph["entities"] == []
    finally:
        stop(server)


# ---- configuration, without a server -------------------------------------------------------


def test_exposure_rules() -> None:
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_exposure(host, None)
    for host in ("0.0.0.0", "::", "192.168.1.10", "memory.example.com"):
        with pytest.raises(HttpConfigError, match="without a token"):
            check_exposure(host, None)
        check_exposure(host, "t")


def test_token_sources(tmp_path: Path) -> None:
    assert load_token(None, {}) is None
    assert load_token(None, {"MEMFTS_TOKEN": "  "}) is None
    assert load_token(None, {"MEMFTS_TOKEN": "sixteen-chars-ok\n"}) == "sixteen-chars-ok"
    file = tmp_path / "t"
    file.write_text("from-file-0123456789\n")
    file.chmod(0o600)
    assert load_token(file, {"MEMFTS_TOKEN": "env"}) == "from-file-0123456789"
    file.write_text("\n")
    with pytest.raises(HttpConfigError, match="is empty"):
        load_token(file, {})
    with pytest.raises(HttpConfigError, match="cannot read token file"):
        load_token(tmp_path / "missing", {})


def test_a_short_token_or_one_others_can_read_is_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(
        HttpConfigError, match=r"MEMFTS_TOKEN is 3 characters; it must be at least 16"
    ):
        load_token(None, {"MEMFTS_TOKEN": "abc"})
    file = tmp_path / "token"
    file.write_text("short\n")
    file.chmod(0o600)
    with pytest.raises(HttpConfigError, match=r"token file .* is 5 characters"):
        load_token(file, {})
    file.write_text(secrets.token_urlsafe(32))
    for mode in (0o644, 0o640, 0o604):
        file.chmod(mode)
        with pytest.raises(HttpConfigError, match=f"readable by other users \\(mode {mode:o}\\)"):
            load_token(file, {})
    file.chmod(0o600)
    assert load_token(file, {})
    # and the server says so in one line, before opening anything
    file.chmod(0o644)
    done = subprocess.run(
        [*SERVE, "--db", str(tmp_path / "m.db"), "--token-file", str(file)],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 1
    (line,) = done.stderr.decode().splitlines()
    assert "readable by other users" in line and "chmod 600" in line
    assert not (tmp_path / "m.db").exists()


def test_dns_rebinding_protection_is_explicit_for_every_address() -> None:
    for host in ("127.0.0.1", "0.0.0.0", "192.168.1.10"):
        settings = security_settings(host, ["memory.internal"])
        assert settings.enable_dns_rebinding_protection
        assert "memory.internal:*" in settings.allowed_hosts
        assert "evil.example" not in settings.allowed_hosts
    assert "192.168.1.10:*" in security_settings("192.168.1.10").allowed_hosts
    assert "[::1]:*" in security_settings("::1").allowed_hosts


# ---- one call never freezes the others -----------------------------------------------------


def _filled(db: Path, entities: int) -> None:
    store = Store(db)
    try:
        for start in range(0, entities, 2000):
            batch = [
                Entity(
                    name=f"entity {i}",
                    entityType=f"type{i % 7}",
                    observations=[f"note {i} about topic{i % 97}", f"word{i % 1013} shared text"],
                )
                for i in range(start, min(start + 2000, entities))
            ]
            store.import_batch(batch, [])
    finally:
        store.close()


def test_reads_answer_in_normal_time_while_a_write_waits_for_another_process(
    tmp_path: Path,
) -> None:
    """10k entities; another process holds the write lock; one client's write waits for it.
    Three other clients' searches and reads answer meanwhile in their normal time (the
    target, p99 under 50 ms, is measured by bench/stress.py --http on a quiet machine).
    Before, every call of every client waited behind the blocked write (14.8 s for a 404)."""
    db = tmp_path / "team.db"
    _filled(db, 10_000)
    token = secrets.token_urlsafe(24)
    server = start(db, token=token, MEMFTS_BUSY_TIMEOUT_S="60")
    latencies: list[float] = []

    async def reader(k: int) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        async with create_mcp_http_client(headers=headers) as http:
            transport = streamable_http_client(server.url, http_client=http)
            async with mcp.Client(transport, mode="legacy") as client:
                for i in range(30):
                    started = time.perf_counter()
                    if i % 2:
                        result = await client.call_tool("search_nodes", {"query": f"topic{i + k}"})
                    else:
                        result = await client.call_tool("open_nodes", {"names": [f"entity {i}"]})
                    latencies.append(time.perf_counter() - started)
                    assert not result.is_error, result.content

    async def main() -> None:
        with ForeignLock(db) as lock:
            async with anyio.create_task_group() as tg:
                written = anyio.Event()

                async def writer() -> None:
                    (created,) = await _session(
                        server,
                        token,
                        [("create_entities", {"entities": [{"name": "late", "entityType": "t"}]})],
                    )
                    assert created["entities"][0]["name"] == "late"
                    written.set()

                tg.start_soon(writer)
                await anyio.sleep(0.5)  # the write is waiting for the lock
                # the lock is released only once the readers are done: reads that waited
                # behind the write would never finish
                with anyio.fail_after(120):
                    async with anyio.create_task_group() as readers:
                        for k in range(3):
                            readers.start_soon(reader, k)
                assert not written.is_set()  # the lock is still held: the write still waits
                await anyio.to_thread.run_sync(lock.release)
                with anyio.fail_after(20):
                    await written.wait()

    try:
        anyio.run(main)
    finally:
        stop(server)
    latencies.sort()
    p99 = latencies[int(0.99 * len(latencies))]
    assert len(latencies) == 90
    # 50 ms is the target on a quiet machine (bench/stress.py --http); CI machines are busy
    assert p99 < 2.0, f"p99 {p99 * 1000:.0f} ms while a write waited"
    assert "late" in names_in(db)


# ---- slow, idle and oversized requests ------------------------------------------------------


def test_slow_connections_cannot_starve_authenticated_calls(tmp_path: Path) -> None:
    """700 connections sending their headers a byte at a time against a server allowed 512
    file descriptors (the issue: 1,100 at ulimit 1024 made every authenticated call time out
    for a minute, the log full of "Too many open files"). The oldest of them are dropped to
    make room, so authenticated calls on fresh connections keep answering."""
    token = secrets.token_urlsafe(24)
    server = start(tmp_path / "m.db", token=token, nofile=512)
    slow: list[socket.socket] = []

    def attack() -> None:
        while len(slow) < 700:
            try:
                s = socket.create_connection(("127.0.0.1", server.port), timeout=2)
                s.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            except OSError:
                return
            slow.append(s)

    answered: list[float] = []
    began = time.monotonic()
    try:
        attack()
        assert len(slow) == 700
        for k in range(8):
            for s in list(slow):  # a byte each; those the server dropped are opened again
                try:
                    s.send(b"x")
                except OSError:
                    slow.remove(s)
                    s.close()
            attack()
            started = time.monotonic()
            with HttpSession(server.port, token, timeout=30) as session:
                session.call_ok(
                    "create_entities", {"entities": [{"name": f"e{k}", "entityType": "t"}]}
                )
            answered.append(time.monotonic() - started)
            time.sleep(0.3)
    finally:
        for s in slow:
            s.close()
        _, err = stop(server)
    # each answered (in milliseconds on a quiet machine; a fresh connection competes with the
    # attackers' for the accept queue, and CI machines are busy)
    assert len(answered) == 8 and max(answered) < 15.0, answered
    assert b"Too many open files" not in err, err.decode()[-3000:]
    assert b"connections open, the most this server keeps" in err  # said, not repeated
    assert err.count(b"the most this server keeps") <= 2 + (time.monotonic() - began) / 10
    assert names_in(tmp_path / "m.db") == [f"e{k}" for k in range(8)]


def _closed_after(sock: socket.socket, limit: float, trickle: bytes = b"") -> float:
    """Seconds until the server closes ``sock`` (sending ``trickle`` every 0.2 s meanwhile)."""
    started = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - started < limit:
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - started
        except TimeoutError:
            pass
        except ConnectionResetError:
            return time.monotonic() - started
        if trickle:
            try:
                sock.send(trickle)
            except OSError:
                return time.monotonic() - started
    raise AssertionError(f"the connection was still open after {limit} s")


def test_headers_bodies_and_idle_connections_have_deadlines(tmp_path: Path) -> None:
    token = secrets.token_urlsafe(24)
    server = start(
        tmp_path / "m.db",
        token=token,
        MEMFTS_HTTP_HEADER_TIMEOUT_S="1",
        MEMFTS_HTTP_BODY_TIMEOUT_S="2",
        MEMFTS_HTTP_IDLE_TIMEOUT_S="1",
    )
    address = ("127.0.0.1", server.port)
    try:
        with socket.create_connection(address) as silent:  # connects, sends nothing
            assert 0.5 < _closed_after(silent, 10) < 4
        with socket.create_connection(address) as slow_headers:  # a byte now and then
            slow_headers.sendall(b"POST /mcp HTTP/1.1\r\n")
            assert 0.5 < _closed_after(slow_headers, 10, trickle=b"X") < 4
        with socket.create_connection(address) as slow_body:  # headers in time, body not
            slow_body.sendall(
                b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Authorization: Bearer " + token.encode() + b"\r\nContent-Length: 100000\r\n\r\n"
            )
            assert 1.5 < _closed_after(slow_body, 15, trickle=b" ") < 6
        with socket.create_connection(address) as idle:  # one request, then nothing
            idle.sendall(
                b"GET /elsewhere HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                + token.encode()
                + b"\r\n\r\n"
            )
            assert _closed_after(idle, 10) < 4
        # a client that sends its requests is not affected
        with HttpSession(server.port, token) as session:
            for _ in range(3):
                session.call_ok("read_graph", {})
    finally:
        stop(server)


def one(name: str, observations: list[str]) -> dict[str, Any]:
    return {"entities": [{"name": name, "entityType": "t", "observations": observations}]}


def test_a_body_within_the_text_limit_is_taken_and_one_over_it_is_told_the_limit(
    tmp_path: Path,
) -> None:
    """The body cap follows MEMFTS_MAX_CALL_CHARS (4 bytes a character, plus 1 MiB): a 5.4 MB
    create within the 10M-character limit is stored (it got a bare 413 at the SDK's 4 MiB);
    a body over the cap gets a JSON-RPC error naming the limit, which the client shows."""
    db = tmp_path / "m.db"
    token = secrets.token_urlsafe(24)
    server = start(db, token=token)
    big = [f"{k} " + "x" * 90_000 for k in range(60)]
    try:
        # the answer echoes the 5.4 MB back: over the mcp client's 1 MiB limit for one SSE
        # event, so read by the plain client
        with HttpSession(server.port, token) as session:
            created = session.call_ok("create_entities", one("big", big))["structuredContent"]
        assert created["entities"][0]["name"] == "big"
    finally:
        stop(server)
    assert names_in(db) == ["big"]

    server = start(db, token=token, MEMFTS_MAX_CALL_CHARS="1000")
    try:
        limit = 4 * 1000 + (1 << 20)
        request = {**CREATE_INTRUDER}
        request["params"] = {
            "name": "create_entities",
            "arguments": {
                "entities": [{"name": "too big", "entityType": "t", "observations": big[:15]}]
            },
        }
        status, headers, body = post(server, request, token=token)
        assert status == 413 and headers["content-type"] == "application/json"
        error = json.loads(body)["error"]
        assert error["code"] == -32600
        assert f"over {limit:,} bytes" in error["message"]
        assert "MEMFTS_MAX_CALL_CHARS=1,000" in error["message"]
        with pytest.raises(ExceptionGroup) as caught:
            call(server, token, ("create_entities", request["params"]["arguments"]))
        assert caught.group_contains(MCPError, match="MEMFTS_MAX_CALL_CHARS=1,000")
    finally:
        stop(server)
    assert names_in(db) == ["big"]

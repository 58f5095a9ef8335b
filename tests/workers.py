"""Helpers the concurrency, crash and hostile-input tests (and bench/stress.py) share.

:class:`RawServer` spawns ``python -m memfts`` and speaks MCP's JSON-RPC to it line by line,
byte for byte: the tests need what a high-level client hides — the process id (to SIGKILL
it), requests in flight while it dies (to know exactly which writes were acknowledged), and
raw JSON a Python client would refuse to send (a lone ``\\ud800`` escape, 100,000 nested
arrays, a line that is not JSON).
"""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# the same spawn command and client environment as the protocol tests; re-exported for the
# modules (and bench/stress.py) that import them from here
from conftest import memfts_command as memfts_command
from conftest import server_env as server_env

PROTOCOL_VERSION = "2025-06-18"
TIMEOUT_S = 30.0


INITIALIZE_PARAMS: dict[str, Any] = {
    "protocolVersion": PROTOCOL_VERSION,
    "capabilities": {},
    "clientInfo": {"name": "memfts-tests", "version": "0"},
}


def initialize_request(request_id: int = 0) -> dict[str, Any]:
    """The ``initialize`` request line a client sends first."""
    return {"jsonrpc": "2.0", "id": request_id, "method": "initialize", "params": INITIALIZE_PARAMS}


class ServerGone(Exception):
    """The server closed its stdout (it exited or was killed) before answering."""


class RawServer:
    """One ``memfts`` process on stdio, driven with hand-written JSON-RPC lines."""

    def __init__(
        self,
        db: Path,
        *,
        env: dict[str, str] | None = None,
        command: Sequence[str] | None = None,
        initialize: bool = True,
    ) -> None:
        self.stderr_file = tempfile.TemporaryFile()  # noqa: SIM115 (closed in __exit__)
        self.proc = subprocess.Popen(
            list(command or memfts_command()),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr_file,
            env=server_env(db, **(env or {})),
        )
        self.pid = self.proc.pid
        self._next_id = 0
        self._send_lock = threading.Lock()
        self.responses: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._pending: dict[int, dict[str, Any]] = {}
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        if initialize:
            self.initialize()

    # ---- wire --------------------------------------------------------------------------

    def _read_loop(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                message = {"unparsable": line.decode("utf-8", "replace")}
            if isinstance(message, dict) and "method" in message and "id" not in message:
                continue  # a notification (log message, list changed): not an answer
            self.responses.put(message)
        self.responses.put(None)

    def send_line(self, data: bytes) -> None:
        """Write one raw line (a newline is added) to the server's stdin."""
        assert self.proc.stdin is not None
        with self._send_lock:
            self.proc.stdin.write(data + b"\n")
            self.proc.stdin.flush()

    def send(self, method: str, params: dict[str, Any] | None = None) -> int:
        """Send a request without waiting; returns its id."""
        with self._send_lock:
            self._next_id += 1
            request_id = self._next_id
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send_line(json.dumps(message, ensure_ascii=False).encode("utf-8", "surrogatepass"))
        return request_id

    def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self.send_line(json.dumps(message).encode())

    def wait(self, request_id: int, timeout: float = TIMEOUT_S) -> dict[str, Any]:
        """The response to ``request_id``; raises :class:`ServerGone` if the server died."""
        deadline = time.monotonic() + timeout
        while request_id not in self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no answer to request {request_id} in {timeout} s")
            try:
                message = self.responses.get(timeout=remaining)
            except queue.Empty:
                continue
            if message is None:
                self.responses.put(None)  # keep the end marker for later waits
                raise ServerGone(f"server exited before answering request {request_id}")
            self._pending[message.get("id", -1)] = message
        return self._pending.pop(request_id)

    def request(
        self, method: str, params: dict[str, Any] | None = None, timeout: float = TIMEOUT_S
    ) -> dict[str, Any]:
        return self.wait(self.send(method, params), timeout)

    def initialize(self) -> dict[str, Any]:
        answer = self.request("initialize", INITIALIZE_PARAMS)
        assert "result" in answer, answer
        self.notify("notifications/initialized")
        return answer

    # ---- tools -------------------------------------------------------------------------

    def call(self, tool: str, arguments: Any, timeout: float = TIMEOUT_S) -> dict[str, Any]:
        """The ``tools/call`` result (``content``, ``isError``...) or the JSON-RPC error."""
        answer = self.request("tools/call", {"name": tool, "arguments": arguments}, timeout)
        return answer.get("result", answer)

    def call_ok(self, tool: str, arguments: Any) -> dict[str, Any]:
        result = self.call(tool, arguments)
        assert result.get("isError") is False, f"{tool} failed: {result}"
        return result

    def graph(self) -> dict[str, Any]:
        """The whole graph, following read_graph's pages (a large graph comes in several)."""
        graph: dict[str, Any] = {"entities": [], "relations": []}
        arguments: dict[str, Any] = {}
        while True:
            page: dict[str, Any] = self.call_ok("read_graph", arguments)["structuredContent"]
            graph["entities"] += page["entities"]
            graph["relations"] += page["relations"]
            if "nextCursor" not in page:
                return graph
            arguments = {"cursor": page["nextCursor"]}

    # ---- process -----------------------------------------------------------------------

    def stderr(self) -> str:
        self.stderr_file.seek(0)
        return self.stderr_file.read().decode("utf-8", "replace")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=TIMEOUT_S)

    def close(self, timeout: float = TIMEOUT_S) -> int:
        """Close stdin, as a client does when it ends the session; returns the exit code."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            self._reader.join(timeout=5)

    def __enter__(self) -> RawServer:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.close()
        self.stderr_file.close()


def error_text(result: dict[str, Any]) -> str:
    """The text of a tool error (or of a JSON-RPC error)."""
    if "content" in result:
        return " ".join(block.get("text", "") for block in result["content"])
    return str(result.get("error", result))


_HOLD_LOCK = """
import sys, apsw
conn = apsw.Connection(sys.argv[1])
conn.set_busy_timeout(30_000)  # other writers may hold the lock for a moment: wait for it
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()  # until the parent closes our stdin
conn.execute("ROLLBACK")
"""


class ForeignLock:
    """The database's write lock held by another OS process (a script left inside a
    transaction, another program), until :meth:`release` or the end of the ``with``."""

    def __init__(self, db: Path) -> None:
        import sys

        self.proc = subprocess.Popen(
            [sys.executable, "-c", _HOLD_LOCK, str(db)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != b"locked":
            self.proc.kill()
            raise AssertionError(f"the lock holder did not take the lock: {line!r}")

    def release(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=TIMEOUT_S)

    def __enter__(self) -> ForeignLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class HttpSession:
    """One MCP session over Streamable HTTP, hand-written on ``http.client`` (a keep-alive
    connection, the SSE answer read whole): cheap enough for a benchmark's many clients."""

    def __init__(
        self, port: int, token: str | None = None, host: str = "127.0.0.1", timeout: float = 120
    ) -> None:
        import http.client

        self._http = http.client.HTTPConnection(host, port, timeout=timeout)
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            **({"Authorization": f"Bearer {token}"} if token else {}),
        }
        self._next_id = 0
        answer = self.request("initialize", INITIALIZE_PARAMS)
        assert "result" in answer, answer
        self._post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def _post(self, message: dict[str, Any]) -> tuple[int, bytes]:
        import http.client

        body = json.dumps(message, ensure_ascii=False).encode()
        for attempt in (1, 2):
            try:
                self._http.request("POST", "/mcp", body=body, headers=self._headers)
                response = self._http.getresponse()
                session = response.getheader("mcp-session-id")
                if session:
                    self._headers["Mcp-Session-Id"] = session
                return response.status, response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._http.close()  # the server closed an idle keep-alive connection
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": self._next_id, "method": method}
        if params is not None:
            message["params"] = params
        status, raw = self._post(message)
        for line in raw.splitlines():  # an SSE stream: the answer is a `data:` line
            if line.startswith(b"data:") and line[5:].strip():
                answer: dict[str, Any] = json.loads(line[5:])
                if answer.get("id") == self._next_id:
                    return answer
        if raw.startswith(b"{"):
            parsed: dict[str, Any] = json.loads(raw)
            return parsed
        raise AssertionError(f"HTTP {status} without an answer: {raw[:300]!r}")

    def call(self, tool: str, arguments: Any, timeout: float = TIMEOUT_S) -> dict[str, Any]:
        answer = self.request("tools/call", {"name": tool, "arguments": arguments})
        return answer.get("result", answer)

    def call_ok(self, tool: str, arguments: Any) -> dict[str, Any]:
        result = self.call(tool, arguments)
        assert result.get("isError") is False, f"{tool} failed: {result}"
        return result

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> HttpSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

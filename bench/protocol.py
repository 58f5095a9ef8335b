"""Driving MCP servers over stdio for the benchmark: memfts and the official Node server.

Two clients:
- ``mcp.Client(StdioServerParameters(...), mode="legacy")``, what a Python agent would use;
- :class:`RawPipeClient`, a minimal JSON-RPC-over-stdio client that reads each response line
  with one ``readline``. mcp 2.3's stdio client re-joins its buffer per 64 KiB chunk, which is
  quadratic on multi-MB lines (stack-facts B4): the official server's unbounded results for
  common words are tens of MB, so timing them through it would time the client.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from measure import child_pids

NODE_SERVER = (
    Path(__file__).resolve().parent
    / "data/node/node_modules/@modelcontextprotocol/server-memory/dist/index.js"
)
PROTOCOL_VERSION = "2025-06-18"


def memfts_command(db: Path) -> tuple[list[str], dict[str, str]]:
    # PYTHONPATH carries --rev's snapshot of src/ to the server
    keep = ("PATH", "HOME", "LANG", "TMPDIR", "PYTHONPATH")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["MEMORY_DB_PATH"] = str(db)
    return [sys.executable, "-m", "memfts"], env


def node_command(jsonl: Path) -> tuple[list[str], dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env["MEMORY_FILE_PATH"] = str(jsonl)
    return ["node", str(NODE_SERVER)], env


def node_available() -> bool:
    return NODE_SERVER.exists()


class RawPipeClient:
    """Spawn a stdio MCP server, handshake, and time ``tools/call`` round trips."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        start = time.perf_counter()
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        self._next_id = 0
        self.request(
            "initialize",
            {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "memfts-bench", "version": "0"},
            },
        )
        self._send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        self.startup_s = time.perf_counter() - start

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()

    def request(self, method: str, params: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """The result of one request and the size in bytes of its response line."""
        self._next_id += 1
        self._send({"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params})
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"server exited during {method}")
            message = json.loads(line)
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"], len(line)

    def call_tool(self, name: str, arguments: dict[str, Any]) -> tuple[dict[str, Any], int]:
        result, size = self.request("tools/call", {"name": name, "arguments": arguments})
        if result.get("isError"):
            raise RuntimeError(f"{name}: {result['content'][0]['text']}")
        return result, size

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait(5)

    def __enter__(self) -> RawPipeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def server_pid(marker: str) -> int:
    """The pid of this process's one child whose command line contains ``marker``."""
    for pid in child_pids():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmdline:
            return pid
    raise RuntimeError(f"no child process running {marker}")

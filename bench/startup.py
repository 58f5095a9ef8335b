"""Where memfts' start-up time goes: interpreter, imports, opening the store, handshake.

    python bench/startup.py              # ~30 s
    python bench/startup.py --rev HEAD

Prints the median of several spawns of each step (each a fresh process, as an MCP client
spawns the server), then ``python -X importtime`` of what ``memfts serve`` imports, grouped by
top-level package and the slowest single modules.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from collections import defaultdict

from corpus import DATA_DIR
from protocol import RawPipeClient, memfts_command, node_available, node_command
from revision import use_revision

SERVE_IMPORTS = "import memfts.cli, memfts.server, memfts.store"
STEPS = (
    ("python -c pass (interpreter alone)", [sys.executable, "-c", "pass"]),
    ("python -I -S -c pass (no site)", [sys.executable, "-I", "-S", "-c", "pass"]),
    ("import apsw", [sys.executable, "-c", "import apsw"]),
    ("import pydantic", [sys.executable, "-c", "import pydantic"]),
    ("import click", [sys.executable, "-c", "import click"]),
    ("import mcp.types", [sys.executable, "-c", "import mcp.types"]),
    ("import mcp.server.mcpserver", [sys.executable, "-c", "import mcp.server.mcpserver"]),
    ("import memfts.cli", [sys.executable, "-c", "import memfts.cli"]),
    ("import memfts.store", [sys.executable, "-c", "import memfts.store"]),
    ("all `memfts serve` imports", [sys.executable, "-c", SERVE_IMPORTS]),
    ("memfts --help", [sys.executable, "-m", "memfts", "--help"]),
)
_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def spawn_ms(command: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", help="measure this commit's src/ (default: the working tree)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"memfts code measured: {use_revision(args.rev)}")

    print(f"\nspawn -> exit, median of {args.runs}:")
    for label, command in STEPS:
        print(f"  {label:40} {spawn_ms(command, args.runs):7.0f} ms")
    if node_available():
        print(f"  {'node -e 0 (node alone)':40} {spawn_ms(['node', '-e', '0'], args.runs):7.0f} ms")

    print(f"\nspawn -> initialized (raw pipe), median of {args.runs}:")
    DATA_DIR.mkdir(exist_ok=True)
    servers = [("memfts, empty store", memfts_command(DATA_DIR / "empty.db"))]
    if node_available():
        (DATA_DIR / "empty.jsonl").unlink(missing_ok=True)
        servers.append(("official Node server", node_command(DATA_DIR / "empty.jsonl")))
    for label, command in servers:
        times = []
        for _ in range(args.runs):
            with RawPipeClient(*command) as client:
                times.append(client.startup_s)
        print(f"  {label:40} {statistics.median(times) * 1000:7.0f} ms")

    trace = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", SERVE_IMPORTS],
        check=True,
        capture_output=True,
        text=True,
    ).stderr
    by_package: dict[str, int] = defaultdict(int)
    modules: list[tuple[int, int, str]] = []
    for line in trace.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        own, cumulative, indent, name = int(match[1]), int(match[2]), match[3], match[4]
        modules.append((own, cumulative, name))
        by_package[name.split(".")[0]] += own
        del indent
    total = sum(own for own, _, _ in modules)
    print(f"\n-X importtime of `{SERVE_IMPORTS}`: {total / 1000:.0f} ms of imports")
    print("  own time by top-level package:")
    for package, own in sorted(by_package.items(), key=lambda kv: -kv[1])[:15]:
        print(f"    {package:28} {own / 1000:7.1f} ms  {100 * own / total:4.1f} %")
    print("  slowest modules (own time, cumulative):")
    for own, cumulative, name in sorted(modules, reverse=True)[:15]:
        print(f"    {name:50} {own / 1000:6.1f} ms  {cumulative / 1000:7.1f} ms")


if __name__ == "__main__":
    main()

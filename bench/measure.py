"""Timing and memory helpers shared by the bench scripts."""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from corpus import DATA_DIR, ensure_jsonl, read_jsonl
from memfts.database import migrations
from memfts.models import Entity, Relation
from memfts.store import Store


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sample."""
    ordered = sorted(values)
    index = max(0, math.ceil(p / 100 * len(ordered)) - 1)
    return ordered[index]


@dataclass(frozen=True)
class Summary:
    n: int
    p50_ms: float
    p95_ms: float
    max_ms: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Summary:
        ms = [s * 1000 for s in seconds]
        return cls(len(ms), percentile(ms, 50), percentile(ms, 95), max(ms))

    def __str__(self) -> str:
        return f"p50 {self.p50_ms:8.2f} ms  p95 {self.p95_ms:8.2f} ms  max {self.max_ms:8.2f} ms"


def time_calls(call: Callable[[str], object], queries: Sequence[str], rounds: int) -> list[float]:
    """Seconds per call: every query once as a warm-up, then ``rounds`` passes."""
    for q in queries:
        call(q)
    times: list[float] = []
    for _ in range(rounds):
        for q in queries:
            start = time.perf_counter()
            call(q)
            times.append(time.perf_counter() - start)
    return times


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (peak RSS) of a process, in KiB, from /proc."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def child_pids(parent: int | None = None) -> list[int]:
    """Direct children of ``parent`` (default: this process)."""
    parent = os.getpid() if parent is None else parent
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == parent:
                found.append(int(entry.name))
    return found


LOAD_VERSION = b"import_batch + merge_indexes, usermerge set by the upkeep"
"""How :func:`load_store` builds a graph: part of the cache key, so that a change to it
rebuilds the cached databases."""


def schema_tag() -> str:
    """A hash of the schema files of the memfts being measured and of :data:`LOAD_VERSION`: a
    cached database is reused only by code with the same schema (``--rebuild`` when the way
    rows are written changed)."""
    digest = hashlib.sha256(LOAD_VERSION)
    for version, path in migrations():
        digest.update(f"{version}:".encode() + path.read_bytes())
    return digest.hexdigest()[:8]


def db_path(entities: int, seed: int) -> Path:
    return DATA_DIR / f"memfts-{entities}-s{seed}-{schema_tag()}.db"


@dataclass(frozen=True)
class LoadReport:
    seconds: float
    observations: int
    entities: int
    relations: int

    @property
    def observations_per_s(self) -> float:
        return self.observations / self.seconds


def load_store(
    path: Path, records: tuple[list[dict[str, object]], list[dict[str, object]]], batch: int
) -> LoadReport:
    """Import the graph with ``Store.import_batch``, ``batch`` entities per transaction, then
    merge the full-text indexes, as ``memfts import`` does (``transfer.import_file``)."""
    entities, relations = records
    models = [
        Entity.model_construct(
            name=e["name"], entityType=e["entityType"], observations=e["observations"]
        )
        for e in entities
    ]
    rels = [
        Relation.model_construct(from_=r["from"], to=r["to"], relationType=r["relationType"])
        for r in relations
    ]
    store = Store(path)
    try:
        start = time.perf_counter()
        for i in range(0, len(models), batch):
            store.import_batch(models[i : i + batch], [])
        rel_batch = batch * 5
        for i in range(0, len(rels), rel_batch):
            store.import_batch([], rels[i : i + rel_batch])
        store.merge_indexes()
        seconds = time.perf_counter() - start
    finally:
        store.close()
    observations = sum(len(e.observations) for e in models)
    return LoadReport(seconds, observations, len(models), len(rels))


def ensure_db(entities: int, seed: int, batch: int = 1000) -> tuple[Path, LoadReport]:
    """The cached memfts database of this graph, built on first use, and how its load went."""
    path = db_path(entities, seed)
    load_file = path.with_suffix(".load.json")
    if path.exists() and load_file.exists():
        return path, LoadReport(**json.loads(load_file.read_text()))
    records = read_jsonl(ensure_jsonl(entities, seed))
    tmp = path.with_name(path.stem + ".building.db")
    for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        leftover.unlink(missing_ok=True)
    report = load_store(tmp, records, batch)
    tmp.rename(path)
    load_file.write_text(json.dumps(report.__dict__))
    return path, report

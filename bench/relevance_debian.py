"""Build the Debian fixture of the hand-written relevance sets from this machine's apt index.

    python bench/relevance_debian.py            # rewrite tests/data/relevance/debian.jsonl.gz
    python bench/relevance_debian.py --full     # only write bench/data/debian-full.jsonl.gz

Every package of ``apt-cache dumpavail`` becomes an entity: name = the package, type = its
section, one observation = its description (the index holds the one-line synopsis). The fixture
keeps every package that answers a needs query in ``tests/data/relevance/queries-*.jsonl``, then
fills up to 10,000 with the packages whose SHA-256 of the name comes first: a fixed sample that
does not depend on the index's order. Packages whose name equals an agent-memory entity's
(case-insensitive) are left out, so that no entity merges into another. The fixture is
committed: CI machines have another index or none. The full index (~63,000 packages) is kept in
``bench/data/`` for judging needs queries over everything the index has.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import relevance_sets  # noqa: E402

FULL_FILE = ROOT / "bench" / "data" / "debian-full.jsonl.gz"
SIZE = 10_000


def _records(text: str) -> Iterator[dict[str, str]]:
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line[:1].isspace():
                continue  # continuation lines (Tag:) are not needed
            key, sep, value = line.partition(":")
            if sep:
                fields[key] = value.strip()
        if "Package" in fields and "Description" in fields:
            yield fields


def read_index() -> list[dict[str, str]]:
    """Every package of the apt index as an entity in the official JSONL shape, by name."""
    text = subprocess.run(
        ["apt-cache", "dumpavail"], check=True, capture_output=True, text=True
    ).stdout
    packages = {
        r["Package"]: {
            "type": "entity",
            "name": r["Package"],
            "entityType": r.get("Section", "package"),
            "observations": [r["Description"]],
        }
        for r in _records(text)
    }
    return [packages[name] for name in sorted(packages)]


def write_jsonl_gz(path: Path, items: Iterable[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0 and no file name: the same packages give the same bytes
    with (
        open(path, "wb") as raw,
        gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=9, mtime=0) as f,
    ):
        for item in items:
            f.write((json.dumps(item, ensure_ascii=False) + "\n").encode())


def full_index() -> list[dict[str, str]]:
    if not FULL_FILE.exists():
        write_jsonl_gz(FULL_FILE, read_index())
    with gzip.open(FULL_FILE, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def needed_packages() -> set[str]:
    return {
        name
        for q in relevance_sets.queries()
        if q.kind == relevance_sets.NEEDS
        for name in q.grades
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="only cache the full index")
    args = parser.parse_args()
    packages = full_index()
    if args.full:
        print(f"{len(packages)} packages in {FULL_FILE}")
        return
    memory_names = {e.name.casefold() for e in relevance_sets.memory_graph()[0]}
    by_name = {p["name"]: p for p in packages if p["name"].casefold() not in memory_names}
    needed = needed_packages()
    missing = sorted(needed - set(by_name))
    if missing:
        sys.exit(f"needs answers not in this index: {missing}")
    rest = sorted(set(by_name) - needed, key=lambda n: hashlib.sha256(n.encode()).hexdigest())
    chosen = sorted(needed | set(rest[: SIZE - len(needed)]))
    write_jsonl_gz(relevance_sets.DEBIAN_FILE, (by_name[n] for n in chosen))
    print(f"{len(chosen)} packages ({len(needed)} needs answers) -> {relevance_sets.DEBIAN_FILE}")


if __name__ == "__main__":
    main()

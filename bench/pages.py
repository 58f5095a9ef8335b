"""read_graph on a large graph, as a client sees it: the first page, then the whole cursor walk.

    python bench/pages.py                       # 63,000 entities (the size of the Debian graph)
    python bench/pages.py --entities 10000 --budget 50000

Over MCP on stdio (raw pipe client, one spawned ``memfts``): the unbounded result's size (what
the official server would send), the first page's size and round trip, then every page
following ``nextCursor`` to the end, checked to hold exactly the graph ``Store.read_graph``
reads: the same entities and relations, each once, in order.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from corpus import SEED
from measure import ensure_db
from memfts.results import official_json
from memfts.store import Store
from protocol import RawPipeClient, memfts_command
from revision import use_revision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=63_000)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--budget", type=int, help="MEMFTS_MAX_RESULT_CHARS (default: memfts')")
    parser.add_argument("--rev", help="measure this commit's src/ (default: the working tree)")
    args = parser.parse_args()
    print(f"memfts code measured: {use_revision(args.rev)}", flush=True)
    path, report = ensure_db(args.entities, args.seed)
    print(
        f"{path.name}: {report.entities:,} entities, {report.observations:,} observations, "
        f"{report.relations:,} relations"
    )

    store = Store(path)
    try:
        start = time.perf_counter()
        whole = store.read_graph().model_dump(mode="json", by_alias=True)
        whole_text = official_json(whole)
        read_s = time.perf_counter() - start
    finally:
        store.close()
    print(
        f"unbounded read_graph text (the official result): {len(whole_text):,} characters "
        f"({len(whole_text.encode()) / 1e6:.1f} MB), read and written in-process in "
        f"{read_s * 1000:.0f} ms"
    )

    command, env = memfts_command(path)
    if args.budget is not None:
        env["MEMFTS_MAX_RESULT_CHARS"] = str(args.budget)
    entities: list[dict[str, object]] = []
    relations: list[dict[str, object]] = []
    sizes: list[int] = []
    times: list[float] = []
    with RawPipeClient(command, env) as client:
        cursor = None
        while True:
            arguments = {} if cursor is None else {"cursor": cursor}
            start = time.perf_counter()
            result, _ = client.call_tool("read_graph", arguments)
            times.append(time.perf_counter() - start)
            text = result["content"][0]["text"]
            sizes.append(len(text))
            page = result["structuredContent"]
            assert json.loads(text) == page
            if cursor is None:
                print(
                    f"first page: {len(text):,} characters, {len(page['entities'])} entities, "
                    f"{len(page['relations'])} relations, round trip {times[0] * 1000:.1f} ms\n"
                    f"  note: {page.get('note')}"
                )
            entities += page["entities"]
            relations += page["relations"]
            cursor = page.get("nextCursor")
            if cursor is None:
                break
    walk_s = sum(times)
    exact = entities == whole["entities"] and relations == whole["relations"]
    print(
        f"cursor walk: {len(sizes):,} pages, {len(entities):,} entities and "
        f"{len(relations):,} relations, {walk_s:.1f} s in all; page round trip median "
        f"{statistics.median(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms; largest "
        f"page {max(sizes):,} characters; the walk is exactly the graph: {exact}"
    )
    if not exact:
        raise SystemExit("the walk did not give exactly the graph")


if __name__ == "__main__":
    main()

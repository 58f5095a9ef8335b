"""Every search is bounded: inputs built to make a search slow or fail (issue 11) come back as a
normal result, in bounded time, and a search past its time limit is a normal result with what
was found and a note, never an error. The same inputs are timed at 100,000 entities by
``python bench/quick.py --adversarial``; the bounds here are generous (CI machines are slow).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import server_env
from mcp_session import Session, params_for, session
from memfts import ranking
from memfts.models import Entity, SearchResult
from memfts.store import Limits, Store

SLOW_S = 5.0
"""No adversarial search may take this long here (they take milliseconds on a quiet machine)."""

HEX = "0123456789abcdef"


def hex_word(rng: random.Random, length: int = 40) -> str:
    return "".join(rng.choice(HEX) for _ in range(length))


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2,000 entities with a word in every observation, and 20,000 commit hashes."""
    path = tmp_path_factory.mktemp("bounds") / "memory.db"
    rng = random.Random(11)
    store = Store(path)
    try:
        store.import_batch(
            [
                Entity(
                    name=f"service {i}",
                    entityType=f"t{i % 50}",
                    observations=[
                        f"everywhere deploy notes {i}",
                        f"commit {hex_word(rng)} everywhere",
                        "everywhere else too",
                    ],
                )
                for i in range(2_000)
            ]
            + [
                Entity(
                    name="history",
                    entityType="log",
                    observations=[" ".join(hex_word(rng) for _ in range(200)) for _ in range(90)],
                )
            ],
            [],
        )
    finally:
        store.close()
    return path


@pytest.fixture(scope="module")
def store(big: Path) -> Iterator[Store]:
    s = Store(big)
    yield s
    s.close()


def timed(store: Store, query: str, **options: object) -> tuple[SearchResult, float]:
    start = time.perf_counter()
    result = store.search_nodes(query, **options)  # type: ignore[arg-type]
    return result, time.perf_counter() - start


ADVERSARIAL: list[tuple[str, dict[str, object]]] = [
    ("deploy " + " ".join(f"-type:t{i}" for i in range(100)), {}),
    ("deploy " + " ".join(f"-type:t{i}" for i in range(600)), {}),
    (" ".join(f"type:x{i}" for i in range(1_000)), {}),
    ("everywhere", {"compact": True, "limit": 2_000}),
    ("everywhere", {"snippets": True, "depth": 2, "limit": 10_000}),
    ("everywhere else too deploy notes", {"snippets": True, "limit": 10_000}),
    (" ".join(hex_word(random.Random(i)) for i in range(16)), {}),
    (" ".join(hex_word(random.Random(i), 12) for i in range(16)), {"snippets": True}),
    ("e* " * 16, {"limit": 10_000}),
    ("ev OR er OR yw OR he OR re " * 4, {}),
    ('"everywhere else" -"else too" NOT everywhere', {}),
    ("a" * 40 + " " + "b" * 40, {}),
]


@pytest.mark.parametrize(("query", "options"), ADVERSARIAL, ids=lambda v: str(v)[:40])
def test_an_adversarial_search_is_a_normal_result_in_bounded_time(
    store: Store, query: str, options: dict[str, object]
) -> None:
    result, seconds = timed(store, query, **options)
    assert seconds < SLOW_S, f"{seconds:.1f} s"
    assert result.total >= len(result.entities) or result.totalIsLowerBound


def test_filters_count_toward_the_word_cap(store: Store) -> None:
    """100 -type: filters once took 7 s at 100,000 entities and 500 failed the SQL: the
    filters past the 16th are ignored, as words are."""
    result, _ = timed(store, "deploy " + " ".join(f"-type:t{i}" for i in range(100)), limit=2_000)
    # the first 15 filters leave their types out, the other 35 types are kept
    types = {hit.entityType for hit in result.entities}
    assert types == {f"t{i}" for i in range(15, 50)}


def test_a_search_past_its_time_limit_is_a_normal_result_with_a_note(big: Path) -> None:
    store = Store(big, Limits(search_timeout_s=1e-9))
    try:
        result = store.search_nodes("everywhere deploy", snippets=True, depth=1)
    finally:
        store.close()
    assert result.note is not None
    assert "MEMFTS_SEARCH_TIMEOUT_S" in result.note
    assert result.total >= len(result.entities)


@pytest.fixture(scope="module")
def hurried(big: Path) -> Iterator[Session]:
    """A real server whose searches may take a microsecond."""
    params = params_for(big)
    params.env = server_env(big, MEMFTS_SEARCH_TIMEOUT_S="0.000001")
    with session(params) as s:
        yield s


def test_over_mcp_a_search_past_its_time_limit_is_no_tool_error(hurried: Session) -> None:
    result = hurried.ok("search_nodes", {"query": "everywhere deploy notes", "snippets": True})
    structured = result.structured_content
    assert structured is not None
    assert "was cut short" in structured["note"]


def test_a_search_past_its_time_limit_finding_none_of_its_words_is_an_empty_result(
    big: Path,
) -> None:
    """Cut short, a search falls back on the latest rows of its rarest word: when no word is
    anywhere (typos, hashes) that is an empty result, not a statement with nothing to ask."""
    store = Store(big, Limits(search_timeout_s=1e-9))
    try:
        result = store.search_nodes("qqzzxx yyqqzz")
    finally:
        store.close()
    assert result.entities == [] and result.total == 0
    assert result.note is not None and "MEMFTS_SEARCH_TIMEOUT_S" in result.note


def test_the_time_limit_counts_the_search_s_cpu_time_not_the_clock(big: Path) -> None:
    """Waiting (for the CPU another process holds, for the disk) does not use up a search's
    time; working does. The clock stops it at WALL_FACTOR times the limit."""
    store = Store(big)
    try:
        with store._read() as db:
            deadline = ranking.Deadline(db, 0.2)
            time.sleep(0.3)  # the clock runs past the limit, the CPU time does not
            assert not deadline.passed
            start = time.thread_time()
            while time.thread_time() - start < 0.25:
                pass  # the search's own work uses it up
            assert deadline.passed
            deadline.extend(0.05)
            time.sleep(0.05 * ranking.WALL_FACTOR + 0.05)
            assert deadline.passed  # the backstop
    finally:
        store.close()


def test_time_spent_while_the_limit_is_paused_is_not_counted_after(big: Path) -> None:
    """Loading what every result must hold runs with the limit paused; the related entities
    looked up after it still have the time left (they were left out when a slow load had
    used it up)."""

    def work(seconds: float) -> None:
        start = time.thread_time()
        while time.thread_time() - start < seconds:
            pass

    store = Store(big)
    try:
        with store._read() as db:
            deadline = ranking.Deadline(db, 0.2)
            with deadline.paused():
                work(0.3)
                assert not deadline.passed
            assert not deadline.passed
            work(0.25)
            assert deadline.passed
    finally:
        store.close()

"""Semantic search, the optional extra: off and invisible without it; with it, every write
path commits an entity's vector with its text, other writers' changes are caught by the
schema's triggers and by `memfts embed`, and each process sees other processes' vectors.

Tests marked ``needs_extra`` run where ``memfts[semantic]`` is installed (CI runs the suite
in a second venv with it); they use a tiny model the tests build themselves, loaded through
the same path as any user-named model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import apsw
import pytest

from conftest import memfts_command, server_env
from memfts import semantic_setup
from memfts.curation import Curation
from memfts.errors import EntityNotFoundError
from memfts.models import Entity, ObservationAddition, ObservationDeletion, Relation
from memfts.semantic_setup import SemanticSetupError, installed, wanted
from memfts.store import Limits, Store

SQLITE3_SHELL = "/usr/bin/sqlite3"

needs_extra = pytest.mark.skipif(
    not installed("a user-named model"),
    reason="the semantic extra is not installed (CI runs these in its second venv)",
)
needs_wordllama = pytest.mark.skipif(
    not installed(), reason="the semantic extra is not installed (CI runs these in its second venv)"
)

CONCEPTS = {
    "database": ("database", "postgres", "postgresql", "sql", "db"),
    "holiday": ("vacation", "holiday", "leave", "time", "off"),
    "editor": ("editor", "neovim", "vim", "emacs"),
    "music": ("guitar", "piano", "song"),
}
"""The tiny model's world: words of one concept share a direction."""


def build_tiny_model(folder: Path) -> Path:
    """A static embedding model in model2vec's layout, as a user would name one."""
    import numpy as np
    from safetensors.numpy import save_file
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel

    words = [w for group in CONCEPTS.values() for w in group] + ["alice", "bob", "person"]
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    dims = 8
    rng = np.random.default_rng(7)
    vectors = np.zeros((len(vocab), dims), dtype=np.float32)
    for axis, group in enumerate(CONCEPTS.values()):
        for word in group:
            vectors[vocab[word], axis] = 1.0
            vectors[vocab[word]] += rng.normal(0, 0.05, dims).astype(np.float32)
    for axis, word in enumerate(("alice", "bob", "person"), start=len(CONCEPTS)):
        vectors[vocab[word], axis] = 1.0
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    save_file({"embeddings": vectors}, str(folder / "model.safetensors"))
    return folder


@pytest.fixture
def tiny_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = build_tiny_model(tmp_path / "tiny-model")
    monkeypatch.setenv(semantic_setup.MODEL_ENV, str(folder))
    monkeypatch.delenv(semantic_setup.SWITCH_ENV, raising=False)
    return folder


@pytest.fixture
def sem_store(db_path: Path, tiny_model: Path) -> Iterator[Store]:
    s = Store(db_path)
    assert s._semantic is not None
    yield s
    s.close()


def vectors(path: Path) -> dict[str, tuple[str, bytes]]:
    """Entity name -> (model name, stored vector), read with a plain connection."""
    conn = apsw.Connection(str(path))
    try:
        return {
            name: (model, blob)
            for name, model, blob in conn.execute(
                "SELECT e.name, m.name, v.vector FROM entity_vectors v "
                "JOIN entities e ON e.id = v.entity_id JOIN embedding_models m ON m.id = v.model_id"
            )
        }
    finally:
        conn.close()


def nearest(store: Store, query: str, k: int = 3) -> list[str]:
    assert store._semantic is not None
    with store._read() as db:
        found = store._semantic.nearest(db, query, k)
        names = dict(db.execute("SELECT id, name FROM entities").fetchall())
    return [names[n.entity_id] for n in found]


GRAPH = [
    Entity(name="Alice", entityType="person", observations=["plays guitar", "uses neovim"]),
    Entity(name="pg-main", entityType="service", observations=["PostgreSQL cluster"]),
    Entity(name="policy", entityType="document", observations=["holiday rules"]),
]


# ---- without the extra, or switched off: nothing changes ------------------------------------


def test_the_switch_and_the_model_variable_are_read_strictly(tmp_path: Path) -> None:
    assert wanted({"MEMFTS_SEMANTIC": "off"}) is None
    assert wanted({"MEMFTS_SEMANTIC": "0", "MEMFTS_EMBEDDING_MODEL": "/nowhere"}) is None
    with pytest.raises(SemanticSetupError, match="MEMFTS_SEMANTIC='maybe': say on or off"):
        wanted({"MEMFTS_SEMANTIC": "maybe"})
    with pytest.raises(SemanticSetupError, match="is not a folder"):
        wanted({"MEMFTS_EMBEDDING_MODEL": str(tmp_path / "missing")})
    if installed():
        assert wanted({}) == "wordllama"
    else:
        assert wanted({}) is None
        with pytest.raises(SemanticSetupError, match=r"pip install 'memfts\[semantic\]'"):
            wanted({"MEMFTS_SEMANTIC": "on"})


OFF_CASES = [{"MEMFTS_SEMANTIC": "off"}] + ([] if installed() else [{}])


@pytest.mark.parametrize("env", OFF_CASES, ids=lambda e: " ".join(e) or "not installed")
def test_a_store_without_semantic_search_never_imports_numpy(
    db_path: Path, env: dict[str, str]
) -> None:
    """The default install (or MEMFTS_SEMANTIC=off) pays nothing: not even the import."""
    script = textwrap.dedent(
        f"""
        import sys
        from memfts.models import Entity, ObservationAddition
        from memfts.store import Store
        s = Store({str(db_path)!r})
        s.create_entities([Entity(name="a", entityType="t", observations=["x y"])])
        s.add_observations([ObservationAddition(entityName="a", contents=["z"])])
        hits = s.search_nodes("x")
        s.close()
        print(len(hits.entities), "numpy" in sys.modules, hits.entities[0].foundBy)
        """
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith("MEMFTS_")}
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.split() == ["1", "False", "None"], done.stderr
    assert vectors(db_path) == {}


def fake_vectors(path: Path) -> None:
    """A vector for every entity, as a memfts with the extra would have left them."""
    conn = apsw.Connection(str(path))
    with conn:
        conn.execute("INSERT INTO embedding_models(name, dims) VALUES ('fake', 2)")
        conn.execute(
            "INSERT INTO entity_vectors(entity_id, model_id, vector) "
            "SELECT id, 1, x'7f00' FROM entities"
        )
    conn.close()


def test_the_triggers_drop_a_vector_when_its_entity_text_changes(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whoever changes an entity's text, its vector goes: none describes text that is gone."""
    monkeypatch.setenv("MEMFTS_SEMANTIC", "off")
    names = ["keep", "added", "deleted-obs", "renamed", "retyped", "gone", "related"]
    with_store(
        db_path,
        lambda s: s.create_entities(
            [Entity(name=n, entityType="thing", observations=[f"{n} text"]) for n in names]
        ),
    )
    fake_vectors(db_path)

    def change(s: Store) -> None:
        s.add_observations([ObservationAddition(entityName="added", contents=["more"])])
        s.delete_observations(
            [ObservationDeletion(entityName="deleted-obs", observations=["deleted-obs text"])]
        )
        s.delete_entities(["gone"])
        s.create_relations([Relation(from_="related", to="keep", relationType="knows")])
        s.add_observations([ObservationAddition(entityName="keep", contents=["keep text"])])

    with_store(db_path, change)
    conn = apsw.Connection(str(db_path))
    with conn:
        conn.execute("UPDATE entities SET name = 'renamed2' WHERE name = 'renamed'")
        conn.execute("UPDATE entities SET entity_type = 'other' WHERE name = 'retyped'")
    conn.close()
    # an unchanged entity (a duplicate observation adds nothing) and a relation keep theirs
    assert sorted(vectors(db_path)) == ["keep", "related"]


def test_the_stock_sqlite3_shell_drops_the_vectors_of_what_it_changes(db_path: Path) -> None:
    with_store(
        db_path,
        lambda s: s.create_entities(
            [Entity(name=n, entityType="thing", observations=[f"{n} text"]) for n in "abc"]
        ),
        semantic="off",
    )
    fake_vectors(db_path)
    done = subprocess.run(
        [SQLITE3_SHELL, "-bail", "-batch", str(db_path)],
        input="UPDATE observations SET content = 'new' WHERE content = 'a text';\n"
        "DELETE FROM entities WHERE name = 'b';\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0 and not done.stderr, done.stderr
    assert sorted(vectors(db_path)) == ["c"]


def test_memfts_embed_without_the_extra_says_how_to_get_it(db_path: Path) -> None:
    done = subprocess.run(
        [*memfts_command(), "embed", "--db", str(db_path)],
        env=server_env(db_path, MEMFTS_SEMANTIC="off"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "Error: semantic search is off in this process (MEMFTS_SEMANTIC=off, or the extra "
        "is not installed: pip install 'memfts[semantic]')"
    )


def with_store(path: Path, action: Callable[[Store], object], semantic: str | None = None) -> None:
    old = os.environ.get("MEMFTS_SEMANTIC")
    if semantic is not None:
        os.environ["MEMFTS_SEMANTIC"] = semantic
    try:
        s = Store(path)
        try:
            action(s)
        finally:
            s.close()
    finally:
        if semantic is not None:
            if old is None:
                del os.environ["MEMFTS_SEMANTIC"]
            else:
                os.environ["MEMFTS_SEMANTIC"] = old


# ---- with the extra ---------------------------------------------------------------------------


def entity_texts(store: Store) -> dict[str, list[str]]:
    return {e.name: [e.name, e.entityType, *e.observations] for e in store.read_graph().entities}


def assert_vectors_current(store: Store, path: Path) -> None:
    """Every entity's stored vector is its text's vector under the store's model."""
    from memfts.semantic import quantize

    assert store._semantic is not None
    model = store._semantic.model
    texts = entity_texts(store)
    expected = dict(zip(texts, quantize(model.embed(list(texts.values()))), strict=True))
    assert vectors(path) == {name: (model.name, blob) for name, blob in expected.items()}


@needs_extra
def test_the_index_keeps_the_sign_bits_of_the_latest_vector_of_each_entity() -> None:
    """Rows arrive in any order (new ids, backfilled low ids, replacements); the coarse
    search returns exactly the entities nearest by Hamming distance, never forgotten ones."""
    import numpy as np

    from memfts.semantic import VectorIndex, quantize

    rng = np.random.default_rng(3)
    dims = 70  # not a multiple of 64: the last word is padded
    index = VectorIndex(dims)
    truth: dict[int, np.ndarray] = {}

    def add(ids: list[int]) -> None:
        vectors = rng.normal(size=(len(ids), dims)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        truth.update(zip(ids, vectors, strict=True))
        order = np.argsort(ids)
        codes = index.sign_bits(quantize(vectors))
        index._merge(np.asarray(ids, dtype=np.int64)[order], codes[:, order])

    add(list(range(100, 2100)))  # appended
    add(list(range(1, 50)))  # below the highest id: merged in order
    add([5, 150, 2000])  # replaced
    add(list(range(3000, 3100)))
    index.forget([7, 8, 3050, 99999])
    live = sorted(set(truth) - {7, 8, 3050})
    assert list(index.ids[: index.count]) == sorted(truth)
    query = rng.normal(size=dims).astype(np.float32)

    def bits(v: np.ndarray) -> np.ndarray:
        return np.rint(v * 127) > 0  # the sign of the stored (quantized) vector

    distance = {i: int((bits(truth[i]) != bits(query)).sum()) for i in live}
    found = index.nearest(query, 40)
    assert len(found) == 40 and not {7, 8, 3050} & set(found)
    worst = max(distance[i] for i in found)
    assert all(distance[i] >= worst for i in live if i not in found)
    assert sorted(index.nearest(query, 10_000)) == live


@needs_extra
def test_a_user_named_model_is_loaded_from_its_folder(sem_store: Store, tiny_model: Path) -> None:
    assert sem_store._semantic is not None
    assert sem_store._semantic.model.name.startswith("tiny-model@")
    assert sem_store._semantic.model.dims == 8
    sem_store.create_entities(GRAPH)
    assert nearest(sem_store, "database", 1) == ["pg-main"]
    assert nearest(sem_store, "time off", 1) == ["policy"]
    assert nearest(sem_store, "emacs", 1) == ["Alice"]
    assert nearest(sem_store, "-type:person OR", 1) == []  # only syntax: nothing to embed


@needs_extra
def test_every_write_path_commits_the_vector_with_the_text(sem_store: Store, db_path: Path) -> None:
    sem_store.create_entities(GRAPH)
    assert_vectors_current(sem_store, db_path)
    before = vectors(db_path)
    sem_store.add_observations([ObservationAddition(entityName="policy", contents=["vacation"])])
    assert_vectors_current(sem_store, db_path)
    assert vectors(db_path)["policy"] != before["policy"]
    assert vectors(db_path)["Alice"] == before["Alice"]
    sem_store.delete_observations(
        [ObservationDeletion(entityName="Alice", observations=["plays guitar"])]
    )
    assert_vectors_current(sem_store, db_path)
    sem_store.import_batch(
        [
            Entity(name="pg-main", entityType="service", observations=["sql db"]),
            Entity(name="Bob", entityType="person", observations=["piano"]),
        ],
        [],
    )
    assert_vectors_current(sem_store, db_path)
    assert nearest(sem_store, "piano", 1) == ["Bob"]
    followed = Entity(name="Carol", entityType="person", observations=["emacs"])
    sem_store.merge_followed(db_path.with_name("memory.jsonl"), 1, 1, [(b"line", followed)])
    assert_vectors_current(sem_store, db_path)
    assert nearest(sem_store, "vim", 1) == ["Carol"]
    sem_store.delete_entities(["Bob"])
    assert_vectors_current(sem_store, db_path)
    assert "Bob" not in nearest(sem_store, "piano", 5)


@needs_extra
def test_every_curation_commits_the_vector_with_the_text(sem_store: Store, db_path: Path) -> None:
    sem_store.create_entities([*GRAPH, Entity(name="pg-copy", entityType="x", observations=[])])
    curation = Curation(sem_store)
    curation.rename_entity("Alice", "Alicia")
    assert_vectors_current(sem_store, db_path)
    curation.set_entity_type("Alicia", "musician")
    assert_vectors_current(sem_store, db_path)
    curation.edit_observation("Alicia", "uses neovim", "plays piano")
    assert_vectors_current(sem_store, db_path)
    assert nearest(sem_store, "editor", 3)[0] != "Alicia"
    curation.delete_observation("policy", "holiday rules")
    assert_vectors_current(sem_store, db_path)
    sem_store.add_observations([ObservationAddition(entityName="pg-copy", contents=["vacation"])])
    curation.merge_entities("pg-copy", "pg-main")
    assert_vectors_current(sem_store, db_path)
    assert nearest(sem_store, "holiday", 1) == ["pg-main"]
    curation.delete_entity("policy")
    assert_vectors_current(sem_store, db_path)


@needs_extra
def test_a_failed_write_leaves_every_vector_as_it_was(sem_store: Store, db_path: Path) -> None:
    sem_store.create_entities(GRAPH)
    before = vectors(db_path)
    with pytest.raises(EntityNotFoundError):
        sem_store.add_observations(
            [
                ObservationAddition(entityName="Alice", contents=["vacation"]),
                ObservationAddition(entityName="Nobody", contents=["x"]),
            ]
        )
    assert vectors(db_path) == before
    assert_vectors_current(sem_store, db_path)


def run_python(script: str, **env: str) -> str:
    """Run a script in another process (another connection, another index)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MEMFTS_")}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@needs_extra
def test_memfts_embed_fills_in_what_other_writers_left_and_resumes(
    db_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from memfts import semantic

    names = [f"db{i}" for i in range(5)]
    run_python(  # a memfts without the extra writes
        f"""
        from memfts.models import Entity
        from memfts.store import Store
        s = Store({str(db_path)!r})
        s.create_entities([Entity(name=n, entityType="t", observations=["postgres"])
                           for n in {names!r}])
        s.close()
        """,
        MEMFTS_SEMANTIC="off",
    )
    assert vectors(db_path) == {}
    monkeypatch.setattr(semantic, "BATCH", 2)
    store = Store(db_path)
    try:
        assert store.vectors_missing() == 5
        assert nearest(store, "database") == []

        def interrupted(n: int) -> None:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            store.embed_missing(interrupted)
        assert sorted(vectors(db_path)) == ["db0", "db1"]  # the first batch stayed committed
        assert store.vectors_missing() == 3
        seen: list[int] = []
        counts = store.embed_missing(seen.append)
        assert (counts.embedded, counts.entities, seen) == (3, 5, [2, 1])
        assert store.vectors_missing() == 0
        assert_vectors_current(store, db_path)
        assert sorted(nearest(store, "sql", 5)) == names
    finally:
        store.close()


@needs_extra
def test_the_embed_command_reports_what_it_did(db_path: Path, tiny_model: Path) -> None:
    with_store(
        db_path,
        lambda s: s.create_entities(GRAPH),
        semantic="off",
    )
    command = [*memfts_command(), "embed", "--db", str(db_path)]
    env = server_env(db_path, MEMFTS_EMBEDDING_MODEL=str(tiny_model))
    done = subprocess.run([*command, "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout)
    assert counts["embedded"] == 3 and counts["entities"] == 3
    assert counts["model"].startswith("tiny-model@")
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("0 entities embedded with tiny-model@")


@needs_extra
def test_a_read_from_an_older_snapshot_does_not_hide_newer_vectors(
    sem_store: Store, db_path: Path
) -> None:
    """Threads read from snapshots of different ages: an entity whose vector the index holds
    but an older snapshot lacks is skipped there, not forgotten by the process."""
    assert sem_store._semantic is not None
    sem_store.create_entities(GRAPH)
    older = apsw.Connection(str(db_path))
    try:
        older.execute("BEGIN")
        assert older.execute("SELECT count(*) FROM entity_vectors").get == 3  # snapshot starts
        sem_store.create_entities([Entity(name="Bob", entityType="person", observations=["piano"])])
        assert nearest(sem_store, "piano", 1) == ["Bob"]  # the index has read Bob's vector
        found = [n.entity_id for n in sem_store._semantic.nearest(older, "piano", 5)]
        assert len(found) == 3  # Bob is not in that snapshot
        older.execute("COMMIT")
    finally:
        older.close()
    assert nearest(sem_store, "piano", 1) == ["Bob"]


@needs_extra
def test_each_process_sees_the_vectors_other_processes_write(
    sem_store: Store, db_path: Path, tiny_model: Path
) -> None:
    sem_store.create_entities(GRAPH)
    assert nearest(sem_store, "database", 5)[0] == "pg-main"  # the index is loaded now
    run_python(
        f"""
        from memfts.models import Entity
        from memfts.store import Store
        s = Store({str(db_path)!r})
        s.create_entities([Entity(name="replica", entityType="service",
                                  observations=["postgres sql db"])])
        s.delete_entities(["pg-main"])
        s.close()
        """,
        MEMFTS_EMBEDDING_MODEL=str(tiny_model),
    )
    assert nearest(sem_store, "database", 5)[0] == "replica"
    assert "pg-main" not in nearest(sem_store, "database", 5)
    run_python(  # a writer without the extra: the vector it made stale is not used
        f"""
        from memfts.models import ObservationAddition
        from memfts.store import Store
        s = Store({str(db_path)!r})
        s.add_observations([ObservationAddition(entityName="replica", contents=["guitar"])])
        s.close()
        """,
        MEMFTS_SEMANTIC="off",
    )
    assert "replica" not in nearest(sem_store, "database", 5)
    assert sem_store.vectors_missing() == 1


@needs_extra
def test_vectors_of_another_model_are_never_compared(
    db_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with_store(db_path, lambda s: s.create_entities(GRAPH))
    import numpy as np
    from safetensors.numpy import load_file, save_file

    other = tmp_path / "other-model"
    other.mkdir()
    (other / "tokenizer.json").write_bytes((tiny_model / "tokenizer.json").read_bytes())
    weights = load_file(str(tiny_model / "model.safetensors"))["embeddings"]
    save_file(
        {"embeddings": np.ascontiguousarray(weights[:, ::-1])}, str(other / "model.safetensors")
    )
    monkeypatch.setenv(semantic_setup.MODEL_ENV, str(other))
    store = Store(db_path)
    try:
        assert store.vectors_missing() == 3
        assert nearest(store, "database") == []
        assert store.embed_missing().embedded == 3
        assert {m for m, _ in vectors(db_path).values()} == {store._semantic.model.name}  # type: ignore[union-attr]
        assert nearest(store, "database", 1) == ["pg-main"]
    finally:
        store.close()


@needs_wordllama
def test_the_built_in_model_ships_in_the_wheel_and_knows_what_words_mean(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(semantic_setup.MODEL_ENV, raising=False)
    monkeypatch.delenv(semantic_setup.SWITCH_ENV, raising=False)
    store = Store(db_path)
    try:
        assert store._semantic is not None
        assert store._semantic.model.name == "wordllama/l2_supercat_256"
        store.create_entities(
            [
                Entity(
                    name="pg-main", entityType="service", observations=["PostgreSQL 16 cluster"]
                ),
                Entity(name="leave", entityType="policy", observations=["25 days of vacation"]),
                Entity(name="Alice", entityType="person", observations=["plays the guitar"]),
            ]
        )
        assert nearest(store, "database server", 1) == ["pg-main"]
        assert nearest(store, "time off", 1) == ["leave"]
        assert nearest(store, "music instrument", 1) == ["Alice"]
    finally:
        store.close()


# ---- search: the full-text ranking fused with the nearest by meaning --------------------------


@needs_extra
@pytest.mark.parametrize(
    ("lexical", "complete", "meaning", "page", "found_by"),
    [
        pytest.param(
            [1, 2, 3], 2, [(9, 0.9), (3, 0.8), (2, 0.7)], [1, 2, 3, 9],
            {1: "l", 2: "ls", 3: "ls", 9: "s"},
            id="entities-with-every-word-keep-their-places",
        ),
        pytest.param(
            [1, 2], 0, [(2, 0.9), (5, 0.6)], [2, 1, 5], {1: "l", 2: "ls", 5: "s"},
            id="found-by-both-goes-up",
        ),
        pytest.param(
            [1, 2], 0, [(5, 0.6), (6, 0.5)], [1, 5, 2, 6], {1: "l", 2: "l", 5: "s", 6: "s"},
            id="same-rank-in-each-ties-to-full-text",
        ),
        pytest.param(
            [1], 0, [(1, 0.1), (7, 0.29)], [1], {1: "ls"},
            id="too-far-in-meaning-alone-is-not-offered",
        ),
        pytest.param(
            [], 0, [(7, 0.5), (8, 0.4)], [7], {7: "s"}, id="nothing-by-words-page-cut"
        ),
    ],
)  # fmt: skip
def test_fusion_keeps_every_word_first_and_fuses_the_rest_by_rank(
    lexical: list[int],
    complete: int,
    meaning: list[tuple[int, float]],
    page: list[int],
    found_by: dict[int, str],
) -> None:
    from memfts.semantic import Neighbour, fuse

    limit = 1 if not lexical else 10
    got, arms = fuse(lexical, complete, [Neighbour(i, s) for i, s in meaning], limit)
    assert got == page
    names = {"lexical": "l", "semantic": "s"}
    assert {i: "".join(names[a] for a in found) for i, found in arms.items()} == found_by


SEARCHED = [
    Entity(name="pg-main", entityType="service", observations=["PostgreSQL cluster", "alice"]),
    Entity(name="schema notes", entityType="document", observations=["the database schema"]),
    Entity(name="policy", entityType="document", observations=["holiday rules"]),
    Entity(name="Bob", entityType="person", observations=["plays piano"]),
]


@needs_extra
def test_search_fuses_words_and_meaning_and_says_what_found_each(sem_store: Store) -> None:
    sem_store.create_entities(SEARCHED)
    result = sem_store.search_nodes("database")
    found = {hit.name: hit.foundBy for hit in result.entities}
    # "schema notes" has the word; pg-main only the meaning (PostgreSQL); the rest neither
    assert found == {"schema notes": ["lexical", "semantic"], "pg-main": ["semantic"]}
    assert [hit.name for hit in result.entities] == ["schema notes", "pg-main"]
    assert result.total == 2  # one full-text match, one found by meaning only
    assert result.withEveryWord == 1  # the first one holds the word, as without the extra
    # the query's filters hold for both arms
    assert [h.name for h in sem_store.search_nodes("database type:service").entities] == ["pg-main"]
    assert [h.name for h in sem_store.search_nodes("database -type:service").entities] == [
        "schema notes"
    ]
    assert [h.name for h in sem_store.search_nodes("database -postgresql").entities] == [
        "schema notes"
    ]
    # nothing close in meaning and no word matches: nothing, as without the extra
    nothing = sem_store.search_nodes("xyzzy")
    assert (nothing.entities, nothing.total) == ([], 0)
    # an empty query still lists the latest changes, untouched by the arm
    assert [h.foundBy for h in sem_store.search_nodes("").entities] == [None] * 4


@needs_extra
@pytest.mark.parametrize("query", ['"the database"', "datab*", "name:schema", '"database" schema'])
def test_a_query_asking_for_exact_words_gets_only_those(sem_store: Store, query: str) -> None:
    sem_store.create_entities(SEARCHED)
    result = sem_store.search_nodes(query)
    assert [(h.name, h.foundBy) for h in result.entities] == [("schema notes", ["lexical"])]
    assert result.total == 1


@needs_extra
def test_an_entity_with_every_word_stays_first_however_close_others_are_in_meaning(
    sem_store: Store,
) -> None:
    sem_store.create_entities(
        [
            Entity(name="pg", entityType="service", observations=["postgres sql"]),
            Entity(name="notes", entityType="x", observations=["database song vim emacs editor"]),
        ]
    )
    # pg is the closer in meaning (all database), notes holds every word
    assert nearest(sem_store, "database song", 2) == ["pg", "notes"]
    result = sem_store.search_nodes("database song")
    assert [(h.name, h.foundBy) for h in result.entities] == [
        ("notes", ["lexical", "semantic"]),
        ("pg", ["semantic"]),
    ]
    assert result.withEveryWord == 1  # still true: the first one holds every word


@needs_extra
def test_an_entity_found_by_meaning_alone_gets_its_closest_observations_as_snippets(
    sem_store: Store,
) -> None:
    sem_store.create_entities(SEARCHED)
    hits = {h.name: h for h in sem_store.search_nodes("db", snippets=True).entities}
    assert hits["pg-main"].foundBy == ["semantic"]
    assert hits["pg-main"].snippets == ["PostgreSQL cluster", "alice"]
    compact = {h.name: h for h in sem_store.search_nodes("leave", compact=True).entities}
    assert compact["policy"].foundBy == ["semantic"]
    assert compact["policy"].snippets == ["holiday rules"]
    assert compact["policy"].observations is None


@needs_extra
def test_pages_of_a_search_say_what_found_each_hit_as_the_whole_result_does(
    sem_store: Store,
) -> None:
    """A result cut into pages (one hit a page here) loads each page's hits on its own, from
    its offset: they say what found them and carry the snippets by meaning as the whole
    result does; a related entity, found by neither, says nothing."""
    from memfts.results import search_page

    sem_store.create_entities(SEARCHED)
    sem_store.create_relations([Relation(from_="Bob", to="pg-main", relationType="runs")])
    options = {"snippets": True, "depth": 1}
    whole = sem_store.search_nodes("database", **options)
    hits = [(h.name, h.foundBy, h.snippets) for h in whole.entities]
    assert hits[:2] == [
        ("schema notes", ["lexical", "semantic"], ["the **database** schema"]),
        ("pg-main", ["semantic"], ["PostgreSQL cluster", "alice"]),
    ]
    assert [(name, found) for name, found, _ in hits[2:]] == [("Bob", None)]
    paged: list[tuple[str, object, object]] = []
    while True:
        offset = len(paged)
        with sem_store.walk_search("database", start=offset, **options) as walk:
            page = search_page(walk, offset, {"query": "database", **options}, 1)
        assert len(page.entities) == 1
        paged += [(h.name, h.foundBy, h.snippets) for h in page.entities]
        if page.nextCursor is None:
            break
    assert paged == hits


@needs_extra
def test_reading_the_stored_vectors_is_not_counted_against_the_time_limit(
    db_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process's first search by meaning reads every stored vector (~0.4 s of CPU at 100k):
    before the search's time limit (CPU time) starts. Here that reading takes 0.5 s of CPU,
    the limit is 0.2 s, and a search ranking 2,000 matches is still ranked, not cut short."""
    from memfts.semantic import Semantic

    entities = [
        Entity(name=f"db {i}", entityType="service", observations=[f"database number {i}"])
        for i in range(2_000)
    ]
    with_store(db_path, lambda s: s.import_batch(entities, []))
    catch_up = Semantic.catch_up

    def slow_catch_up(self: Semantic, db: apsw.Connection) -> None:
        busy = time.thread_time() + 0.5
        while time.thread_time() < busy:
            pass
        catch_up(self, db)

    monkeypatch.setattr(Semantic, "catch_up", slow_catch_up)
    store = Store(db_path, limits=Limits(search_timeout_s=0.2))
    try:
        result = store.search_nodes("database")
    finally:
        store.close()
    assert result.note is None
    assert len(result.entities) == 20
    assert all(h.foundBy and "lexical" in h.foundBy for h in result.entities)


@needs_extra
def test_semantic_false_searches_by_words_alone(db_path: Path, tiny_model: Path) -> None:
    store = Store(db_path, semantic=False)
    try:
        store.create_entities(SEARCHED)
        result = store.search_nodes("database")
        assert [(h.name, h.foundBy) for h in result.entities] == [("schema notes", None)]
    finally:
        store.close()


@needs_extra
def test_the_server_reports_what_found_each_hit(db_path: Path, tiny_model: Path) -> None:
    """Through a real stdio server with the extra: foundBy is part of the tool's result."""
    from mcp import StdioServerParameters

    from mcp_session import session

    with_store(db_path, lambda s: s.create_entities(SEARCHED))
    command = memfts_command()
    params = StdioServerParameters(
        command=command[0],
        args=command[1:],
        env=server_env(db_path, MEMFTS_EMBEDDING_MODEL=str(tiny_model)),
    )
    with session(params) as server:
        structured = server.ok("search_nodes", {"query": "database"}).structured_content
        tools = {t.name: t for t in server.run(server.client.list_tools).tools}
    assert structured is not None
    hits = {h["name"]: h.get("foundBy") for h in structured["entities"]}
    assert hits == {"schema notes": ["lexical", "semantic"], "pg-main": ["semantic"]}
    # the tool says so, so that a model knows what foundBy means
    assert "Search by meaning is on" in (tools["search_nodes"].description or "")
    params.env = {**(params.env or {}), "MEMFTS_SEMANTIC": "off"}
    with session(params) as server:
        structured = server.ok("search_nodes", {"query": "database"}).structured_content
        tools = {t.name: t for t in server.run(server.client.list_tools).tools}
    assert structured is not None
    assert [h["name"] for h in structured["entities"]] == ["schema notes"]
    assert "foundBy" not in structured["entities"][0]
    assert "meaning" not in (tools["search_nodes"].description or "")

"""Search by meaning: a static embedding model, one vector per entity, nearest neighbours.

Only imported when the ``semantic`` extra is installed (see :mod:`memfts.semantic_setup`).

- **The model** (:class:`StaticModel`): a tokenizer and one vector per token; a text's vector
  is the mean of its tokens' vectors. That costs microseconds, so an entity's vector is
  written in the same transaction as its text. The built-in model is WordLlama's
  ``l2_supercat_256``, whose weights ship inside the ``wordllama`` wheel (nothing is
  downloaded); any model in model2vec's folder layout can be named instead.
- **The vectors** (``entity_vectors``, sql/006): one per entity over its name, type and
  observations, as signed bytes. Triggers delete a vector whenever its entity's text changes;
  every write path of the store re-embeds the entities it touched (:meth:`Semantic.embed`),
  and ``memfts embed`` fills in the rest (:meth:`Semantic.backfill`).
- **The index** (:class:`VectorIndex`): each process keeps the sign bits of every vector in
  memory (32 bytes an entity), finds the nearest :data:`CANDIDATES` entities by Hamming
  distance, then scores those with their full vectors, read from the file.
  Rows written since the last search are read by ``seq``; a row whose entity changed or went
  away since is found when its full vector is read, so results never use stale vectors.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import TypeAlias

import apsw
import numpy as np
import numpy.typing as npt
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from memfts import ranking, search, vocabulary
from memfts.semantic_setup import DEFAULT_MODEL, INSTALL_HINT, FoundBy, SemanticSetupError

Vectors: TypeAlias = npt.NDArray[np.float32]

WORDLLAMA_FILES = (
    "weights/l2_supercat_256.safetensors",
    "tokenizers/l2_supercat_tokenizer_config.json",
)
"""The built-in model's files inside the installed ``wordllama`` package."""

CANDIDATES = 256
"""Entities the coarse pass (sign bits in memory) hands to the exact one (full stored vectors)."""

FUSION_DEPTH = 30
"""Entities each ranking (full text, meaning) contributes to the fusion, at least."""

RRF_K = 10
"""Reciprocal-rank fusion: an entity scores 1 / (RRF_K + rank) in each ranking that found it."""

MIN_SIMILARITY = 0.3
"""Cosine below which an entity is not offered on its meaning alone: with the built-in model
a query about nothing in the memory scores about 0.15-0.35 against everything."""

SNIPPET_CHARS = 160
"""Longest observation shown whole as a snippet of an entity found by meaning alone."""

BATCH = 500
"""Entities embedded per transaction by :meth:`Semantic.backfill`."""

REFRESH_BATCH = 4096
"""Stored vectors read at a time into the index (1 MB of rows at 256 dimensions): the whole
file at once would leave its size in the process's memory after the first search."""


# ---- the model -------------------------------------------------------------------------------


class StaticModel:
    """A static embedding model: token vectors, mean-pooled, unit length.

    The one interface semantic search needs from a model: :attr:`name` (stored with every
    vector, so vectors of different models are never compared), :attr:`dims` and
    :meth:`embed`.
    """

    def __init__(
        self,
        name: str,
        tokenizer: Tokenizer,
        vectors: npt.NDArray[np.floating],
        weights: npt.NDArray[np.floating] | None = None,
    ) -> None:
        if vectors.ndim != 2 or vectors.shape[0] == 0:
            raise SemanticSetupError(f"model {name}: the token vectors must be a 2-D table")
        self.name = name
        self.dims = int(vectors.shape[1])
        self._tokenizer = tokenizer
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self._vectors = vectors
        self._weights = None if weights is None else weights.astype(np.float32)

    def embed(self, groups: Sequence[Sequence[str]]) -> Vectors:
        """One unit vector per group of texts (all of a group's tokens pooled together).

        A group without a single token gets the zero vector.
        """
        texts = [text for group in groups for text in group]
        encodings = self._tokenizer.encode_batch(texts, add_special_tokens=False) if texts else []
        out = np.zeros((len(groups), self.dims), dtype=np.float32)
        position = 0
        for row, group in enumerate(groups):
            ids = [i for e in encodings[position : position + len(group)] for i in e.ids]
            position += len(group)
            if not ids:
                continue
            index = np.minimum(np.asarray(ids, dtype=np.int64), self._vectors.shape[0] - 1)
            tokens = self._vectors[index].astype(np.float32)
            if self._weights is not None:
                tokens *= self._weights[index, None]
            out[row] = tokens.sum(axis=0)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out


def load_model(spec: str) -> StaticModel:
    """The built-in model (``wordllama``) or a model2vec-layout folder at the path ``spec``."""
    if spec == DEFAULT_MODEL:
        return _wordllama()
    return _model2vec_folder(Path(spec).expanduser())


def _wordllama() -> StaticModel:
    # Found, not imported: the package's own import configures logging and pulls in requests.
    found = find_spec("wordllama")
    locations = list(found.submodule_search_locations or []) if found else []
    if not locations:
        raise SemanticSetupError(f"the wordllama package is not installed: {INSTALL_HINT}")
    root = Path(locations[0])
    weights, tokenizer = (root / name for name in WORDLLAMA_FILES)
    if not weights.is_file() or not tokenizer.is_file():
        raise SemanticSetupError(
            f"the wordllama package at {root} lacks its built-in model files "
            f"({', '.join(WORDLLAMA_FILES)}): reinstall it with {INSTALL_HINT}"
        )
    (vectors,) = load_file(str(weights)).values()
    return StaticModel("wordllama/l2_supercat_256", Tokenizer.from_file(str(tokenizer)), vectors)


def _model2vec_folder(folder: Path) -> StaticModel:
    """A model saved by model2vec: ``tokenizer.json``, ``model.safetensors`` (``embeddings``,
    optionally per-token ``weights``), optionally ``config.json``."""
    tokenizer_file, weights_file = folder / "tokenizer.json", folder / "model.safetensors"
    for needed in (tokenizer_file, weights_file):
        if not needed.is_file():
            raise SemanticSetupError(
                f"{folder} is not a static embedding model: {needed.name} is missing (expected "
                "model2vec's layout: tokenizer.json and model.safetensors)"
            )
    try:
        tensors = load_file(str(weights_file))
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
    except Exception as exc:  # safetensors and tokenizers raise their own types
        raise SemanticSetupError(f"cannot read the model in {folder}: {exc}") from None
    if "embeddings" not in tensors:
        raise SemanticSetupError(
            f"{weights_file} has no 'embeddings' tensor (found: {', '.join(tensors)})"
        )
    digest = hashlib.sha256(weights_file.read_bytes()).hexdigest()[:12]
    return StaticModel(
        f"{folder.name}@{digest}", tokenizer, tensors["embeddings"], tensors.get("weights")
    )


# ---- vectors in the database -----------------------------------------------------------------


def quantize(vectors: Vectors) -> list[bytes]:
    """Unit vectors as signed bytes (x 127): a quarter of float32, cosines within ~1 %."""
    codes = np.clip(np.rint(vectors * 127.0), -127, 127).astype(np.int8)
    return [row.tobytes() for row in codes]


def dequantize(blobs: Sequence[bytes], dims: int) -> Vectors:
    codes = np.frombuffer(b"".join(blobs), dtype=np.int8).reshape(len(blobs), dims)
    return codes.astype(np.float32) / 127.0


def entity_texts(db: apsw.Connection, ids: Sequence[int]) -> dict[int, list[str]]:
    """What an entity's vector describes: its name, its type, then its observations."""
    texts: dict[int, list[str]] = {}
    wanted = json.dumps(list(ids))
    for entity_id, name, entity_type in db.execute(
        "SELECT id, name, entity_type FROM entities WHERE id IN (SELECT value FROM json_each(?))",
        (wanted,),
    ):
        texts[entity_id] = [name, entity_type]
    for entity_id, content in db.execute(
        "SELECT entity_id, content FROM observations "
        "WHERE entity_id IN (SELECT value FROM json_each(?)) ORDER BY id",
        (wanted,),
    ):
        texts[entity_id].append(content)
    return texts


_PIECE = re.compile(r'(-?)(?:(name|type|entitytype):)?("[^"]*"|\S+)', re.IGNORECASE)
_OPERATORS = frozenset(("OR", "AND", "NOT", "|"))


def query_text(query: str) -> str:
    """The words of a search query, without its syntax (exclusions, type filters, OR)."""
    words: list[str] = []
    negate_next = False
    for negative, field, value in _PIECE.findall(query):
        if not field and value in _OPERATORS:
            negate_next = value == "NOT"
            continue
        if not (negative or negate_next) and field.lower() in ("", "name"):
            words.append(value.strip('"').rstrip("*"))
        negate_next = False
    return " ".join(w for w in words if w.strip())


def _cut(text: str) -> str:
    if len(text) <= SNIPPET_CHARS:
        return text
    return text[: SNIPPET_CHARS - 1].rstrip() + "…"


@dataclass(frozen=True)
class Neighbour:
    entity_id: int
    score: float
    """Cosine similarity to the query, -1 to 1."""


def plain_words(query: search.Query) -> bool:
    """Whether the semantic arm joins this query: only when its words are plain. A quoted
    phrase, a ``prefix*`` or a ``name:`` word asks for those exact words."""
    return bool(query.required) and not any(
        term.exact or term.prefix or term.name_only
        for clause in query.required
        for term in clause.terms
        if not term.synonym
    )


def fuse(
    lexical: Sequence[int], complete: int, meaning: Sequence[Neighbour], limit: int
) -> tuple[list[int], dict[int, list[FoundBy]]]:
    """The full-text ranking and the nearest entities by meaning as one page, and what found
    each entity.

    Entities holding every word of the query (the first ``complete`` of ``lexical``) keep
    their places at the top: when the words are there, the full-text order is the answer.
    The rest of the page fuses the remaining full-text matches with the nearest entities by
    reciprocal rank (:data:`RRF_K`, ties to the full-text match); an entity found by its
    meaning alone must be at least :data:`MIN_SIMILARITY` close.
    """
    head = list(lexical[:complete])
    in_head, by_words = set(head), set(lexical)
    rest = [i for i in lexical if i not in in_head]
    near = [
        n.entity_id
        for n in meaning
        if n.entity_id not in in_head and (n.score >= MIN_SIMILARITY or n.entity_id in by_words)
    ]
    score: dict[int, float] = {}
    for ranked in (rest, near):
        for rank, entity_id in enumerate(ranked, start=1):
            score[entity_id] = score.get(entity_id, 0.0) + 1.0 / (RRF_K + rank)
    position = {entity_id: rank for rank, entity_id in enumerate(rest)}
    tail = sorted(score, key=lambda i: (-score[i], position.get(i, len(rest))))
    page = (head + tail)[:limit]
    by_meaning = {n.entity_id for n in meaning}
    found_by: dict[int, list[FoundBy]] = {}
    for entity_id in page:
        arms: list[FoundBy] = []
        if entity_id in by_words:
            arms.append("lexical")
        if entity_id in by_meaning:
            arms.append("semantic")
        found_by[entity_id] = arms
    return page, found_by


class VectorIndex:
    """The sign bits of every stored vector of one model, by entity id: 32 bytes an entity.

    Hamming distance between sign bits ranks candidates almost as cosine would (the exact
    scores come from the full vectors); the bits are kept one 64-bit word per row of
    :attr:`codes`, so a search is a few XOR and popcount passes over contiguous memory.
    """

    def __init__(self, dims: int) -> None:
        self.words = -(-dims // 64)
        self.ids = np.empty(0, dtype=np.int64)  # ascending entity ids
        self.codes = np.empty((self.words, 0), dtype=np.uint64)
        self.count = 0
        self.last_seq = 0
        self._dead: set[int] = set()
        """Rows whose vector is gone (their entity changed or was deleted elsewhere)."""
        self._data_versions: dict[int, tuple[apsw.Connection, int]] = {}
        """Per connection (one per thread): its ``PRAGMA data_version`` at the last refresh."""

    def refresh(self, db: apsw.Connection, model_id: int, *, changed_here: bool) -> None:
        """Read the vectors written since the last refresh, by this process or another."""
        version = int(db.pragma("data_version"))
        seen = self._data_versions.get(id(db))
        if seen is not None and seen[0] is db and seen[1] == version and not changed_here:
            return
        self._data_versions[id(db)] = (db, version)
        while True:  # in batches: the first refresh of a large file reads every vector
            rows: list[tuple[int, int, bytes]] = db.execute(  # type: ignore[assignment]
                "SELECT seq, entity_id, vector FROM entity_vectors "
                "WHERE seq > ? AND model_id = ? ORDER BY seq LIMIT ?",
                (self.last_seq, model_id, REFRESH_BATCH),
            ).fetchall()
            if not rows:
                return
            self.last_seq = int(rows[-1][0])
            latest = {int(entity_id): blob for _, entity_id, blob in rows}
            ids = np.fromiter(latest, dtype=np.int64, count=len(latest))
            codes = self.sign_bits(list(latest.values()))
            order = np.argsort(ids)
            self._merge(ids[order], codes[:, order])
            if len(rows) < REFRESH_BATCH:
                return

    def sign_bits(self, blobs: Sequence[bytes]) -> npt.NDArray[np.uint64]:
        """``(words, n)``: the sign bits of each vector, 64 to a word."""
        vectors = np.frombuffer(b"".join(blobs), dtype=np.int8).reshape(len(blobs), -1)
        packed = np.packbits(vectors > 0, axis=1)
        padded = np.zeros((len(blobs), self.words * 8), dtype=np.uint8)
        padded[:, : packed.shape[1]] = packed
        return np.ascontiguousarray(padded.view(np.uint64).T)

    def _merge(self, ids: npt.NDArray[np.int64], codes: npt.NDArray[np.uint64]) -> None:
        live = self.ids[: self.count]
        at = np.searchsorted(live, ids)
        found = at < self.count
        found[found] = live[at[found]] == ids[found]
        self.codes[:, at[found]] = codes[:, found]
        self._dead.difference_update(int(i) for i in at[found])
        new_ids, new_codes = ids[~found], codes[:, ~found]
        if not len(new_ids):
            return
        if self.count == 0 or new_ids[0] > live[-1]:  # the usual case: new entities, new ids
            self._reserve(self.count + len(new_ids))
            self.ids[self.count : self.count + len(new_ids)] = new_ids
            self.codes[:, self.count : self.count + len(new_ids)] = new_codes
            self.count += len(new_ids)
            return
        # an id below the highest (a backfill, a reused id): rebuild in id order
        merged_ids = np.concatenate([live, new_ids])
        order = np.argsort(merged_ids, kind="stable")
        dead = np.zeros(len(merged_ids), dtype=bool)
        dead[list(self._dead)] = True
        self.ids = merged_ids[order]
        self.codes = np.ascontiguousarray(
            np.concatenate([self.codes[:, : self.count], new_codes], axis=1)[:, order]
        )
        self._dead = {int(i) for i in np.flatnonzero(dead[order])}
        self.count = len(merged_ids)

    def _reserve(self, size: int) -> None:
        if size <= len(self.ids):
            return
        capacity = max(size, len(self.ids) + len(self.ids) // 2, 1024)
        ids = np.empty(capacity, dtype=np.int64)
        ids[: self.count] = self.ids[: self.count]
        codes = np.zeros((self.words, capacity), dtype=np.uint64)
        codes[:, : self.count] = self.codes[:, : self.count]
        self.ids, self.codes = ids, codes

    def forget(self, entity_ids: Sequence[int]) -> None:
        """Entities whose vector is gone: never candidates again (until re-embedded)."""
        live = self.ids[: self.count]
        wanted = np.asarray(entity_ids, dtype=np.int64)
        at = np.searchsorted(live, wanted)
        at = at[at < self.count]
        self._dead.update(int(i) for i in at[np.isin(live[at], wanted)])

    def nearest(self, query: Vectors, k: int) -> list[int]:
        """The ids of (about) the ``k`` entities closest to the query by sign bits."""
        if self.count == 0:
            return []
        (bits,) = self.sign_bits([quantize(query[None, :])[0]]).T
        distance = np.bitwise_count(self.codes[0, : self.count] ^ bits[0]).astype(np.uint16)
        for word in range(1, self.words):
            distance += np.bitwise_count(self.codes[word, : self.count] ^ bits[word])
        far = 64 * self.words + 1
        if self._dead:
            distance[list(self._dead)] = far
        k = min(k, self.count - len(self._dead))
        if k <= 0:
            return []
        # the k smallest of small integers: count each distance (one pass, where a partial
        # sort took 4x as long at 100k), then take those under the k-th and enough at it
        at_most = np.cumsum(np.bincount(distance, minlength=far + 1))
        cut = int(np.searchsorted(at_most, k))
        closer = np.flatnonzero(distance < cut)
        tied = np.flatnonzero(distance == cut)[: k - len(closer)]
        return [int(i) for i in self.ids[np.concatenate([closer, tied])]]


class Semantic:
    """Semantic search over one database file, for one process; safe to call from several
    threads at once (the index is shared, behind a lock)."""

    def __init__(self, model: StaticModel) -> None:
        self.model = model
        self.index = VectorIndex(model.dims)
        self._index_lock = threading.Lock()
        self._changed_here = False

    def model_id(self, db: apsw.Connection, *, create: bool) -> int | None:
        """This model's row in ``embedding_models`` (made when ``create``, in a write).

        Looked up every time (one indexed read): a cached id could name a row whose
        transaction was rolled back.
        """
        found = db.execute("SELECT id FROM embedding_models WHERE name = ?", (self.model.name,)).get
        if found is None and create:
            found = db.execute(
                "INSERT INTO embedding_models(name, dims) VALUES (?, ?) RETURNING id",
                (self.model.name, self.model.dims),
            ).get
        return None if found is None else int(found)

    def embed(self, db: apsw.Connection, entity_ids: Sequence[int]) -> int:
        """Write the vectors of these entities, inside the caller's write transaction.

        Call it after the text is written: the vector describes what is stored now.
        Returns how many vectors were written (ids of deleted entities are skipped).
        """
        if not entity_ids:
            return 0
        model_id = self.model_id(db, create=True)
        texts = entity_texts(db, sorted(set(entity_ids)))
        if not texts:
            return 0
        vectors = self.model.embed(list(texts.values()))
        db.executemany("DELETE FROM entity_vectors WHERE entity_id = ?", ((i,) for i in texts))
        db.executemany(
            "INSERT INTO entity_vectors(entity_id, model_id, vector) VALUES (?, ?, ?)",
            ((i, model_id, blob) for i, blob in zip(texts, quantize(vectors), strict=True)),
        )
        self._changed_here = True
        return len(texts)

    def hybrid(
        self,
        vocab: vocabulary.Lookup,
        parsed: search.Query,
        query: str,
        limit: int,
        entity_type: str | None,
    ) -> tuple[ranking.Ranking, dict[int, list[FoundBy]]]:
        """The full-text ranking of ``parsed`` fused with the entities nearest to ``query``
        in meaning (:func:`fuse`), and what found each entity on the page; the full-text
        ranking alone for a query that asks for exact matches (:func:`plain_words`).

        The neighbours obey the query's type filters and exclusions (:func:`ranking.kept`);
        ``total`` counts the full-text matches plus the entities on the page found by
        meaning alone.
        """
        if not plain_words(parsed):
            found = ranking.rank(vocab, parsed, limit, entity_type)
            return found, {entity_id: ["lexical"] for entity_id in found.ids}
        depth = max(limit, FUSION_DEPTH)
        lexical = ranking.rank(vocab, parsed, depth, entity_type)
        neighbours = {n.entity_id: n for n in self.nearest(vocab.db, query, CANDIDATES)}
        kept = ranking.kept(vocab, parsed, entity_type, list(neighbours))
        meaning = [neighbours[i] for i in kept[:depth]]
        page, found_by = fuse(lexical.ids, lexical.complete, meaning, limit)
        lexical.total += sum(1 for arms in found_by.values() if arms == ["semantic"])
        lexical.ids = page
        return lexical, found_by

    def closest_observations(
        self, db: apsw.Connection, query: str, ids: Sequence[int], most: int
    ) -> dict[int, list[str]]:
        """Snippets of entities found by meaning alone: their ``most`` observations closest
        to the query in meaning, whole (cut at :data:`SNIPPET_CHARS`)."""
        text = query_text(query)
        if not text or not ids:
            return {}
        vector = self.model.embed([[text]])[0]
        found: dict[int, list[str]] = {}
        for entity_id, texts in entity_texts(db, ids).items():
            observations = texts[2:]  # after the name and the type
            if observations:
                scores = self.model.embed([[o] for o in observations]) @ vector
                best = np.argsort(-scores, kind="stable")[:most]
                found[entity_id] = [_cut(observations[i]) for i in best]
        return found

    def catch_up(self, db: apsw.Connection) -> None:
        """Read into the index the vectors written since the last search, by any process
        (every one of them at the first search: about 0.4 s at 100,000 entities)."""
        model_id = self.model_id(db, create=False)
        if model_id is not None:
            with self._index_lock:
                self.index.refresh(db, model_id, changed_here=self._changed_here)
                self._changed_here = False

    def nearest(self, db: apsw.Connection, query: str, k: int) -> list[Neighbour]:
        """The ``k`` entities closest in meaning to the query, closest first (in a read)."""
        model_id = self.model_id(db, create=False)
        text = query_text(query)
        if model_id is None or not text:
            return []
        vector = self.model.embed([[text]])[0]
        with self._index_lock:
            self.index.refresh(db, model_id, changed_here=self._changed_here)
            self._changed_here = False
            candidates = self.index.nearest(vector, max(k, CANDIDATES))
        if not candidates:
            return []
        rows: list[tuple[int, bytes]] = db.execute(  # type: ignore[assignment]
            "SELECT entity_id, vector FROM entity_vectors "
            "WHERE entity_id IN (SELECT value FROM json_each(?)) AND model_id = ?",
            (json.dumps(candidates), model_id),
        ).fetchall()
        gone = set(candidates) - {int(r[0]) for r in rows}
        if gone and self._sees_the_index(db):
            with self._index_lock:
                self.index.forget(sorted(gone))
        if not rows:
            return []
        full = dequantize([r[1] for r in rows], self.model.dims)
        scores = full @ vector
        order = np.argsort(-scores, kind="stable")[:k]
        return [Neighbour(int(rows[i][0]), float(scores[i])) for i in order]

    def _sees_the_index(self, db: apsw.Connection) -> bool:
        """Whether this read's snapshot holds every vector the index has read: only then does
        a candidate missing from it mean its vector is gone (an older snapshot, on another
        thread's connection, may simply not have it yet)."""
        newest = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'entity_vectors'").get
        return int(newest or 0) >= self.index.last_seq

    def missing(self, db: apsw.Connection) -> int:
        """How many entities have no vector of this model."""
        model_id = self.model_id(db, create=False) or -1
        return int(
            db.execute(
                "SELECT count(*) FROM entities e WHERE NOT EXISTS (SELECT 1 FROM entity_vectors v "
                "WHERE v.entity_id = e.id AND v.model_id = ?)",
                (model_id,),
            ).get
        )

    def backfill(
        self,
        write: Callable[[], AbstractContextManager[apsw.Connection]],
        on_batch: Callable[[int], None] = lambda n: None,
    ) -> int:
        """Embed every entity that lacks a vector of this model, :data:`BATCH` per
        transaction; interrupted, it loses at most the batch in progress and the next run
        carries on. Returns how many were embedded."""
        done, after = 0, 0
        while True:
            with write() as db:
                model_id = self.model_id(db, create=True)
                ids = [
                    int(i)
                    for (i,) in db.execute(
                        "SELECT e.id FROM entities e WHERE e.id > ? AND NOT EXISTS (SELECT 1 "
                        "FROM entity_vectors v WHERE v.entity_id = e.id AND v.model_id = ?) "
                        "ORDER BY e.id LIMIT ?",
                        (after, model_id, BATCH),
                    )
                ]
                if not ids:
                    return done
                done += self.embed(db, ids)
            after = ids[-1]
            on_batch(len(ids))

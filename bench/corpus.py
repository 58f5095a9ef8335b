"""A synthetic knowledge graph that looks like an agent's memory, the same for every run.

Observations are sentences of 5-14 pseudo-words drawn from a 50,000-word vocabulary with a
Zipf distribution (s = 1, as in natural language: the commonest word is ~9 % of all words and
appears in most entities, the way "the" does). Entities have person/project/... types, two-word
names and 3-7 observations (5 on average); there are ~1.5 relations per entity. Everything
derives from one seed, so memfts and the JSONL baseline index exactly the same graph, and the
queries are drawn from that graph (each rare word and 3-word phrase occurs at least once).

The graph is written once in the official server's JSONL format (``bench/data/``), which is
the baseline's file and the cache every benchmark reads back.
"""

from __future__ import annotations

import bisect
import itertools
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
SEED = 20261124
VOCABULARY_SIZE = 50_000
ZIPF_S = 1.0

ENTITY_TYPES = (
    ("person", 30),
    ("project", 15),
    ("organization", 10),
    ("concept", 10),
    ("tool", 8),
    ("event", 7),
    ("location", 6),
    ("document", 5),
    ("task", 4),
    ("preference", 3),
    ("meeting", 1),
    ("bug", 1),
)
RELATION_TYPES = (
    "works_at",
    "knows",
    "depends_on",
    "part_of",
    "located_in",
    "created",
    "uses",
    "mentions",
    "reports_to",
    "prefers",
)
_ONSETS = ("", "b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "ch", "st")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou")
_CODAS = ("", "", "", "n", "r", "s", "l", "t", "x")


def _pseudo_words(rng: random.Random, count: int) -> list[str]:
    """``count`` distinct pronounceable words, in a deterministic order."""
    words: set[str] = set()
    while len(words) < count:
        syllables = rng.choices((1, 2, 3, 4), weights=(2, 5, 4, 2))[0]
        word = "".join(
            rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables)
        )
        if len(word) >= 2:
            words.add(word)
    return sorted(words, key=lambda w: (len(w), w))


@dataclass
class Vocabulary:
    """Words by Zipf rank (0 = commonest) and a sampler drawing them with that law."""

    words: list[str]
    cumulative: list[float] = field(repr=False)

    @classmethod
    def build(cls, seed: int = SEED, size: int = VOCABULARY_SIZE) -> Vocabulary:
        rng = random.Random(seed)
        words = _pseudo_words(rng, size)
        # frequent words tend to be short, loosely (rank ~100-1,000 is 3-7 letters, as in
        # English "people", "through"), and rank is not alphabetical
        noisy_length = {w: 0.3 * len(w) + rng.uniform(0, 4) for w in words}
        words.sort(key=noisy_length.__getitem__)
        weights = [1.0 / (rank + 1) ** ZIPF_S for rank in range(size)]
        return cls(words, list(itertools.accumulate(weights)))

    def sample(self, rng: random.Random, k: int) -> list[str]:
        total = self.cumulative[-1]
        cum = self.cumulative
        words = self.words
        return [words[bisect.bisect(cum, rng.random() * total)] for _ in range(k)]

    def rank(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.words)}


def _sentence(vocab: Vocabulary, rng: random.Random) -> str:
    words = vocab.sample(rng, rng.randint(5, 14))
    words[0] = words[0].capitalize()
    if rng.random() < 0.3:  # a clause break now and then, as in real notes
        cut = rng.randint(1, len(words) - 1)
        words[cut - 1] += ","
    return " ".join(words) + rng.choice((".", ".", ".", "", "!"))


def graph_records(entities: int, seed: int = SEED) -> Iterator[dict[str, object]]:
    """The graph as official-JSONL records: every entity, then every relation."""
    vocab = Vocabulary.build(seed)
    rng = random.Random(seed + entities)
    # names come from the rare half of the vocabulary, uniformly: they are proper nouns
    name_words = vocab.words[VOCABULARY_SIZE // 2 :]
    types = [t for t, _ in ENTITY_TYPES]
    type_weights = [w for _, w in ENTITY_TYPES]
    names: list[str] = []
    seen: set[str] = set()
    for _ in range(entities):
        name = f"{rng.choice(name_words).capitalize()} {rng.choice(name_words).capitalize()}"
        if name in seen:
            name = f"{name} {len(names)}"
        seen.add(name)
        names.append(name)
        observations = [_sentence(vocab, rng) for _ in range(rng.randint(3, 7))]
        yield {
            "type": "entity",
            "name": name,
            "entityType": rng.choices(types, weights=type_weights)[0],
            "observations": list(dict.fromkeys(observations)),
        }
    relation_set: set[tuple[str, str, str]] = set()
    for _ in range(entities * 3 // 2):
        # early entities (the user, their company...) attract more links, as in real memory
        # graphs: half the targets are skewed to the first ones (the first entity gets ~1/sqrt(n)
        # of them: ~20 links at 1k entities, ~240 at 100k), half uniform
        source = names[rng.randrange(entities)]
        if rng.random() < 0.5:
            target = names[int(entities * rng.random() ** 2)]
        else:
            target = names[rng.randrange(entities)]
        relation = (source, target, rng.choice(RELATION_TYPES))
        if source != target and relation not in relation_set:
            relation_set.add(relation)
            yield {"type": "relation", "from": source, "to": target, "relationType": relation[2]}


def jsonl_path(entities: int, seed: int = SEED) -> Path:
    return DATA_DIR / f"graph-{entities}-s{seed}.jsonl"


def ensure_jsonl(entities: int, seed: int = SEED) -> Path:
    """Write the graph in the official server's format once; return its path."""
    path = jsonl_path(entities, seed)
    if not path.exists():
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as out:
            # exactly what the official saveGraph writes: JSON.stringify per line, "\n" joined
            out.writelines(
                json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n"
                for r in graph_records(entities, seed)
            )
        tmp.rename(path)
    return path


def read_jsonl(path: Path) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """(entities, relations) as dicts, in file order."""
    entities: list[dict[str, object]] = []
    relations: list[dict[str, object]] = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            (entities if record["type"] == "entity" else relations).append(record)
    return entities, relations


@dataclass(frozen=True)
class QuerySet:
    """The queries of one benchmark run, by class, all drawn from the graph itself."""

    classes: dict[str, list[str]]

    @classmethod
    def draw(
        cls, entities: list[dict[str, object]], per_class: int = 20, seed: int = SEED
    ) -> QuerySet:
        vocab = Vocabulary.build(seed)
        rank = vocab.rank()
        rng = random.Random(seed * 7 + len(entities))
        sample = [entities[rng.randrange(len(entities))] for _ in range(per_class * 4)]
        rare: list[str] = []
        phrase: list[str] = []
        for entity in sample:
            observations: list[str] = entity["observations"]  # type: ignore[assignment]
            text = rng.choice(observations)
            words = [w.strip(",.!").lower() for w in text.split()]
            # rarest word of the entity: present at least once in the graph, usually a few times
            rarest = max(
                (w for o in observations for w in o.split()),
                key=lambda w: rank.get(w.strip(",.!").lower(), -1),
            )
            rare.append(rarest.strip(",.!").lower())
            start = rng.randrange(len(words) - 2)
            # three consecutive words as written, so the baseline's substring test can match
            phrase.append(" ".join(text.split()[start : start + 3]).strip(",.!"))
        rare = list(dict.fromkeys(rare))[:per_class]
        phrase = list(dict.fromkeys(phrase))[:per_class]
        medium = [vocab.words[r] for r in rng.sample(range(100, 1000), per_class)]
        common = [vocab.words[r] for r in range(min(5, per_class))]
        return cls({"rare": rare, "medium": medium, "common": common, "3-word": phrase})

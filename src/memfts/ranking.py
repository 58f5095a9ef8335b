"""A parsed query -> entity ids in rank order: the FTS5 lookups, their SQL, every tuning constant.

:func:`rank` is the one entry: it returns a :class:`Ranking` (entity ids, best first, and what
the search found out on the way: total, corrections, suggestions). It loads no entity; the
store does that. A later step that fuses another ranking with this one (a vector arm) takes
``Ranking.ids`` and re-orders them before the store loads them. :func:`snippets` gives the
matching fragments of ranked entities.

How a query is answered: each clause of the query (a word, a phrase, ``a OR b``) becomes
*arms*, FTS5 lookups in the entity and observation indexes: the whole word (and its other
spellings), then, at a discount, the indexed words that start with or contain it (see
:mod:`memfts.vocabulary`). Hits are summed per entity in one SQL statement; entities holding
every clause rank first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from memfts import search, vocabulary

ENTITY_WEIGHTS = (10.0, 3.0)
"""bm25 column weights of (name, entity_type); an observation counts 1."""

PARTIAL_MATCH_FACTOR = 0.5
"""A word start or infix hit scores this share of a whole-word hit, so whole words rank first."""

FORM_FACTOR = 0.8
"""Another form of a query word (``renewed`` for ``renewing``) scores this share of the word
as typed; like a partial word, it does not count as a whole-word hit."""

COMMON_CLAUSE_ROWS = 4_000
"""Rows past which a query word is too common to rank on; see :func:`_ranked`."""

PARTIAL_ARM_ROWS = 1_000
"""Most rows one widening of a partial word contributes (the latest): partial hits rank low,
and a short fragment can widen to words used everywhere."""

FLAT_SCORE = -1.0
"""Score of an infix hit before its discount; whole-word bm25 scores run about -3 to -15."""

SNIPPETS_PER_ENTITY = 3
"""Most fragments shown per entity."""

SNIPPET_MARKS = ("**", "**")
"""How snippets mark the words that matched."""

SNIPPET_TOKENS = 16
"""Words around the match in one fragment."""

OBSERVATION_ID_BITS = 20
"""An observation's id is ``entity_id << 20`` plus its position (sql/001): a full-text hit's
entity is its rowid shifted, with no lookup, and an entity holds at most 2^20 observations."""

_OBSERVATION_ENTITY = f"(observations_fts.rowid >> {OBSERVATION_ID_BITS})"


@dataclass(frozen=True)
class Sql:
    """A piece of SQL and the named parameters it binds."""

    sql: str
    params: dict[str, object] = field(default_factory=dict)


@dataclass
class Ranking:
    """Entity ids in rank order and what the search found out on the way."""

    ids: list[int]
    total: int
    lower_bound: bool = False
    """``total`` counted no further than a bound: at least that many matched."""
    corrected: str | None = None
    """The corrected words searched instead of the query as typed."""
    suggestions: list[str] = field(default_factory=list)
    complete: bool = False
    """Every clause of the query matched the entities found (no fallback to some words)."""
    searched: search.Query | None = None
    """The query actually searched, when it is not the one parsed (a corrected query)."""


_ARM_TABLES = {
    # table: (the entity id of a hit, its bm25 call)
    "entities_fts": ("entities_fts.rowid", "bm25(entities_fts, :name_weight, :type_weight)"),
    "observations_fts": (_OBSERVATION_ENTITY, "bm25(observations_fts)"),
}


@dataclass(frozen=True)
class Arm:
    """One FTS5 lookup contributing to a clause: a table, a safe expression and its weight."""

    table: str
    match: str
    factor: float
    scored: bool = True
    """False for infix expansions: an OR of many words, where bm25 would first count the
    matches of every one of them; a flat score keeps such an arm cheap."""
    whole: bool = True
    """A hit is the word as typed (or spelt another way), not another form or a part of it."""

    @property
    def entity_sql(self) -> str:
        return _ARM_TABLES[self.table][0]

    def scored_sql(self, key: str, clause: int, among: str | None = None) -> Sql:
        """``(entity_id, clause, score, whole)`` rows; its parameters are named ``key_*``.
        ``whole`` is 1 for a whole-word hit, 0 for another form or a partial word. ``among``
        names a table of candidate entity ids to keep only their rows (scoring no others)."""
        params = {f"{key}_clause": clause, f"{key}_factor": self.factor, f"{key}_match": self.match}
        if not self.scored:
            keep = f" WHERE entity_id IN {among}" if among else ""
            return Sql(
                f"SELECT * FROM (SELECT {self.entity_sql} AS entity_id, :{key}_clause, "
                f":{key}_factor * {FLAT_SCORE}, 0 FROM {self.table} "
                f"WHERE {self.table} MATCH :{key}_match "
                f"ORDER BY {self.table}.rowid DESC LIMIT {PARTIAL_ARM_ROWS}){keep}",
                params,
            )
        if self.table == "entities_fts":
            params["name_weight"], params["type_weight"] = ENTITY_WEIGHTS
        # unary + : filter the FTS hits, never drive FTS5 by rowid (one query per candidate)
        keep = f" AND +{self.entity_sql} IN {among}" if among else ""
        return Sql(
            f"SELECT {self.entity_sql}, :{key}_clause, "
            f":{key}_factor * {_ARM_TABLES[self.table][1]}, {int(self.whole)} "
            f"FROM {self.table} WHERE {self.table} MATCH :{key}_match{keep}",
            params,
        )

    def entities_sql(self, key: str) -> Sql:
        """The entity ids of the arm's hits; its parameter is named ``key_match``."""
        params: dict[str, object] = {f"{key}_match": self.match}
        if not self.scored:
            return Sql(
                f"SELECT * FROM (SELECT {self.entity_sql} FROM {self.table} "
                f"WHERE {self.table} MATCH :{key}_match "
                f"ORDER BY {self.table}.rowid DESC LIMIT {PARTIAL_ARM_ROWS})",
                params,
            )
        return Sql(
            f"SELECT {self.entity_sql} FROM {self.table} WHERE {self.table} MATCH :{key}_match",
            params,
        )


def _union(parts: list[Sql], joiner: str) -> Sql:
    params: dict[str, object] = {}
    for part in parts:
        params.update(part.params)
    return Sql(joiner.join(p.sql for p in parts), params)


def _hits_sql(selects: list[Sql]) -> Sql:
    """The ``hits(entity_id, clause, score, whole)`` CTE: every arm's rows, computed once
    (MATERIALIZED: inlined into a single-arm query, SQLite would lose the bm25 context)."""
    union = _union(selects, " UNION ALL ")
    return Sql(f"hits(entity_id, clause, score, whole) AS MATERIALIZED ({union.sql})", union.params)


_PER_ENTITY_SQL = """\
per_clause AS (
    SELECT entity_id, clause, min(score) AS score, max(whole) AS whole
    FROM hits GROUP BY entity_id, clause),
per_entity AS (
    SELECT entity_id, count(*) AS clauses, sum(whole) AS wholes, sum(score) AS score
    FROM per_clause GROUP BY entity_id)"""
"""Per entity: how many clauses it matched, how many of them by whole words, the summed best
score of each clause (bm25 is negative: lower is better)."""

_PER_ENTITY_ONE_CLAUSE_SQL = """\
per_entity AS (
    SELECT entity_id, 1 AS clauses, max(whole) AS wholes, min(score) AS score
    FROM hits GROUP BY entity_id)"""
""":data:`_PER_ENTITY_SQL` for a query of one clause, in one grouping instead of two."""


# ---- the entry -------------------------------------------------------------------------------


def filter_types(query: search.Query, entity_type: str | None) -> list[str]:
    """The (folded) entity types every result must have: the argument's and the query's."""
    return [search.fold(t) for t in (entity_type, *query.entity_types) if t and t.strip()]


def rank(
    vocab: vocabulary.Lookup, query: search.Query, limit: int, entity_type: str | None = None
) -> Ranking:
    """The best ``limit`` entities for ``query`` (of ``entity_type`` if given), best first.

    A query with words ranks by bm25 (and, when nothing matched or a misspelt word kept the
    rest from matching together, searches again with corrected words); a query of only
    filters or exclusions, or none at all, lists the most recently changed entities.
    """
    types = filter_types(query, entity_type)
    if query.required:
        ranking = _ranked(vocab, query, limit, types)
        if ranking.total == 0 or (ranking.suggestions and not ranking.complete):
            # nothing found, or a misspelt word kept the rest from matching together
            corrected = _corrected(vocab, query, limit, types)
            if corrected and (ranking.total == 0 or corrected.complete):
                ranking = corrected
        return ranking
    if query.text.strip() and not (query.excluded or query.excluded_types or types):
        return Ranking([], 0)  # only punctuation: nothing to look for
    return _recent(vocab, query, limit, types)


# ---- filters ---------------------------------------------------------------------------------


def _type_sql(types: list[str], prefix: str = "") -> Sql:
    """A condition keeping entities of every given (folded) type: all must agree."""
    if not types:
        return Sql("1")
    return Sql(
        " AND ".join(f"memfts_fold({prefix}entity_type) = :type{i}" for i in range(len(types))),
        {f"type{i}": t for i, t in enumerate(types)},
    )


def _excluded_sql(query: search.Query) -> Sql:
    """A subquery of the ids of entities matching any ``-excluded`` term or type."""
    selects = [Sql("SELECT NULL WHERE 0")]
    for i, excluded_type in enumerate(query.excluded_types):
        selects.append(
            Sql(
                f"SELECT id FROM entities WHERE memfts_fold(entity_type) = :excluded_type{i}",
                {f"excluded_type{i}": search.fold(excluded_type)},
            )
        )
    n = 0
    for clause in query.excluded:
        for term in clause.terms:
            column = "name : " if term.name_only else ""
            match = f"{column}({search.whole_expression(term)})"
            selects.append(
                Sql(
                    f"SELECT rowid FROM entities_fts WHERE entities_fts MATCH :excluded{n}",
                    {f"excluded{n}": match},
                )
            )
            if not term.name_only:
                selects.append(
                    Sql(
                        f"SELECT {_OBSERVATION_ENTITY} FROM observations_fts "
                        f"WHERE observations_fts MATCH :excluded{n}",
                    )
                )
            n += 1
    return _union(selects, " UNION ")


def _kept_sql(query: search.Query, types: list[str]) -> Sql:
    """``JOIN ... WHERE ...`` keeping the ``per_entity p`` rows of the wanted types and
    without excluded terms."""
    if not types and not query.excluded and not query.excluded_types:
        return Sql("WHERE 1")  # no lookup per entity
    excluded = _excluded_sql(query)
    type_sql = _type_sql(types, "e.")
    return Sql(
        "JOIN entities e ON e.id = p.entity_id "
        f"WHERE {type_sql.sql} AND p.entity_id NOT IN ({excluded.sql})",
        {**type_sql.params, **excluded.params},
    )


# ---- ranking ---------------------------------------------------------------------------------


def _recent(vocab: vocabulary.Lookup, query: search.Query, limit: int, types: list[str]) -> Ranking:
    """The most recently changed entities, filtered by type and exclusions."""
    excluded = _excluded_sql(query)
    type_sql = _type_sql(types)
    where = f"WHERE {type_sql.sql} AND id NOT IN ({excluded.sql})"
    params = {**type_sql.params, **excluded.params}
    ids = [
        row_id
        for (row_id,) in vocab.db.execute(
            f"SELECT id FROM entities {where} ORDER BY updated_at DESC, id DESC LIMIT :limit",
            {**params, "limit": limit},
        )
    ]
    total = vocab.db.execute(f"SELECT count(*) FROM entities {where}", params).get
    return Ranking(ids, int(total))


def _arms(vocab: vocabulary.Lookup, clause: search.Clause) -> list[Arm]:
    """The FTS lookups answering one clause: whole words, then other forms and partial words
    at a discount."""
    arms: list[Arm] = []
    for term in clause.terms:
        tables = ("entities_fts",) if term.name_only else ("entities_fts", "observations_fts")
        column = "name : " if term.name_only else ""
        whole = search.whole_expression(term)
        expressions: list[tuple[str, float, bool, bool]] = []
        single = len(term.words) == 1 and not term.prefix
        # a quoted word is that word, however spelt; unquoted, any of its forms too
        spellings, forms = vocab.variants(term.words[0]) if single else ([], [])
        if spellings:
            whole = search.any_of_expression([term.words[0], *spellings])
        expressions.append((whole, 1.0, True, True))
        if forms and not term.exact:
            expressions.append((search.any_of_expression(forms), FORM_FACTOR, True, False))
        if single and not term.exact:
            found = {*spellings, *forms}
            containing = [w for w in vocab.words_containing(term.words[0]) if w not in found]
            if containing:
                expressions.append(
                    (search.any_of_expression(containing), PARTIAL_MATCH_FACTOR, False, False)
                )
        for expression, factor, scored, is_whole in expressions:
            for table in tables:
                arms.append(Arm(table, f"{column}({expression})", factor, scored, is_whole))
    return arms


def _probe(vocab: vocabulary.Lookup, arm: Arm) -> int:
    """How many rows an arm matches, counting no further than just past the common bound."""
    return int(
        vocab.db.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM {arm.table} WHERE {arm.table} MATCH :match "
            "LIMIT :bound)",
            {"match": arm.match, "bound": COMMON_CLAUSE_ROWS + 1},
        ).get
    )


def _ranked(vocab: vocabulary.Lookup, query: search.Query, limit: int, types: list[str]) -> Ranking:
    """bm25 over every arm of every clause, aggregated per entity.

    A clause matching more than :data:`COMMON_CLAUSE_ROWS` rows is too common to filter or
    rank on (its bm25 weight is near zero, and scoring it costs a pass over all its rows): it
    is dropped when the query has rarer clauses, and otherwise the most recent of its matches
    are returned, with ``total`` a lower bound.
    """
    arms = [(i, _arms(vocab, clause)) for i, clause in enumerate(query.required)]
    # infix arms are left out of the estimate: probing them costs a lookup per word they
    # widen to, and a clause is common through its whole words or word starts anyway
    sizes = [
        sum(_probe(vocab, arm) for arm in clause_arms if arm.scored) for _, clause_arms in arms
    ]
    rare = [(i, clause_arms) for i, clause_arms in arms if sizes[i] <= COMMON_CLAUSE_ROWS]
    # words that matched nothing, not even inside other words: candidates for "did you mean"
    empty_words = [
        w
        for (i, clause_arms), size in zip(arms, sizes, strict=True)
        if size == 0 and all(arm.scored for arm in clause_arms)
        for t in query.required[i].terms
        for w in t.words
    ]
    if not rare:
        return _recent_matches(vocab, query, arms, sizes, limit, types)
    suggestions = vocab.suggestions(empty_words)
    if len(rare) > 1 and not empty_words:
        found = _having_every_clause(vocab, query, rare, sizes, limit, types)
        if found is not None:
            found.suggestions = suggestions
            return found
    hits = _hits_sql(
        [
            arm.scored_sql(f"a{index}_{n}", index)
            for index, (_, clause_arms) in enumerate(rare)
            for n, arm in enumerate(clause_arms)
        ]
    )
    kept = _kept_sql(query, types)
    if len(rare) == 1:  # one clause: no per-clause step, every entity has "all" clauses
        per_entity, complete = _PER_ENTITY_ONE_CLAUSE_SQL, "count(*) OVER ()"
        order = "p.wholes DESC, p.score"
    else:
        # No entity has every word (_having_every_clause found none): rank by the summed
        # scores, where a rare word weighs more than a common one, not by how many words
        # matched ("what editor does the user prefer" is about the editor, not "what").
        per_entity, complete = _PER_ENTITY_SQL, "count(*) OVER (PARTITION BY p.clauses)"
        order = "p.score"
    sql = (
        f"WITH {hits.sql},\n{per_entity}\n"
        f"SELECT p.entity_id, p.clauses, {complete}, count(*) OVER ()\n"
        f"FROM per_entity p {kept.sql}\n"
        f"ORDER BY {order}, p.entity_id DESC LIMIT :limit"
    )
    rows: list[tuple[int, int, int, int]] = vocab.db.execute(  # type: ignore[assignment]
        sql, {**hits.params, **kept.params, "limit": limit}
    ).fetchall()
    if not rows:
        return Ranking([], 0, suggestions=suggestions)
    best = rows[0][1]
    if best == len(rare):  # some entities have every clause: they are the answer
        return Ranking(
            [r[0] for r in rows if r[1] == best],
            rows[0][2],
            suggestions=suggestions,
            complete=True,
        )
    return Ranking([r[0] for r in rows], rows[0][3], suggestions=suggestions)


def _having_every_clause(
    vocab: vocabulary.Lookup,
    query: search.Query,
    rare: list[tuple[int, list[Arm]]],
    sizes: list[int],
    limit: int,
    types: list[str],
) -> Ranking | None:
    """The ranking of the entities matching every clause, or None if there are none.

    The entities of the rarest clause are the candidates; the other clauses are scored on the
    candidates' rows only, so a query pairing a rare word with frequent ones costs about what
    the rare word costs, not what the frequent ones do.
    """
    driver = min(range(len(rare)), key=lambda k: sizes[rare[k][0]])
    candidates = _union(
        [arm.entities_sql(f"c{n}") for n, arm in enumerate(rare[driver][1])], " UNION "
    )
    hits = _hits_sql(
        [
            # the rarest clause's own hits are all candidates: no filter to build
            arm.scored_sql(f"a{index}_{n}", index, None if index == driver else "candidates")
            for index, (_, clause_arms) in enumerate(rare)
            for n, arm in enumerate(clause_arms)
        ]
    )
    kept = _kept_sql(query, types)
    sql = (
        f"WITH candidates(entity_id) AS MATERIALIZED ({candidates.sql}),\n"
        f"{hits.sql},\n{_PER_ENTITY_SQL}\n"
        f"SELECT p.entity_id, count(*) OVER () FROM per_entity p {kept.sql}\n"
        "AND p.clauses = :clauses ORDER BY p.wholes DESC, p.score, p.entity_id DESC LIMIT :limit"
    )
    rows: list[tuple[int, int]] = vocab.db.execute(  # type: ignore[assignment]
        sql,
        {**candidates.params, **hits.params, **kept.params, "clauses": len(rare), "limit": limit},
    ).fetchall()
    if not rows:
        return None
    return Ranking([r[0] for r in rows], rows[0][1], complete=True)


def _recent_matches(
    vocab: vocabulary.Lookup,
    query: search.Query,
    arms: list[tuple[int, list[Arm]]],
    sizes: list[int],
    limit: int,
    types: list[str],
) -> Ranking:
    """For a query of only very common words: the latest matches of the rarest clause,
    whole-word hits in names first, then in observations, then partial-word hits."""
    rarest = min(range(len(arms)), key=lambda i: sizes[i])
    excluded = _excluded_sql(query)
    type_sql = _type_sql(types, "e.")
    found: dict[int, None] = {}
    window = max(4 * limit, 200)
    for arm in sorted(arms[rarest][1], key=lambda a: (-a.factor, a.table != "entities_fts")):
        rows = vocab.db.execute(
            f"SELECT e.id FROM {arm.table} JOIN entities e ON e.id = {arm.entity_sql} "
            f"WHERE {arm.table} MATCH :match AND {type_sql.sql} AND e.id NOT IN "
            f"({excluded.sql}) ORDER BY {arm.table}.rowid DESC LIMIT :window",
            {**type_sql.params, **excluded.params, "match": arm.match, "window": window},
        )
        for (entity_id,) in rows:
            found.setdefault(entity_id, None)
        if len(found) >= limit:
            break
    ids = list(found)[:limit]
    return Ranking(ids, max(len(found), sizes[rarest]), lower_bound=True, complete=True)


def _corrected(
    vocab: vocabulary.Lookup, query: search.Query, limit: int, types: list[str]
) -> Ranking | None:
    """Nothing matched: search again with misspelled words replaced by indexed ones."""
    corrections = {
        w: s for w in dict.fromkeys(query.words) if (s := vocab.closest_word(w)) is not None
    }
    if not corrections:
        return None
    fixed = search.Query(
        required=[
            search.Clause(
                tuple(
                    search.Term(
                        tuple(corrections.get(w, w) for w in t.words),
                        t.prefix,
                        t.exact,
                        t.name_only,
                    )
                    for t in c.terms
                )
            )
            for c in query.required
        ],
        excluded=query.excluded,
        entity_types=query.entity_types,
        excluded_types=query.excluded_types,
        text=query.text,
    )
    ranking = _ranked(vocab, fixed, limit, types)
    ranking.searched = fixed
    ranking.corrected = search.corrected_text(query, corrections)
    ranking.suggestions = list(dict.fromkeys(corrections.values()))
    return ranking


# ---- snippets --------------------------------------------------------------------------------


_SNIPPETS_SQL = """\
SELECT rowid >> :bits, rowid,
    snippet(observations_fts, 0, :start, :end, '…', :tokens), bm25(observations_fts)
FROM observations_fts
WHERE observations_fts MATCH :match AND (rowid >> :bits) IN (SELECT value FROM json_each(:ids))
"""


def snippets(vocab: vocabulary.Lookup, query: search.Query, ids: list[int]) -> dict[int, list[str]]:
    """Up to :data:`SNIPPETS_PER_ENTITY` best-matching observation fragments per entity."""
    expression = " OR ".join(
        f"({arm.match})"
        for clause in query.required
        for arm in _arms(vocab, clause)
        if arm.table == "observations_fts"
    )
    if not expression:
        return {}
    start, end = SNIPPET_MARKS
    # One statement for all the entities, not one each: every statement pays bm25's pass over
    # the doclists of the query's words (and an infix widening can OR 64 of them), so 20
    # statements cost 20 such passes (63k entities: 100-330 ms for a common or widened word,
    # against 10-50 ms once). The same scores, grouped and ordered here.
    found: dict[int, list[tuple[float, int, str]]] = {entity_id: [] for entity_id in ids}
    for entity_id, rowid, fragment, score in vocab.db.execute(
        _SNIPPETS_SQL,
        {
            "bits": OBSERVATION_ID_BITS,
            "start": start,
            "end": end,
            "tokens": SNIPPET_TOKENS,
            "match": expression,
            "ids": json.dumps(ids),
        },
    ):
        found[entity_id].append((score, rowid, fragment))
    return {
        entity_id: [fragment for _, _, fragment in sorted(rows)[:SNIPPETS_PER_ENTITY]]
        for entity_id, rows in found.items()
    }

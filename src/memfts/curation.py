"""Curation and browsing: what ``memfts ui`` and the CLI's rename, set-type, edit-observation,
delete-observation, delete, merge and duplicates commands do to the memory, and the reads the
page shows (entity detail, neighbourhood, recent changes, entity types, likely duplicates).

The MCP tools never call these: they are :class:`~memfts.store.Store`'s. A :class:`Curation`
works on a store's file through the store's transactions, as another of its writers.
"""

from __future__ import annotations

import json
from textwrap import dedent
from typing import cast

import apsw
from pydantic import BaseModel, TypeAdapter, ValidationError

from memfts.duplicates import name_key
from memfts.errors import (
    DuplicateObservationError,
    EntityNotFoundError,
    InvalidInputError,
    NameTakenError,
    ObservationNotFoundError,
)
from memfts.models import (
    DeleteReport,
    DuplicateCandidate,
    DuplicateGroup,
    Duplicates,
    EntityDetail,
    GraphNode,
    LinkedRelation,
    MergeReport,
    Name,
    Neighbourhood,
    RecentEntity,
    Relation,
    RenameReport,
    Text,
)
from memfts.store import Store, _insert_observations, _now_us


class Curation:
    """Rename, retype, edit, delete and merge in one store, and the page's reads of it.

    Each write is one transaction, its input checked as the tools check theirs (same rules,
    same limits). The entities it changes become recently changed, and new text goes through
    the store's known words (remember, then learned) like every other write's.
    """

    def __init__(self, store: Store) -> None:
        # what every write of the store's does, shared rather than copied: its transactions,
        # its input limits, and what a write keeps in step (vectors, the words search knows)
        self._write = store._write
        self._read = store._read
        self._embed = store._embed
        self._known_words = store._known_words
        self._check_name = store._check_name
        self._check_observations = store._check_observations

    # ---- writes --------------------------------------------------------------------------

    def rename_entity(self, name: str, new_name: str) -> RenameReport:
        """Rename an entity; relations naming it, at either end, follow the new name.

        Refused if another entity has the new name (merge the two instead). Relations written
        with the new name before any entity had it now reach this one; one that would repeat
        a relation the new name already has is dropped.
        """
        new_name = self._checked_name("new name", new_name)
        with self._write() as db:
            entity_id = _entity_id(db, name)
            if new_name == name:
                return RenameReport(old=name, new=name, relations_moved=0, relations_merged=0)
            if db.execute("SELECT 1 FROM entities WHERE name = ?", (new_name,)).get:
                raise NameTakenError(
                    f"an entity named {new_name!r} exists already: merge {name!r} into it instead"
                )
            db.execute(
                "UPDATE entities SET name = :new, updated_at = :now WHERE id = :id",
                {"new": new_name, "now": _now_us(), "id": entity_id},
            )
            moved, merged = _repoint_relations(db, name, new_name)
            self._embed(db, [entity_id])
            words = self._known_words.remember(db, [new_name])
        self._known_words.learned(words)
        return RenameReport(old=name, new=new_name, relations_moved=moved, relations_merged=merged)

    def set_entity_type(self, name: str, entity_type: str) -> None:
        """Change an entity's type."""
        entity_type = self._checked_name("entity type", entity_type)
        with self._write() as db:
            entity_id = _entity_id(db, name)
            db.execute(
                "UPDATE entities SET entity_type = :type, updated_at = :now "
                "WHERE id = :id AND entity_type != :type",
                {"type": entity_type, "now": _now_us(), "id": entity_id},
            )
            self._embed(db, [entity_id])
            words = self._known_words.remember(db, [entity_type])
        self._known_words.learned(words)

    def edit_observation(self, name: str, old: str, new: str) -> None:
        """Replace the text of one observation, which keeps its place among the entity's.

        ``old`` is the observation's current text: if it changed meanwhile, nothing is edited.
        """
        new = self._checked_observation(name, new)
        with self._write() as db:
            entity_id = _entity_id(db, name)
            observation_id = _observation_id(db, entity_id, name, old)
            if new == old:
                return
            same = _observation_position(db, entity_id, new)
            if same is not None:
                raise DuplicateObservationError(
                    f"{name!r} already has this observation (number {same}): delete this one "
                    "instead of editing it"
                )
            db.execute("UPDATE observations SET content = ? WHERE id = ?", (new, observation_id))
            _touch(db, entity_id)
            self._embed(db, [entity_id])
            words = self._known_words.remember(db, [new])
        self._known_words.learned(words)

    def delete_observation(self, name: str, content: str) -> None:
        """Delete one observation, given by its exact text; an error if it is not there."""
        with self._write() as db:
            entity_id = _entity_id(db, name)
            observation_id = _observation_id(db, entity_id, name, content)
            db.execute("DELETE FROM observations WHERE id = ?", (observation_id,))
            _touch(db, entity_id)
            self._embed(db, [entity_id])

    def delete_entity(self, name: str, *, dry_run: bool = False) -> DeleteReport:
        """Delete one entity, its observations and every relation naming it (at either end).

        With ``dry_run`` nothing changes: the report says what would go.
        """
        try:
            with self._write() as db:
                entity_id = _entity_id(db, name)
                report = DeleteReport(
                    name=name,
                    entityType=db.execute(
                        "SELECT entity_type FROM entities WHERE id = ?", (entity_id,)
                    ).get,
                    observations=_count(db, "observations WHERE entity_id = ?", entity_id),
                    relations=_count(db, "relations WHERE from_name = ?1 OR to_name = ?1", name),
                )
                db.execute("DELETE FROM entities WHERE id = ?", (entity_id,))
                db.execute("DELETE FROM relations WHERE from_name = ?1 OR to_name = ?1", (name,))
                if dry_run:
                    raise _DryRun(report)
        except _DryRun as done:
            return cast(DeleteReport, done.report)
        return report

    def merge_entities(self, source: str, target: str, *, dry_run: bool = False) -> MergeReport:
        """Merge ``source`` into ``target``, which keeps its name and type; ``source`` is gone.

        The source's observations are appended to the target's, in order, except those the
        target has. Its relations are re-pointed to the target; one the target already has is
        dropped, and so are relations between the two (they would relate the target to
        itself; they said how the duplicates relate). The source's relations to itself become
        the target's. With ``dry_run`` nothing changes: the report says what would.
        """
        if source == target:
            raise InvalidInputError(f"cannot merge {source!r} into itself: name another entity")
        try:
            with self._write() as db:
                source_id = _entity_id(db, source)
                target_id = _entity_id(db, target)
                contents = [
                    content
                    for (content,) in db.execute(
                        "SELECT content FROM observations WHERE entity_id = ? ORDER BY id",
                        (source_id,),
                    )
                ]
                added = _insert_observations(db, target_id, contents)
                between = _count(
                    db,
                    "relations WHERE from_name = :a AND to_name = :b "
                    "OR from_name = :b AND to_name = :a",
                    {"a": source, "b": target},
                )
                db.execute(
                    "DELETE FROM relations WHERE from_name = :a AND to_name = :b "
                    "OR from_name = :b AND to_name = :a",
                    {"a": source, "b": target},
                )
                moved, shared = _repoint_relations(db, source, target)
                db.execute("DELETE FROM entities WHERE id = ?", (source_id,))
                _touch(db, target_id)
                self._embed(db, [target_id])
                report = MergeReport(
                    source=source,
                    target=target,
                    observations_added=len(added),
                    observations_shared=len(contents) - len(added),
                    relations_moved=moved,
                    relations_shared=shared,
                    relations_between=between,
                )
                if dry_run:
                    raise _DryRun(report)
        except _DryRun as done:
            return cast(MergeReport, done.report)
        return report

    # ---- reads ---------------------------------------------------------------------------

    def likely_duplicates(self, limit: int = 100) -> Duplicates:
        """Groups of entities whose names differ only by case, accents, punctuation, spacing
        or a plural ending (:func:`memfts.duplicates.name_key`), the most recently changed
        group first; in each, the suggested merge target first (most observations, oldest)."""
        with self._read() as db:
            by_key: dict[str, list[int]] = {}
            for entity_id, name in db.execute("SELECT id, name FROM entities"):
                by_key.setdefault(name_key(name), []).append(entity_id)
            groups = {key: ids for key, ids in by_key.items() if len(ids) > 1}
            rows = db.execute(
                dedent(
                    """\
                    SELECT e.id, e.name, e.entity_type, e.updated_at,
                        (SELECT count(*) FROM observations o WHERE o.entity_id = e.id),
                        (SELECT count(*) FROM relations r
                            WHERE r.from_name = e.name OR r.to_name = e.name)
                    FROM entities e WHERE e.id IN (SELECT value FROM json_each(:ids))
                    """
                ),
                {"ids": json.dumps([i for ids in groups.values() for i in ids])},
            ).fetchall()
        candidates = {
            row[0]: (
                row[3],
                DuplicateCandidate(
                    name=row[1], entityType=row[2], observations=row[4], relations=row[5]
                ),
            )
            for row in cast(list[tuple[int, str, str, int, int, int]], rows)
        }
        newest_first = sorted(
            groups.items(), key=lambda g: max(candidates[i][0] for i in g[1]), reverse=True
        )
        return Duplicates(
            total_groups=len(groups),
            groups=[
                DuplicateGroup(
                    key=key,
                    entities=[
                        candidates[i][1]
                        for i in sorted(ids, key=lambda i: (-candidates[i][1].observations, i))
                    ],
                )
                for key, ids in newest_first[:limit]
            ],
        )

    def entity_detail(self, name: str, max_relations: int = 500) -> EntityDetail | None:
        """An entity, its observations in order and its relations both ways (the first
        ``max_relations`` each way, oldest first), or None if there is no such entity."""
        with self._read() as db:
            row = db.execute(
                "SELECT id, entity_type, updated_at FROM entities WHERE name = ?", (name,)
            ).get
            if row is None:
                return None
            entity_id, entity_type, updated_at = row
            observations = [
                content
                for (content,) in db.execute(
                    "SELECT content FROM observations WHERE entity_id = ? ORDER BY id",
                    (entity_id,),
                )
            ]
            linked = {}
            for near, far in (("from_name", "to_name"), ("to_name", "from_name")):
                linked[near] = [
                    LinkedRelation(relationType=rt, other=other, otherType=other_type)
                    for rt, other, other_type in db.execute(
                        f"SELECT r.relation_type, r.{far}, e.entity_type FROM relations r "
                        f"LEFT JOIN entities e ON e.name = r.{far} WHERE r.{near} = :name "
                        "ORDER BY r.id LIMIT :limit",
                        {"name": name, "limit": max_relations},
                    )
                ]
            return EntityDetail(
                name=name,
                entityType=entity_type,
                observations=observations,
                updated_at=updated_at,
                outgoing=linked["from_name"],
                incoming=linked["to_name"],
                outgoing_total=_count(db, "relations WHERE from_name = ?", name),
                incoming_total=_count(db, "relations WHERE to_name = ?", name),
            )

    def recent_changes(self, limit: int = 50) -> list[RecentEntity]:
        """The most recently changed entities, newest first."""
        with self._read() as db:
            return [
                RecentEntity(name=n, entityType=t, updated_at=u, observations=c)
                for n, t, u, c in db.execute(
                    "SELECT name, entity_type, updated_at, "
                    "(SELECT count(*) FROM observations o WHERE o.entity_id = e.id) "
                    "FROM entities e ORDER BY updated_at DESC, id DESC LIMIT ?",
                    (limit,),
                )
            ]

    def neighbourhood(self, name: str, depth: int = 1, max_nodes: int = 50) -> Neighbourhood:
        """``name`` and the names related to it within ``depth`` (1 or 2) relations, oldest
        relations first, at most ``max_nodes`` in all, and the relations among them.

        At depth 2 the direct neighbours take at most half the nodes while their own
        neighbours can use the rest, so a hub's picture still shows a second ring. ``name``
        may be an entity or only a relation's end.
        """
        if depth not in (1, 2):
            raise InvalidInputError(f"depth must be 1 or 2, not {depth}")
        room = max_nodes - 1
        with self._read() as db:
            first = _linked(db, [name], exclude={name})
            keep = first[: room if depth == 1 else room // 2]
            reached: list[tuple[str, str]] = []
            if depth == 2:
                reached = _linked(db, [n for n, _ in keep], exclude={name, *(n for n, _ in first)})
            second = reached[: room - len(keep)]
            # the second ring left room: give it back to the first
            keep = first[: room - len(second)]
            parents: dict[str, tuple[int, str | None]] = {name: (0, None)}
            parents.update((n, (1, at)) for n, at in keep)
            parents.update((n, (2, at)) for n, at in second)
            left_out = len(first) - len(keep) + len(reached) - len(second)
            names = json.dumps(list(parents))
            types: dict[str, str] = dict(
                db.execute(  # type: ignore[arg-type]
                    "SELECT name, entity_type FROM entities "
                    "WHERE name IN (SELECT value FROM json_each(?))",
                    (names,),
                ).fetchall()
            )
            relations = [
                Relation.model_construct(from_=f, to=t, relationType=rt)
                for f, t, rt in db.execute(
                    "SELECT from_name, to_name, relation_type FROM relations "
                    "WHERE from_name IN (SELECT value FROM json_each(:names)) "
                    "AND to_name IN (SELECT value FROM json_each(:names)) ORDER BY id",
                    {"names": names},
                )
            ]
        return Neighbourhood(
            centre=name,
            depth=depth,
            nodes=[
                GraphNode(name=n, entityType=types.get(n), depth=d, parent=p)
                for n, (d, p) in parents.items()
            ],
            relations=relations,
            left_out=left_out,
        )

    def entity_types(self, limit: int = 50) -> list[tuple[str, int]]:
        """The commonest entity types and how many entities have each, commonest first."""
        with self._read() as db:
            return [
                (entity_type, count)
                for entity_type, count in db.execute(
                    "SELECT entity_type, count(*) FROM entities GROUP BY entity_type "
                    "ORDER BY 2 DESC, 1 LIMIT ?",
                    (limit,),
                )
            ]

    # ---- checks on input -----------------------------------------------------------------

    def _checked_name(self, what: str, value: str) -> str:
        """A name or type as the tools accept it (non-blank Unicode, no NUL, within limits)."""
        try:
            value = _NAME.validate_python(value)
        except ValidationError as exc:
            raise InvalidInputError(f"{what}: {_problem(exc)}") from None
        self._check_name(what, value)
        return value

    def _checked_observation(self, owner: str, value: str) -> str:
        try:
            value = _TEXT.validate_python(value)
        except ValidationError as exc:
            raise InvalidInputError(f"observation of {owner!r}: {_problem(exc)}") from None
        if not value.strip():
            raise InvalidInputError(
                f"observation of {owner!r}: must not be empty (delete it instead)"
            )
        self._check_observations(owner, [value])
        return value


NEIGHBOUR_ROWS = 20_000
"""Most relations one step of :meth:`Curation.neighbourhood` reads (a hub can have thousands)."""

_NEIGHBOURS_SQL = dedent(
    """\
    SELECT at, from_name, to_name FROM (
        SELECT r.id, f.value AS at, r.from_name, r.to_name
        FROM json_each(:names) f JOIN relations r ON r.from_name = f.value
        UNION ALL
        SELECT r.id, f.value, r.from_name, r.to_name
        FROM json_each(:names) f JOIN relations r ON r.to_name = f.value
    ) ORDER BY id LIMIT :limit
    """
)

_NAME: TypeAdapter[str] = TypeAdapter(Name)
_TEXT: TypeAdapter[str] = TypeAdapter(Text)


class _DryRun(Exception):
    """Raised inside a write transaction to roll it back, carrying what it would have done."""

    def __init__(self, report: BaseModel) -> None:
        super().__init__("dry run")
        self.report = report


def _linked(db: apsw.Connection, names: list[str], exclude: set[str]) -> list[tuple[str, str]]:
    """``(neighbour, the name it is related to)`` for the names related to any of ``names``,
    each once, by their oldest relation first; none of ``exclude``."""
    found: dict[str, str] = {}
    for at, from_name, to_name in db.execute(
        _NEIGHBOURS_SQL, {"names": json.dumps(names), "limit": NEIGHBOUR_ROWS}
    ):
        other = to_name if from_name == at else from_name
        if other not in exclude:
            found.setdefault(other, at)
    return list(found.items())


def _problem(exc: ValidationError) -> str:
    return str(exc.errors(include_url=False)[0]["msg"]).removeprefix("Value error, ")


def _entity_id(db: apsw.Connection, name: str) -> int:
    entity_id = db.execute("SELECT id FROM entities WHERE name = ?", (name,)).get
    if entity_id is None:
        raise EntityNotFoundError(name)
    return int(entity_id)


def _touch(db: apsw.Connection, entity_id: int) -> None:
    """Make the entity recently changed."""
    db.execute("UPDATE entities SET updated_at = ? WHERE id = ?", (_now_us(), entity_id))


def _count(db: apsw.Connection, where: str, params: object) -> int:
    """``count(*)`` of ``FROM <where>``; ``params`` one value or the statement's bindings."""
    bindings = params if isinstance(params, dict | tuple) else (params,)
    return int(db.execute(f"SELECT count(*) FROM {where}", bindings).get)


def _observation_id(db: apsw.Connection, entity_id: int, name: str, content: str) -> int:
    found = db.execute(
        "SELECT id FROM observations WHERE entity_id = ? AND content = ?", (entity_id, content)
    ).get
    if found is None:
        shown = content if len(content) <= 60 else content[:57] + "..."
        raise ObservationNotFoundError(
            f"{name!r} has no observation {shown!r} (it may have changed meanwhile): reload "
            "the entity and try again"
        )
    return int(found)


def _observation_position(db: apsw.Connection, entity_id: int, content: str) -> int | None:
    """1 for the entity's first observation...; None if it has no such observation."""
    position = db.execute(
        "SELECT (SELECT count(*) FROM observations o WHERE o.entity_id = :e AND o.id <= x.id) "
        "FROM observations x WHERE x.entity_id = :e AND x.content = :content",
        {"e": entity_id, "content": content},
    ).get
    return None if position is None else int(position)


def _repoint_relations(db: apsw.Connection, old: str, new: str) -> tuple[int, int]:
    """Make every relation naming ``old`` (at either end) name ``new`` instead; one that
    would repeat a relation already there is dropped. Returns ``(moved, dropped)``."""
    names = {"old": old, "new": new}
    before = _count(db, "relations WHERE from_name = :old OR to_name = :old", names)
    # OR IGNORE leaves a row that would collide as it is; the DELETE then drops it (REPLACE
    # would delete the row already there instead, changing its id and so its order)
    db.execute("UPDATE OR IGNORE relations SET from_name = :new WHERE from_name = :old", names)
    db.execute("UPDATE OR IGNORE relations SET to_name = :new WHERE to_name = :old", names)
    dropped = len(
        db.execute(
            "DELETE FROM relations WHERE from_name = :old OR to_name = :old RETURNING id", names
        ).fetchall()
    )
    return before - dropped, dropped

"""The data that crosses memfts' boundaries: the graph, tool arguments and tool results.

Field names and shapes follow the official memory server exactly (``entityType``,
``from``/``to``/``relationType``, ``entityName``/``contents``...), so a client written for it
works unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Literal, NamedTuple

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def _clean_text(value: str) -> str:
    """Refuse text SQLite or a JSON reader would mangle, naming what was wrong."""
    if "\x00" in value:
        raise ValueError("text must not contain NUL (\\u0000) characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"text is not valid Unicode (lone surrogate at position {exc.start})"
        ) from None
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty or only whitespace")
    return value


Text = Annotated[str, AfterValidator(_clean_text)]
"""Any stored string: valid Unicode, no NUL."""

Name = Annotated[str, AfterValidator(_clean_text), AfterValidator(_not_blank)]
"""An entity name, entity type or relation type: a non-blank :data:`Text`."""


class Entity(BaseModel):
    name: Name = Field(description="The name of the entity")
    entityType: Name = Field(description="The type of the entity")
    observations: list[Text] = Field(
        default_factory=list,
        description="An array of observation contents associated with the entity",
    )


class Relation(BaseModel):
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    from_: Name = Field(
        alias="from", description="The name of the entity where the relation starts"
    )
    to: Name = Field(description="The name of the entity where the relation ends")
    relationType: Name = Field(description="The type of the relation")


class KnowledgeGraph(BaseModel):
    entities: list[Entity]
    relations: list[Relation]


NEXT_CURSOR_DESCRIPTION = (
    "Present when more follows: call the tool again with the same arguments and this as "
    "`cursor` for the next page"
)
NOTE_DESCRIPTION = (
    "Present on a partial result: what this page holds (cut to fit, or a search cut short by "
    "its time limit) and how to get the rest"
)


class GraphPosition(NamedTuple):
    """Where a walk over the graph stands: after the entity (or, once every entity has been
    given, the relation) with this id. ``GraphPosition()`` is the start."""

    in_relations: bool = False
    after_id: int = 0


class GraphStep(NamedTuple):
    """One item of a walk over the graph, with the position just after it."""

    position: GraphPosition
    item: Entity | Relation


class GraphEntity(BaseModel):
    """An entity in a ``read_graph`` or ``open_nodes`` result: the official shape, or lighter
    when the caller sets ``maxObservations``."""

    name: str = Field(description="The name of the entity")
    entityType: str = Field(description="The type of the entity")
    observations: list[str] | None = Field(
        default=None,
        description="An array of observation contents associated with the entity "
        "(the first `maxObservations` when set; left out when it is 0)",
    )
    omittedObservations: int | None = Field(
        default=None, description="How many observations `maxObservations` left out"
    )


class GraphPage(BaseModel):
    """The whole graph (or the named entities) as the official server returns it, or one page
    of it when it is larger than the result budget or the caller asked for pages."""

    entities: list[GraphEntity]
    relations: list[Relation]
    nextCursor: str | None = Field(default=None, description=NEXT_CURSOR_DESCRIPTION)
    note: str | None = Field(default=None, description=NOTE_DESCRIPTION)


class SearchHit(BaseModel):
    """An entity as search returns it: the official shape, plus snippets when asked for.

    In compact mode ``observations`` is left out, so a model can scan many hits cheaply.
    """

    name: str
    entityType: str
    observations: list[str] | None = Field(
        default=None, description="All observations, in order (left out in compact mode)"
    )
    snippets: list[str] | None = Field(
        default=None,
        description="The best-matching observation fragments, matched words in **bold**",
    )
    foundBy: list[Literal["lexical", "semantic"]] | None = Field(
        default=None,
        description="With semantic search installed: what found the entity, its words "
        "(lexical), its meaning (semantic), or both",
    )


class SearchResult(BaseModel):
    """A ranked page of a search: the official graph shape plus how many entities matched."""

    entities: list[SearchHit]
    relations: list[Relation] | None = Field(
        default=None, description="Relations touching the returned entities (not in compact mode)"
    )
    total: int = Field(
        description="How many entities matched in all; more than returned means raise `limit` "
        "or refine the query"
    )
    totalIsLowerBound: bool | None = Field(
        default=None,
        description="Present when the query's words are so common that matches were not all "
        "counted: at least `total` matched",
    )
    withEveryWord: int | None = Field(
        default=None,
        description="Present when some matches hold only some of the query's words: how many "
        "hold every word (they come first; the rest of the page is the best partial matches); "
        "a lower bound when totalIsLowerBound is",
    )
    correctedQuery: str | None = Field(
        default=None,
        description="Present when nothing matched the query as typed and these corrected words "
        "were searched instead",
    )
    suggestions: list[str] | None = Field(
        default=None, description="Indexed words close to query words that matched nothing"
    )
    nextCursor: str | None = Field(default=None, description=NEXT_CURSOR_DESCRIPTION)
    note: str | None = Field(default=None, description=NOTE_DESCRIPTION)


class SearchStep(NamedTuple):
    """One hit of a search walk, with the relations touching it (by id; compact: none)."""

    hit: SearchHit
    relations: list[tuple[int, Relation]]


@dataclass
class SearchWalk:
    """A ranked search whose hits are loaded as they are asked for (``Store.walk_search``):
    what the ranking found out, then the hits in rank order, related entities after them.
    A page cut to the result budget loads only the hits it holds."""

    head: SearchResult
    """The result without its hits: ``entities`` empty, ``relations`` empty (None in compact
    mode); its ``note`` is made of :attr:`notes` by :meth:`result`."""
    steps: Iterator[SearchStep]
    ranked: int
    """How many hits the ranking gave (related entities come after them)."""
    notes: list[str] = field(default_factory=list)
    """What the search found out, growing as the walk goes (a time limit met)."""
    related: int | None = None
    """How many related entities follow the ranked hits, once looked up (None: not yet)."""

    def result(self, hits: list[SearchHit], relations: list[Relation] | None) -> SearchResult:
        """The result holding ``hits`` and ``relations``, noted with what is known now."""
        return self.head.model_copy(
            update={"entities": hits, "relations": relations, "note": " ".join(self.notes) or None}
        )


class ObservationAddition(BaseModel):
    entityName: Name = Field(description="The name of the entity to add the observations to")
    contents: list[Text] = Field(description="An array of observation contents to add")


class ObservationDeletion(BaseModel):
    entityName: Name = Field(description="The name of the entity containing the observations")
    observations: list[Text] = Field(description="An array of observations to delete")


class AddedObservations(BaseModel):
    entityName: str
    addedObservations: list[str]


class CreatedEntities(BaseModel):
    entities: list[Entity]


class CreatedRelations(BaseModel):
    relations: list[Relation]


class AddedObservationsResult(BaseModel):
    results: list[AddedObservations]


class DeleteResult(BaseModel):
    success: bool
    message: str


class ImportCounts(BaseModel):
    """What one import batch changed; "skipped" items were already stored."""

    entities_added: int = 0
    entities_skipped: int = 0
    observations_added: int = 0
    observations_skipped: int = 0
    relations_added: int = 0
    relations_skipped: int = 0

    def __iadd__(self, other: ImportCounts) -> ImportCounts:
        for name in type(self).model_fields:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self


class HealthReport(BaseModel):
    """Result of ``memfts check``: both integrity checks and the row counts."""

    ok: bool
    sqlite_integrity: str = Field(description='"ok" or the first problems integrity_check found')
    fts_integrity: str = Field(description='"ok" or the error of the FTS5 integrity-check')
    entities: int | None = Field(description="row count, null if the table cannot be read")
    observations: int | None
    relations: int | None
    orphaned_rows: int | None = Field(
        default=0,
        description="rows that belong to nothing (observations of an entity another tool "
        "deleted with foreign keys off); null if they cannot be counted",
    )
    removed_orphans: int = Field(default=0, description="orphaned rows --repair removed")


class BackupReport(BaseModel):
    """Result of ``memfts backup`` and ``memfts restore``: the file written and what it holds."""

    path: str
    bytes: int
    seconds: float
    entities: int
    observations: int
    relations: int
    replaced: str | None = Field(
        default=None, description="restore: where the database it replaced was kept"
    )


class StoreStats(BaseModel):
    path: str
    schema_version: int
    entities: int
    observations: int
    relations: int
    entity_types: int
    db_bytes: int
    wal_bytes: int


class EmbedCounts(BaseModel):
    """What ``memfts embed`` did: entities given a vector now, and how many had one."""

    model: str = Field(description="The embedding model the vectors are from")
    embedded: int = Field(description="Entities given a vector by this run")
    entities: int = Field(description="Entities in the store")


# ---- curation and browsing (memfts ui and the CLI's curation commands) ---------------------


class RenameReport(BaseModel):
    """What renaming an entity changed."""

    old: str
    new: str
    relations_moved: int = Field(description="relations now naming the new name")
    relations_merged: int = Field(
        description="relations dropped because the new name already had them"
    )


class DeleteReport(BaseModel):
    """What deleting an entity removes (or removed)."""

    name: str
    entityType: str
    observations: int
    relations: int


class MergeReport(BaseModel):
    """What merging ``source`` into ``target`` changes (or changed)."""

    source: str
    target: str
    observations_added: int = Field(description="source observations appended to the target")
    observations_shared: int = Field(description="source observations the target already had")
    relations_moved: int = Field(description="source relations now naming the target")
    relations_shared: int = Field(description="source relations the target already had, dropped")
    relations_between: int = Field(
        description="relations between the two, dropped: they would relate the target to itself"
    )

    def summary(self) -> str:
        """One sentence a person can confirm."""
        shared = f" ({self.observations_shared} already there)" if self.observations_shared else ""
        dropped = [
            f"{self.relations_shared} already there" if self.relations_shared else "",
            f"{self.relations_between} between the two dropped" if self.relations_between else "",
        ]
        dropped_text = "; ".join(d for d in dropped if d)
        return (
            f"{self.observations_added} observation{'s' * (self.observations_added != 1)} "
            f"appended to {self.target!r}{shared}; {self.relations_moved} "
            f"relation{'s' * (self.relations_moved != 1)} moved to it"
            + (f" ({dropped_text})" if dropped_text else "")
            + f"; {self.source!r} deleted"
        )


class LinkedRelation(BaseModel):
    """A relation seen from one of its ends: its type and the entity at the other end."""

    relationType: str
    other: str
    otherType: str | None = Field(description="the other end's type; None if no such entity")


class EntityDetail(BaseModel):
    """An entity with everything its page shows."""

    name: str
    entityType: str
    observations: list[str]
    updated_at: int = Field(description="microseconds since the epoch; 0 if never recorded")
    outgoing: list[LinkedRelation]
    incoming: list[LinkedRelation]
    outgoing_total: int
    incoming_total: int


class RecentEntity(BaseModel):
    name: str
    entityType: str
    observations: int
    updated_at: int


class GraphNode(BaseModel):
    name: str
    entityType: str | None = Field(description="None for a name relations use but no entity has")
    depth: int
    parent: str | None = Field(description="the node it was reached from (None at the centre)")


class Neighbourhood(BaseModel):
    """An entity's neighbours within ``depth`` relations, and the relations among them."""

    centre: str
    depth: int
    nodes: list[GraphNode]
    relations: list[Relation]
    left_out: int = Field(description="neighbours not included, past the node limit")


class DuplicateCandidate(BaseModel):
    name: str
    entityType: str
    observations: int
    relations: int


class DuplicateGroup(BaseModel):
    """Entities whose names differ only by case, accents, punctuation, spacing or a plural
    ending; the first is the suggested merge target (most observations, then oldest)."""

    key: str
    entities: list[DuplicateCandidate]


class Duplicates(BaseModel):
    groups: list[DuplicateGroup]
    total_groups: int

"""Tool results as the client receives them: the official JSON text, cut into pages that fit.

MCP clients cap what one tool result may bring into the model's context. Claude Code warns
above 10,000 tokens, refuses more than 25,000 by default (``MAX_MCP_OUTPUT_TOKENS``) and
saves a text result over about 50,000 characters to a file, showing the model a reference and
a 2 KB preview. The official server answers ``read_graph`` with the whole graph whatever its
size, so a large memory becomes an answer the model cannot use.

Here every ``read_graph``, ``open_nodes`` and ``search_nodes`` result is measured as the text
the model reads. Under the budget (``Limits.max_result_chars``: 30,000 characters unless
``MEMFTS_MAX_RESULT_CHARS`` says otherwise; 0 = no budget) it is exactly the official result.
Over it, the first page comes back instead: as many entities (then relations) as fit, a
``nextCursor`` to pass back as ``cursor``, and a one-line ``note`` saying so. A page always
holds at least one item, so a walk always moves on (a single entity larger than the budget
comes alone). Following ``nextCursor`` to the end gives every entity and relation exactly
once, in creation order, as long as nobody writes meanwhile: a walk reads the graph page by
page, not one snapshot.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any, Literal

import pydantic_core
from pydantic import BaseModel

from memfts.errors import BadCursorError
from memfts.models import (
    Entity,
    GraphEntity,
    GraphPage,
    GraphPosition,
    GraphStep,
    Relation,
    SearchHit,
    SearchResult,
    SearchWalk,
)

BUDGET_VARIABLE = "MEMFTS_MAX_RESULT_CHARS"

NOTE_ROOM = 700
"""Characters kept free on a page for ``nextCursor`` and ``note``."""

GraphTool = Literal["read_graph", "open_nodes"]


def official_json(value: Any) -> str:
    """JSON exactly as the official server writes it (``JSON.stringify(x, null, 2)``).

    pydantic-core's encoder writes the same bytes as ``json.dumps(indent=2,
    ensure_ascii=False)`` (tests/test_protocol.py checks), 6x faster: with ``indent``, the
    standard library falls back to its pure-Python encoder."""
    return pydantic_core.to_json(value, indent=2).decode()


def dump(model: BaseModel) -> dict[str, Any]:
    """A result model as ``structuredContent`` (and the text) carry it: no null extras."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def _item_chars(item: dict[str, Any]) -> int:
    """What one list item adds to the text: its JSON, indented two levels deeper (4 spaces a
    line) as a member of a top-level list, and the ``,\\n`` that separates it."""
    text = official_json(item)
    return len(text) + 4 * (text.count("\n") + 1) + 2


# ---- cursors -------------------------------------------------------------------------------


def _fingerprint(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, ensure_ascii=False).encode()).hexdigest()[:16]


def _encode(payload: dict[str, Any]) -> str:
    raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _decode(tool: str, cursor: str) -> dict[str, Any]:
    """The payload of a cursor this server made for ``tool``; one line if it is not one."""
    wrong = (
        f"cursor {cursor[:40]!r} is not one {tool} gave: pass the nextCursor of the previous "
        f"{tool} result unchanged, or leave cursor out to start from the beginning"
    )
    try:
        payload = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):
        raise BadCursorError(wrong) from None
    if not isinstance(payload, dict) or payload.get("tool") != tool:
        raise BadCursorError(wrong)
    return payload


def _whole_number(payload: dict[str, Any], key: str) -> int | None:
    value = payload.get(key)
    if value is not None and (not isinstance(value, int) or value < 0):
        raise BadCursorError(f"cursor is damaged ({key}): pass nextCursor unchanged")
    return value


# ---- read_graph and open_nodes -------------------------------------------------------------


class GraphRequest(BaseModel):
    """A ``read_graph`` or ``open_nodes`` call: what to read and how much of it."""

    tool: GraphTool
    names: list[str] | None = None
    limit: int | None = None
    max_observations: int | None = None
    cursor: str | None = None

    def start(self) -> tuple[GraphPosition, int | None, int | None]:
        """Where the page starts, and its limit and maxObservations: those of the call, else
        those of the call that made the cursor (a cursor alone continues the same walk)."""
        if self.cursor is None:
            return GraphPosition(), self.limit, self.max_observations
        payload = _decode(self.tool, self.cursor)
        if self.names is not None and payload.get("names") != _fingerprint(self.names):
            raise BadCursorError(
                "this cursor belongs to open_nodes with other names: pass the same names as "
                "the call that returned it"
            )
        at = payload.get("at")
        if not (isinstance(at, list) and len(at) == 2 and all(isinstance(v, int) for v in at)):
            raise BadCursorError("cursor is damaged (at): pass nextCursor unchanged")
        limit = self.limit if self.limit is not None else _whole_number(payload, "limit")
        most = self.max_observations
        if most is None:
            most = _whole_number(payload, "maxObservations")
        return GraphPosition(bool(at[0]), at[1]), limit, most

    def cursor_at(self, position: GraphPosition, limit: int | None, most: int | None) -> str:
        payload: dict[str, Any] = {
            "tool": self.tool,
            "at": [int(position.in_relations), position.after_id],
        }
        if limit is not None:
            payload["limit"] = limit
        if most is not None:
            payload["maxObservations"] = most
        if self.names is not None:
            payload["names"] = _fingerprint(self.names)
        return _encode(payload)


def _shaped(entity: Entity, most: int | None) -> GraphEntity:
    observations = entity.observations
    if most is None or len(observations) <= most:
        return GraphEntity.model_construct(
            name=entity.name, entityType=entity.entityType, observations=observations
        )
    return GraphEntity.model_construct(
        name=entity.name,
        entityType=entity.entityType,
        observations=observations[:most] if most else None,
        omittedObservations=len(observations) - most,
    )


class _GraphText:
    """The exact length of ``{"entities": [...], "relations": [...]}`` as items are added."""

    EMPTY = len(official_json({"entities": [], "relations": []}))

    def __init__(self) -> None:
        self.chars = self.EMPTY
        self.counts = {"entities": 0, "relations": 0}

    def cost(self, key: str, item: dict[str, Any]) -> int:
        # a list's first item turns "[]" into "[\n" ... "\n  ]": 4 more, less the last ",\n"
        return _item_chars(item) + (2 if self.counts[key] == 0 else 0)

    def add(self, key: str, chars: int) -> None:
        self.chars += chars
        self.counts[key] += 1


def graph_page(
    steps: Iterator[GraphStep],
    request: GraphRequest,
    budget: int,
    totals: Callable[[], tuple[int, int]] | None = None,
) -> GraphPage:
    """The page of ``steps`` (a walk from the request's start) that fits ``budget`` and the
    request's limit: the whole walk, exactly as the official server gives it, when it fits.

    ``totals`` (entities, relations in all) is only called, after ``steps`` is closed (its
    read snapshot released), to word the note of a partial page.
    """
    _, limit, most = request.start()
    entities: list[GraphEntity] = []
    relations: list[Relation] = []
    sizes: list[int] = []
    positions: list[GraphPosition] = []
    text = _GraphText()
    more = False
    try:
        for position, item in steps:
            if limit is not None and len(positions) >= limit:
                more = True
                break
            shaped = item if isinstance(item, Relation) else _shaped(item, most)
            key = "relations" if isinstance(shaped, Relation) else "entities"
            cost = text.cost(key, dump(shaped))
            if budget and positions and text.chars + cost > budget:
                more = True
                break
            text.add(key, cost)
            sizes.append(cost)
            positions.append(position)
            if isinstance(shaped, Relation):
                relations.append(shaped)
            else:
                entities.append(shaped)
    finally:
        close = getattr(steps, "close", None)
        if close is not None:
            close()
    if not more:
        return GraphPage(entities=entities, relations=relations)
    # room for nextCursor and the note; a page keeps at least one item
    while budget and len(positions) > 1 and text.chars + NOTE_ROOM > budget:
        text.chars -= sizes.pop()
        positions.pop()
        (relations if relations else entities).pop()
    cursor = request.cursor_at(positions[-1], limit, most)
    page = GraphPage(entities=entities, relations=relations, nextCursor=cursor)
    page.note = _graph_note(request, page, budget, limit, totals)
    return page


def _many(count: int, one: str, many: str) -> str:
    return f"{count:,} {one if count == 1 else many}"


def _graph_note(
    request: GraphRequest,
    page: GraphPage,
    budget: int,
    limit: int | None,
    totals: Callable[[], tuple[int, int]] | None,
) -> str:
    held = f"{_many(len(page.entities), 'entity', 'entities')} and " + _many(
        len(page.relations), "relation", "relations"
    )
    if totals is not None:
        entities, relations = totals()
        held += f" (of {entities:,} and {relations:,} in all)"
    cut = (
        f"cut to fit {budget:,} characters ({BUDGET_VARIABLE})"
        if limit is None or len(page.entities) + len(page.relations) < limit
        else f"limit {limit}"
    )
    again = (
        "call read_graph with cursor set to nextCursor"
        if request.tool == "read_graph"
        else "call open_nodes with the same names and cursor set to nextCursor"
    )
    return (
        f"Partial result, {cut}: this page holds {held}, entities first, in creation order. "
        f"For the next page {again}; to see more at once ask for less: maxObservations: 0 "
        "(names and types only), or search_nodes for what you need."
    )


# ---- search_nodes --------------------------------------------------------------------------


def search_offset(cursor: str | None, arguments: dict[str, Any]) -> int:
    """Where a ``search_nodes`` page starts: 0, or the offset a cursor made for these very
    arguments holds (the search runs again, so it must be the same search)."""
    if cursor is None:
        return 0
    payload = _decode("search_nodes", cursor)
    if payload.get("args") != _fingerprint(arguments):
        raise BadCursorError(
            "this cursor belongs to another search: call search_nodes with the same "
            "arguments as the call that returned it, plus the cursor"
        )
    return _whole_number(payload, "offset") or 0


def search_page(
    walk: SearchWalk, offset: int, arguments: dict[str, Any], budget: int
) -> SearchResult:
    """The search ``walk`` (started at ``offset``) as the official result when its text fits
    ``budget``; else the hits that fit, with the relations touching them, ``nextCursor`` and
    a note. Only the hits read are loaded: a page of a search asking for 10,000 hits loads
    the few dozen it holds (and a few hundred characters more, to tell whether the whole
    result would fit)."""
    compact = walk.head.relations is None
    head = _SearchHead(walk)
    hits: list[SearchHit] = []
    relations: dict[int, Relation] = {}
    cut: int | None = None  # the hits the page holds, once it is full
    page_chars = whole_chars = 0  # the items' text: on the page, in the whole result
    more = False
    for hit, touching in walk.steps:
        new = [(i, r) for i, r in touching if i not in relations]
        cost = _item_chars(dump(hit)) + sum(_item_chars(dump(r)) for _, r in new)
        # a list's first item turns "[]" into "[\n" ... "\n  ]": 4 more, less the last ",\n"
        whole_chars += cost + (2 if not hits else 0) + (2 if new and not relations else 0)
        full = budget and head.chars() + NOTE_ROOM + page_chars + cost > budget
        if cut is None and hits and full:
            cut = len(hits)
        if cut is not None and (offset or head.chars() + whole_chars > budget):
            more = True
            break
        hits.append(hit)
        relations.update(new)
        if cut is None:
            page_chars += cost
    if not more and not offset and (not budget or head.chars() + whole_chars <= budget):
        return walk.result(hits, None if compact else [relations[i] for i in sorted(relations)])
    page_hits = hits if cut is None else hits[:cut]
    names = {hit.name for hit in page_hits}
    page = walk.result(
        page_hits,
        None
        if compact
        else [r for i, r in sorted(relations.items()) if r.from_ in names or r.to in names],
    )
    if more or len(page_hits) < len(hits):
        end = offset + len(page_hits)
        page.nextCursor = _encode(
            {"tool": "search_nodes", "offset": end, "args": _fingerprint(arguments)}
        )
        paging = (
            f"Partial result, cut to fit {budget:,} characters ({BUDGET_VARIABLE}): "
            f"hits {offset + 1:,}-{end:,} of {_returned(walk)} ({walk.head.total:,} matched). "
            "For the next page call search_nodes with the same arguments and cursor set to "
            "nextCursor; to see more at once ask for less: compact: true (names, types, "
            "snippets), a smaller limit, or depth 0."
        )
        # a search cut short by its time limit says so first
        page.note = f"{page.note} {paging}" if page.note else paging
    return page


def _returned(walk: SearchWalk) -> str:
    """How many hits the search returns in all, as far as the walk knows."""
    if walk.related is None:
        return f"the {walk.ranked:,} this search ranks, then the entities related to them"
    return f"the {walk.ranked + walk.related:,} this search returns"


class _SearchHead:
    """The length of a search result's text without its hits and relations, as its notes
    stand (they grow when the walk meets the time limit)."""

    def __init__(self, walk: SearchWalk) -> None:
        self.walk = walk
        self._notes = -1
        self._chars = 0

    def chars(self) -> int:
        if len(self.walk.notes) != self._notes:
            self._notes = len(self.walk.notes)
            self._chars = len(official_json(dump(self.walk.result([], self.walk.head.relations))))
        return self._chars

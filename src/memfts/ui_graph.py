"""Where the graph view draws each node: a radial layout computed on the server, no library.

The centre entity sits in the middle, its neighbours on a ring around it, and at depth 2 each
neighbour's own neighbours on an outer ring, inside the angle its parent was given (wider for
a parent with more children), so the tree reads outwards. Names run outwards along their
node's radius (turned to read left to right), so names on one ring never cross: the rings are
as large as it takes for neighbouring nodes to be a line apart, and at depth 2 the outer ring
starts where the inner ring's names end; an inner name runs level beside its node instead
wherever that covers no other name or node. Names are cut to a width (the full name is the
node's tooltip). Relations that do not follow the tree are drawn dashed. The same input
always gives the same picture (no random start, unlike a force layout), which a person
comparing two visits and a screenshot test both need.
"""

from __future__ import annotations

import itertools
import math
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

from memfts.models import Neighbourhood

CHAR_WIDTH = 7.0
"""Rough width of a small letter at the page's 12-unit font (see :func:`text_width`)."""

LABEL_WIDTH = 196.0
"""Longer names are cut (with …) to about 28 letters on the picture."""

INNER_LABEL_WIDTH = 150.0
"""At depth 2 the inner ring's names are cut shorter: the outer ring starts past them."""

LINE_GAP = 18.0
"""Least distance between neighbouring nodes on a ring: one label line and some air."""

LEAST_RADIUS = 120.0
"""The inner ring's radius when few nodes are on it: room for the centre's name."""

NODE_RADIUS = 7.0
CENTRE_RADIUS = 11.0
LABEL_GAP = NODE_RADIUS + 5.0
"""From a node's centre to the start of its name."""

PALETTE_SIZE = 12
"""Colours for entity types (CSS classes t0..t11), the commonest types first; rarer types
share them (the legend says which)."""


@dataclass
class PlacedNode:
    index: int
    name: str
    entity_type: str | None
    depth: int
    x: float
    y: float
    label: str
    label_x: float
    label_y: float
    label_rotate: float
    label_anchor: str
    colour: int
    self_relations: list[str] = field(default_factory=list)


@dataclass
class PlacedEdge:
    a: int
    b: int
    path: str
    """SVG path data, from rim to rim (so the arrowhead shows): a straight line along the
    tree, a curve for the others (see :func:`_edge_path`)."""
    title: str
    tree: bool
    """An edge the layout was built along (parent to child); others cross the rings."""


@dataclass
class GraphLayout:
    nodes: list[PlacedNode]
    edges: list[PlacedEdge]
    view_box: str
    width: int
    """The picture's natural size, in CSS pixels (the names then at the page's 12 px)."""
    height: int
    legend: list[tuple[int, str]]
    has_missing: bool


def text_width(text: str) -> float:
    """Roughly how wide ``text`` is at the page's 12-unit font: CJK and other wide characters
    (and M, W) take a full em, capitals and digits more than small letters. Over rather than
    under: a name wider than its room would leave the picture."""
    return sum(
        12.0
        if c in "MWmw@%" or unicodedata.east_asian_width(c) in "WF"
        else 8.5
        if c.isupper() or c.isdigit()
        else CHAR_WIDTH
        for c in text
    )


def _label(name: str, room: float) -> str:
    """``name``, cut (with …) to fit ``room`` units."""
    if text_width(name) <= room:
        return name
    while name and text_width(name + "…") > room:
        name = name[:-1]
    return name + "…"


def _ring_radius(angles: list[float], least: float) -> float:
    """A ring radius, at least ``least``, at which nodes at these angles are a line apart."""
    if len(angles) < 2:
        return least
    ordered = sorted(a % (2 * math.pi) for a in angles)
    steps = [b - a for a, b in itertools.pairwise(ordered)]
    steps.append(ordered[0] + 2 * math.pi - ordered[-1])
    smallest = min(steps)
    if smallest <= 0:  # two nodes at one angle: cannot happen, as every sector is apart
        return least
    return max(least, LINE_GAP / (2 * math.sin(min(smallest, math.pi) / 2)))


def layout(hood: Neighbourhood) -> GraphLayout:
    """Positions for ``hood``'s nodes and relations, in SVG units around (0, 0)."""
    nodes = hood.nodes
    children: dict[str, list[str]] = {n.name: [] for n in nodes}
    for node in nodes:
        if node.parent is not None:
            children[node.parent].append(node.name)
    first = [n.name for n in nodes if n.depth == 1]
    has_second = any(n.depth == 2 for n in nodes)
    angle: dict[str, float] = {hood.centre: 0.0}
    # a neighbour's angle is as wide as its children need, and never narrower than the
    # average: childless neighbours would otherwise crowd into a corner
    average = sum(len(children[name]) for name in first) / max(len(first), 1)
    weights = {name: max(1.0, average, len(children[name])) for name in first}
    total = sum(weights.values()) or 1
    start = -math.pi / 2
    for name in first:
        sector = 2 * math.pi * weights[name] / total
        angle[name] = start + sector / 2
        kids = children[name]
        for k, kid in enumerate(kids):
            angle[kid] = start + sector * (k + 0.5) / len(kids)
        start += sector

    labels = {
        n.name: _label(n.name, INNER_LABEL_WIDTH if n.depth == 1 and has_second else LABEL_WIDTH)
        for n in nodes
    }
    r1 = _ring_radius([angle[name] for name in first], LEAST_RADIUS)
    r2 = r1
    if has_second:
        # the outer ring starts where the longest inner name ends, with room for a node
        longest = max(text_width(labels[name]) for name in first)
        r2 = _ring_radius(
            [angle[n.name] for n in nodes if n.depth == 2],
            r1 + LABEL_GAP + longest + NODE_RADIUS * 2,
        )

    counts = Counter(n.entityType for n in nodes if n.entityType is not None)
    types = {t: i % PALETTE_SIZE for i, (t, _) in enumerate(counts.most_common())}
    placed: list[PlacedNode] = []
    index: dict[str, int] = {}
    for i, node in enumerate(nodes):
        radius = (0.0, r1, r2)[node.depth]
        theta = angle[node.name]
        x, y = radius * math.cos(theta), radius * math.sin(theta)
        if node.depth == 0:
            lx, ly, rotate, anchor = 0.0, NODE_RADIUS + 20.0, 0.0, "middle"
        else:
            degrees = math.degrees(theta) % 360
            left = 90 < degrees < 270  # turned half a circle, so it reads left to right
            lx = (radius + LABEL_GAP) * math.cos(theta)
            ly = (radius + LABEL_GAP) * math.sin(theta)
            rotate, anchor = (degrees - 180, "end") if left else (degrees, "start")
        placed.append(
            PlacedNode(
                index=i,
                name=node.name,
                entity_type=node.entityType,
                depth=node.depth,
                x=round(x, 1),
                y=round(y, 1),
                label=labels[node.name],
                label_x=round(lx, 1),
                label_y=round(ly, 1),
                label_rotate=round(rotate, 1),
                label_anchor=anchor,
                colour=-1 if node.entityType is None else types[node.entityType],
            )
        )
        index[node.name] = i
    if has_second:
        _level_inner_labels(placed)

    titles: dict[tuple[int, int], list[str]] = {}
    for relation in hood.relations:
        a, b = index[relation.from_], index[relation.to]
        if a == b:
            placed[a].self_relations.append(relation.relationType)
            continue
        titles.setdefault((a, b), []).append(relation.relationType)
    edges = []
    for (a, b), kinds in titles.items():
        tree = nodes[b].parent == nodes[a].name or nodes[a].parent == nodes[b].name
        title = f"{nodes[a].name} → {', '.join(kinds)} → {nodes[b].name}"
        edges.append(PlacedEdge(a, b, _edge_path(placed[a], placed[b], tree), title, tree))

    box = _bounds(placed)
    return GraphLayout(
        nodes=placed,
        edges=edges,
        view_box=" ".join(f"{v:.0f}" for v in box),
        width=round(box[2]),
        height=round(box[3]),
        legend=sorted(((c, t) for t, c in types.items()), key=lambda item: item[1]),
        has_missing=any(n.entityType is None for n in nodes),
    )


def _level_inner_labels(placed: list[PlacedNode]) -> None:
    """Turn the inner ring's names level, beside their nodes, wherever that covers no other
    name or node: easier to read than along the radius, where a name also lies on the line
    to its node's middle child. Nowhere else can a level inner name reach: it ends before
    the outer ring starts (see :func:`layout`), and the centre's name is inside the ring."""
    inner = [n for n in placed if n.depth == 1]
    radial = {n.index: (n.label_x, n.label_y, n.label_rotate, n.label_anchor) for n in inner}
    for node in inner:
        right = node.x >= 0
        node.label_x = round(node.x + (LABEL_GAP if right else -LABEL_GAP), 1)
        node.label_y, node.label_rotate = node.y, 0.0
        node.label_anchor = "start" if right else "end"
    # names along radii never cover each other: turn back those that cover something, one at
    # a time, until no level name does
    while True:
        boxes = {n.index: label_corners(n) for n in inner}
        covering = next(
            (
                n
                for n in inner
                if n.label_rotate == 0.0
                and (
                    any(not _apart(boxes[n.index], boxes[m.index]) for m in inner if m is not n)
                    or any(not _apart(boxes[n.index], _square(m)) for m in inner if m is not n)
                )
            ),
            None,
        )
        if covering is None:
            return
        x, y, rotate, anchor = radial[covering.index]
        covering.label_x, covering.label_y = x, y
        covering.label_rotate, covering.label_anchor = rotate, anchor


def _square(node: PlacedNode) -> list[tuple[float, float]]:
    r = NODE_RADIUS
    return [(node.x - r, node.y - r), (node.x + r, node.y - r), (node.x + r, node.y + r),
            (node.x - r, node.y + r)]  # fmt: skip


def _apart(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> bool:
    """Two convex outlines do not overlap: some edge of one separates them."""
    for box in (a, b):
        for (x1, y1), (x2, y2) in zip(box, box[1:] + box[:1], strict=True):
            nx, ny = y1 - y2, x2 - x1
            pa = [nx * x + ny * y for x, y in a]
            pb = [nx * x + ny * y for x, y in b]
            if max(pa) <= min(pb) or max(pb) <= min(pa):
                return True
    return False


def label_corners(node: PlacedNode) -> list[tuple[float, float]]:
    """The corners of a node's name as the page draws it (anchor, rotation, a line high)."""
    width, half = text_width(node.label), 7.0
    start = {"start": 0.0, "middle": -width / 2, "end": -width}[node.label_anchor]
    turn = math.radians(node.label_rotate)
    cos, sin = math.cos(turn), math.sin(turn)
    return [
        (node.label_x + dx * cos - dy * sin, node.label_y + dx * sin + dy * cos)
        for dx, dy in ((start, -half), (start + width, -half), (start + width, half), (start, half))
    ]


def _bounds(nodes: list[PlacedNode]) -> tuple[float, float, float, float]:
    """``(x, y, width, height)`` holding every node and every name, with a margin."""
    xs: list[float] = []
    ys: list[float] = []
    for node in nodes:
        xs += [node.x - NODE_RADIUS * 2, node.x + NODE_RADIUS * 2]
        ys += [node.y - NODE_RADIUS * 2, node.y + NODE_RADIUS * 2]
        for x, y in label_corners(node):
            xs.append(x)
            ys.append(y)
    margin = 16.0
    left, top = min(xs) - margin, min(ys) - margin
    return left, top, max(xs) + margin - left, max(ys) + margin - top


def _edge_path(a: PlacedNode, b: PlacedNode, straight: bool) -> str:
    """The SVG path of an edge from ``a`` to ``b``, stopping at their rims.

    An edge off the tree is bent, away from the centre, by a quarter of its length: two
    neighbours on opposite sides would otherwise be joined by a line running under the
    centre's own two lines and through the centre. Bent that way it stays inside the ring its
    ends are on (at most 3 % beyond), short of the names that start past it.
    """
    length = math.hypot(b.x - a.x, b.y - a.y) or 1.0
    if straight:
        towards_a, towards_b = (b.x, b.y), (a.x, a.y)
        via = ""
    else:
        mx, my = (a.x + b.x) / 2, (a.y + b.y) / 2
        px, py = -(b.y - a.y) / length, (b.x - a.x) / length  # across the edge
        if px * mx + py * my < 0:
            px, py = -px, -py
        cx, cy = mx + px * length / 4, my + py * length / 4
        towards_a = towards_b = (cx, cy)
        via = f"Q{cx:.1f} {cy:.1f} "
    x1, y1 = _rim_point(a, towards_a)
    x2, y2 = _rim_point(b, towards_b)
    return f"M{x1:.1f} {y1:.1f} {via or 'L'}{x2:.1f} {y2:.1f}"


def _rim_point(node: PlacedNode, towards: tuple[float, float]) -> tuple[float, float]:
    """Where a line from ``node`` towards a point leaves the node's circle (and its halo)."""
    dx, dy = towards[0] - node.x, towards[1] - node.y
    length = math.hypot(dx, dy) or 1.0
    rim = (CENTRE_RADIUS if node.depth == 0 else NODE_RADIUS) + 2
    return node.x + dx * rim / length, node.y + dy * rim / length

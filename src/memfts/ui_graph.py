"""Where the graph view draws each node: a radial layout computed on the server, no library.

The centre entity sits in the middle, its neighbours on a ring around it, and at depth 2 each
neighbour's own neighbours on an outer ring, inside the angle its parent was given (wider for
a parent with more children), so the tree reads outwards. Rings grow with the number of
nodes, so that 50 nodes keep their names legible: the outer ring's labels run along the
radius (turned to read left to right) at least a line apart, the inner ring's run level
beside their nodes. Relations that do not follow the tree are drawn dashed. The same
input always gives the same picture (no random start, unlike a force layout), which a person
comparing two visits and a screenshot test both need.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from memfts.models import Neighbourhood

LABEL_CHARS = 28
"""Longer names are cut (with …) on the picture; the full name is the node's tooltip."""

CHAR_WIDTH = 7.0
"""Rough width of one label character at the page's 12-unit font."""

LINE_GAP = 18.0
"""Least distance between neighbouring nodes on a ring: one label line and some air."""

RING_GAP = 140.0
"""Least distance between the two rings at depth 2: room for the inner ring's labels."""

NODE_RADIUS = 7.0
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
    x1: float
    y1: float
    x2: float
    y2: float
    title: str
    tree: bool
    """An edge the layout was built along (parent to child); others cross the rings."""


@dataclass
class GraphLayout:
    nodes: list[PlacedNode]
    edges: list[PlacedEdge]
    view_box: str
    legend: list[tuple[int, str]]
    has_missing: bool


def _label(name: str) -> str:
    return name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1] + "…"


def _ring_radius(count: int, least: float) -> float:
    """A ring where ``count`` nodes are at least :data:`LINE_GAP` apart."""
    return max(least, count * LINE_GAP / (2 * math.pi))


def layout(hood: Neighbourhood) -> GraphLayout:
    """Positions for ``hood``'s nodes and relations, in SVG units around (0, 0)."""
    nodes = hood.nodes
    children: dict[str, list[str]] = {n.name: [] for n in nodes}
    for node in nodes:
        if node.parent is not None:
            children[node.parent].append(node.name)
    first = [n.name for n in nodes if n.depth == 1]
    second_count = sum(1 for n in nodes if n.depth == 2)
    r1 = _ring_radius(len(first), 120.0)
    r2 = _ring_radius(second_count, r1 + RING_GAP)
    outer = 2 if second_count else 1
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

    counts = Counter(n.entityType for n in nodes if n.entityType is not None)
    types = {t: i % PALETTE_SIZE for i, (t, _) in enumerate(counts.most_common())}
    placed: list[PlacedNode] = []
    index: dict[str, int] = {}
    for i, node in enumerate(nodes):
        radius = (0.0, r1, r2)[node.depth]
        theta = angle[node.name]
        x, y = radius * math.cos(theta), radius * math.sin(theta)
        gap = NODE_RADIUS + 5.0
        if node.depth == 0:
            lx, ly, rotate, anchor = 0.0, NODE_RADIUS + 20.0, 0.0, "middle"
        elif node.depth < outer:
            # an inner ring's label runs level beside its node, leaving the radius to the
            # children; its halo keeps it legible over the lines that cross it
            right = math.cos(theta) >= 0
            lx, ly = x + (gap if right else -gap), y
            rotate, anchor = 0.0, "start" if right else "end"
        else:
            degrees = math.degrees(theta) % 360
            left = 90 < degrees < 270  # turned half a circle, so it reads left to right
            lx, ly = (radius + gap) * math.cos(theta), (radius + gap) * math.sin(theta)
            rotate, anchor = (degrees - 180, "end") if left else (degrees, "start")
        placed.append(
            PlacedNode(
                index=i,
                name=node.name,
                entity_type=node.entityType,
                depth=node.depth,
                x=round(x, 1),
                y=round(y, 1),
                label=_label(node.name),
                label_x=round(lx, 1),
                label_y=round(ly, 1),
                label_rotate=round(rotate, 1),
                label_anchor=anchor,
                colour=-1 if node.entityType is None else types[node.entityType],
            )
        )
        index[node.name] = i

    titles: dict[tuple[int, int], list[str]] = {}
    for relation in hood.relations:
        a, b = index[relation.from_], index[relation.to]
        if a == b:
            placed[a].self_relations.append(relation.relationType)
            continue
        titles.setdefault((a, b), []).append(relation.relationType)
    edges = []
    for (a, b), kinds in titles.items():
        x1, y1, x2, y2 = _shortened(placed[a], placed[b])
        tree = nodes[b].parent == nodes[a].name or nodes[a].parent == nodes[b].name
        title = f"{nodes[a].name} → {', '.join(kinds)} → {nodes[b].name}"
        edges.append(PlacedEdge(a, b, x1, y1, x2, y2, title, tree))

    box = _bounds(placed)
    return GraphLayout(
        nodes=placed,
        edges=edges,
        view_box=" ".join(f"{v:.0f}" for v in box),
        legend=sorted(((c, t) for t, c in types.items()), key=lambda item: item[1]),
        has_missing=any(n.entityType is None for n in nodes),
    )


def _bounds(nodes: list[PlacedNode]) -> tuple[float, float, float, float]:
    """``(x, y, width, height)`` holding every node and (roughly) every label, with a margin."""
    xs: list[float] = []
    ys: list[float] = []
    for node in nodes:
        xs += [node.x - NODE_RADIUS * 2, node.x + NODE_RADIUS * 2]
        ys += [node.y - NODE_RADIUS * 2, node.y + NODE_RADIUS * 2]
        length = len(node.label) * CHAR_WIDTH
        turn = math.radians(node.label_rotate)
        direction = 1 if node.label_anchor == "start" else -1
        if node.label_anchor == "middle":
            xs += [node.label_x - length / 2, node.label_x + length / 2]
            ys.append(node.label_y + LINE_GAP)
            continue
        xs.append(node.label_x + direction * length * math.cos(turn))
        ys.append(node.label_y + direction * length * math.sin(turn))
    margin = 16.0
    left, top = min(xs) - margin, min(ys) - margin
    return left, top, max(xs) + margin - left, max(ys) + margin - top


def _shortened(a: PlacedNode, b: PlacedNode) -> tuple[float, float, float, float]:
    """The segment between two nodes, stopping at their rims (so the arrowhead shows)."""
    dx, dy = b.x - a.x, b.y - a.y
    length = math.hypot(dx, dy) or 1.0
    cut = (NODE_RADIUS + 2) / length
    return (
        round(a.x + dx * cut, 1),
        round(a.y + dy * cut, 1),
        round(b.x - dx * cut, 1),
        round(b.y - dy * cut, 1),
    )

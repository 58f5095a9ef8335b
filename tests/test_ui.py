"""``memfts ui`` over real HTTP: a real process on a real file, requests written by hand.

What a browser test cannot show as directly: the exact status of a refused request (a
foreign Host, a cross-site or token-less write, a missing bearer token), the headers of
every answer, the escaped bytes of text from the database, and the layout's geometry.
"""

from __future__ import annotations

import html
import http.client
import math
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

import ui_demo
from conftest import memfts_command, server_env
from memfts.curation import Curation
from memfts.models import Entity, GraphNode, Neighbourhood, Relation
from memfts.store import Store
from memfts.ui import observation_digest
from memfts.ui_graph import NODE_RADIUS, PlacedNode, layout, text_width
from test_store import E, graph_of
from ui_server import UiServer, csrf_of, path_of
from workers import RawServer

HOSTILE = '<script>alert("owned")</script><img src=x onerror=alert(2)>'


@pytest.fixture
def demo(db_path: Path) -> Iterator[Path]:
    store = Store(db_path)
    ui_demo.fill(store)
    store.create_entities(
        [
            Entity(
                name="<b>Mallory</b>", entityType='"><svg onload=alert(3)>', observations=[HOSTILE]
            )
        ]
    )
    store.create_relations(
        [Relation(from_="<b>Mallory</b>", to="ledger", relationType="<i>pwns</i>")]
    )
    store.close()
    yield db_path


@pytest.fixture
def ui(demo: Path) -> Iterator[UiServer]:
    with UiServer(demo) as server:
        yield server


def form(fields: dict[str, str]) -> str:
    return urlencode(fields)


def post(ui: UiServer, path: str, fields: dict[str, str], **headers: str):  # type: ignore[no-untyped-def]
    return ui.request(
        "POST",
        path,
        body=form(fields),
        headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
    )


def test_every_page_answers_with_the_memory_and_safe_headers(ui: UiServer) -> None:
    pages = {
        "/": "Latest changes",
        "/?q=idempotency+key": "<mark>",
        "/entity?name=billing-worker": "Idempotency key is the payment intent id",
        "/graph?name=billing-worker&depth=2": "<svg",
        "/recent": "Recent changes",
        "/duplicates": "Merge into PostgreSQL",
        "/stats": "Observations",
    }
    for path, expected in pages.items():
        answer = ui.get(path)
        assert answer.status == 200, (path, answer.body[:300])
        assert expected in answer.body, path
        assert "script-src 'self'" in answer.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert re.fullmatch(r"store;dur=\d+\.\d", answer.headers["server-timing"]), path
        assert "<script>" not in answer.body  # only the page's own script file
    missing = ui.get("/entity?name=Nobody")
    assert missing.status == 404 and "No entity named" in missing.body
    assert ui.get("/static/ui.js").status == 200


def test_search_page_shows_n_of_m_corrections_and_suggestions(ui: UiServer) -> None:
    page = ui.get("/?q=idempotncy").body
    assert "Nothing matched <q>idempotncy</q>; showing" in page
    corrected = re.findall(r'showing <a href="(/\?q=[^"]+)"', page)
    assert len(corrected) == 1 and page.count(corrected[0]) == 1  # not offered again below
    assert "<mark>" in page
    counted = ui.get("/?q=service&limit=2").body
    assert re.search(r'<span class="count">2</span> of <span class="total">\d+', counted)
    assert "Show more" in counted
    partly = ui.get("/?q=idempotency+retries").body
    assert "2 of them hold every word of the query" in partly


def test_text_from_the_database_is_escaped_everywhere(ui: UiServer) -> None:
    name = "<b>Mallory</b>"
    for path in (
        f"/entity?{urlencode({'name': name})}",
        "/?q=alert",
        "/?q=mallory",
        f"/graph?{urlencode({'name': name})}",
        "/recent",
        "/entity?name=ledger",
    ):
        page = ui.get(path).body
        for raw in ("<script>alert", "<img src=x", "<svg onload", "<b>Mallory", "<i>pwns"):
            assert raw not in page, (path, raw)
    page = ui.get(f"/entity?{urlencode({'name': name})}").body
    assert (
        "&lt;script&gt;alert(&#34;owned&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;"
        in page
    )
    assert "<h1>&lt;b&gt;Mallory&lt;/b&gt;</h1>" in page
    found = ui.get("/?q=alert").body
    assert "&lt;script&gt;<mark>alert</mark>(&#34;owned&#34;)" in found


def test_markdown_bold_in_an_observation_is_not_taken_for_a_match(ui: UiServer, demo: Path) -> None:
    """Agents write Markdown: the asterisks of ``**Decision**`` are text, not the marks the
    search puts around the words that matched."""
    store = Store(demo)
    try:
        store.create_entities(
            [E("ADR-7", "decision", "**Decision**: use Kafka for events, **not** RabbitMQ")]
        )
    finally:
        store.close()
    page = ui.get("/?q=kafka").body
    assert "**Decision**: use <mark>Kafka</mark> for events, **not** RabbitMQ" in page
    assert "<mark>Decision</mark>" not in page


def test_a_type_link_lists_the_entities_of_that_type_whatever_its_characters(
    ui: UiServer,
) -> None:
    for name, entity_type in (("<b>Mallory</b>", '"><svg onload=alert(3)>'), ("Redis", "database")):
        page = ui.get(f"/entity?{urlencode({'name': name})}").body
        found = re.search(r'<a class="type" href="([^"]+)"', page)
        assert found, name
        listed = ui.get(html.unescape(found.group(1))).body
        hits = re.findall(
            r'<a class="name" href="[^"]+">([^<]+)</a> <a class="type" href="[^"]+">([^<]+)</a>',
            listed,
        )
        assert name in {html.unescape(n) for n, _ in hits}
        assert {html.unescape(t) for _, t in hits} == {entity_type}
        assert "of type" in listed


def test_an_entity_with_thousands_of_observations_comes_in_pages(ui: UiServer, demo: Path) -> None:
    """An agent that logs every session to one entity: its page once held 1.3 KB of forms per
    observation (26 MB and 1.5 s for 20,000); it shows them a page at a time."""
    store = Store(demo)
    try:
        notes = [f"session {i}: fixed flaky test {i}" for i in range(1, 451)]
        store.create_entities([E("session log", "log", *notes)])
    finally:
        store.close()
    first = ui.get("/entity?name=session%20log")
    assert first.status == 200 and len(first.body) < 350_000
    assert first.body.count('<p class="text">') == 200
    assert "Observations 1–200 of 450" in first.body
    assert 'href="/entity?name=session+log&amp;obs=201"' in first.body
    last = ui.get("/entity?name=session%20log&obs=401").body
    assert '<ol class="observations long" start="401">' in last
    assert last.count('<p class="text">') == 50 and "session 401: fixed" in last
    assert "Observations 401–450 of 450" in last
    # a write from a later page comes back to it
    form = re.search(r'<form method="post" action="(/observation/edit[^"]*)"', last)
    assert form
    token = csrf_of(last)
    edited = post(
        ui,
        html.unescape(form.group(1)),
        {
            "name": "session%20log",
            "observation": observation_digest("session 401: fixed flaky test 401"),
            "new": "session 401: fixed flaky test 401 (for good)",
            "csrf": token,
        },
    )
    assert edited.status == 303
    assert path_of(edited.headers["location"]) == ("/entity?name=session+log&obs=401&done=edited")
    assert "(for good)" in ui.get("/entity?name=session%20log&obs=401").body


def test_answers_on_a_kept_alive_connection_do_not_wait_for_delayed_acks(ui: UiServer) -> None:
    """With Nagle's algorithm on, each answer's second write waits for the client's delayed
    ACK: every request on a kept-alive connection (a browser's, polling) took 40+ ms."""
    conn = http.client.HTTPConnection("127.0.0.1", ui.port, timeout=60)
    times = []
    try:
        for _ in range(20):
            start = time.perf_counter()
            conn.request("GET", "/api/version", headers={"Host": f"127.0.0.1:{ui.port}"})
            conn.getresponse().read()
            times.append(time.perf_counter() - start)
    finally:
        conn.close()
    assert sorted(times)[len(times) // 2] < 0.030, times  # the median; a delayed ACK is 40 ms


def test_a_foreign_host_header_is_refused(ui: UiServer) -> None:
    assert ui.get("/", headers={"Host": "evil.example"}).status == 421
    assert ui.get("/", headers={"Host": f"evil.example:{ui.port}"}).status == 421
    assert ui.get("/", headers={"Host": f"localhost:{ui.port}"}).status == 200


def test_writes_need_a_post_from_the_page_with_its_token(ui: UiServer, demo: Path) -> None:
    page = ui.get("/entity?name=Redis").body
    token = csrf_of(page)
    before = ui.get("/entity?name=Redis").body
    rename = {"name": "Redis", "new_name": "Valkey"}
    refusals = [
        post(ui, "/entity/rename", rename),  # no token
        post(ui, "/entity/rename", {**rename, "csrf": "guess"}),
        post(ui, "/entity/rename", {**rename, "csrf": token}, Origin="http://evil.example"),
        post(ui, "/entity/rename", {**rename, "csrf": token}, **{"Sec-Fetch-Site": "cross-site"}),
    ]
    assert [r.status for r in refusals] == [403, 403, 403, 403]
    assert ui.request("PUT", "/entity/rename").status == 405
    assert ui.get("/entity/rename").status == 405
    assert ui.get("/entity?name=Redis").body.count("Caches carts") == before.count("Caches carts")
    done = post(
        ui,
        "/entity/rename",
        {**rename, "csrf": token},
        Origin=f"http://127.0.0.1:{ui.port}",
        **{"Sec-Fetch-Site": "same-origin"},
    )
    assert done.status == 303
    assert path_of(done.headers["location"]) == "/entity?name=Valkey&done=renamed&from=Redis"
    store = Store(demo)
    try:
        curation = Curation(store)
        assert curation.entity_detail("Valkey") is not None
        assert curation.entity_detail("Redis") is None
    finally:
        store.close()


def test_a_link_from_another_site_cannot_make_the_page_announce_a_write(ui: UiServer) -> None:
    """The notice after a write ('Deleted ...') is named in the address the write redirects
    to; a link from another site carrying it must not put words in the page's mouth."""
    spoof = "/?" + urlencode({"done": "deleted", "name": "everything; call +1 555 0100"})
    for site, shown in (("same-origin", True), ("cross-site", False), ("same-site", False)):
        page = ui.get(spoof, headers={"Sec-Fetch-Site": site}).body
        assert ("Deleted &#39;everything" in page) is shown, site
    assert ui.get(spoof).status == 200


def test_an_oversized_form_is_refused_before_it_is_read(ui: UiServer, demo: Path) -> None:
    token = csrf_of(ui.get("/entity?name=Redis").body)
    huge = {"name": "Redis", "observation": "0" * 64, "new": "x" * 2_000_000}
    assert post(ui, "/observation/edit", {**huge, "csrf": token}).status == 413
    store = Store(demo)
    try:
        detail = Curation(store).entity_detail("Redis")
        assert detail is not None
        assert detail.observations[1] == "Used as the job queue broker"
    finally:
        store.close()


def test_destructive_writes_say_what_will_change_before_changing_it(
    ui: UiServer, demo: Path
) -> None:
    token = csrf_of(ui.get("/duplicates").body)
    store = Store(demo)
    try:
        before = graph_of(store)
        preview = post(
            ui, "/merge", {"source": "postgresql", "target": "PostgreSQL", "csrf": token}
        )
        assert preview.status == 200
        assert "Merge &#39;postgresql&#39; into &#39;PostgreSQL&#39;?" in preview.body
        assert (
            "1 observation of &#39;postgresql&#39; appended to &#39;PostgreSQL&#39;" in preview.body
        )
        assert "1 relation re-pointed" in preview.body
        assert 'name="confirmed" value="yes"' in preview.body
        deletion = post(ui, "/entity/delete", {"name": "ledger", "csrf": token})
        assert "with its 2 observations" in deletion.body and "and 6 relations" in deletion.body
        assert graph_of(store) == before
        merged = post(
            ui,
            "/merge",
            {"source": "postgresql", "target": "PostgreSQL", "csrf": token, "confirmed": "yes"},
        )
        assert merged.status == 303
        detail = Curation(store).entity_detail("PostgreSQL")
        assert detail is not None
        assert detail.observations[-1] == "Use pg_dump --format=custom for backups"
        assert Curation(store).entity_detail("postgresql") is None
    finally:
        store.close()


def test_a_refused_write_says_why_and_offers_the_merge(ui: UiServer) -> None:
    token = csrf_of(ui.get("/duplicates").body)
    answer = post(ui, "/entity/rename", {"name": "nodejs", "new_name": "Node.js", "csrf": token})
    assert answer.status == 409
    assert "an entity named &#39;Node.js&#39; exists already" in answer.body
    assert 'action="/merge"' in answer.body and 'name="target" value="Node.js"' in answer.body
    typo = post(ui, "/merge", {"source": "nodejs", "into": "Node", "csrf": token})
    assert typo.status == 404
    assert "no entity is named &#39;Node&#39; to merge &#39;nodejs&#39; into" in typo.body
    edit = post(
        ui,
        "/observation/edit",
        {"name": "Redis", "observation": "0" * 64, "new": "x", "csrf": token},
    )
    assert edit.status == 409 and "it changed meanwhile" in edit.body


def test_the_change_marker_moves_when_another_process_writes(ui: UiServer, demo: Path) -> None:
    first = ui.get("/api/version")
    assert first.status == 200
    assert ui.get("/api/version").body == first.body
    with RawServer(demo) as agent:
        agent.call_ok("add_observations", {"observations": [
            {"entityName": "Redis", "contents": ["an agent wrote this"]}]})  # fmt: skip
    assert ui.get("/api/version").body != first.body
    assert "an agent wrote this" in ui.get("/entity?name=Redis").body


def test_a_token_guards_the_page_and_the_printed_url_carries_it(demo: Path) -> None:
    with UiServer(demo, env={"MEMFTS_TOKEN": "s3cret token, sixteen+"}) as ui:
        assert ui.url.endswith("/?token=s3cret%20token%2C%20sixteen%2B")
        assert ui.get("/").status == 401
        assert ui.get("/?token=wrong").status == 401
        assert ui.get("/api/version").status == 401
        opened = ui.get(path_of(ui.url) + "&q=redis")
        assert opened.status == 303
        assert path_of(opened.headers["location"]) == "/?q=redis"
        cookie = opened.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        pair = cookie.split(";")[0]
        assert ui.get("/", headers={"Cookie": pair}).status == 200
        assert ui.get("/", headers={"Authorization": "Bearer s3cret token, sixteen+"}).status == 200
        assert ui.get("/", headers={"Host": "evil.example", "Cookie": pair}).status == 421


def test_dropping_the_token_from_the_address_never_leaves_the_page(demo: Path) -> None:
    """The redirect that takes ``?token=`` out of the address keeps the path it was given:
    a path starting with two slashes (or one encoded) is another site to a browser."""
    with UiServer(demo, env={"MEMFTS_TOKEN": "s3cret token, sixteen+"}) as ui:
        token = "token=s3cret%20token%2C%20sixteen%2B"
        for path, kept in (
            ("//evil.example/", "/evil.example/"),
            ("///evil.example/x", "/evil.example/x"),
            ("/%2F%2Fevil.example/", "/%2F%2Fevil.example/"),
            ("/entity", "/entity"),
        ):
            answer = ui.get(f"{path}?{token}&q=a%20b")
            assert answer.status == 303, path
            assert answer.headers["location"] == f"{kept}?q=a+b", path


def test_off_loopback_without_a_token_it_refuses_to_start(demo: Path) -> None:
    done = subprocess.run(
        [*memfts_command(), "--db", str(demo), "ui", "--host", "0.0.0.0", "--port", "1"],
        capture_output=True,
        text=True,
        env=server_env(demo),
        timeout=60,
    )
    assert done.returncode == 1
    assert "refusing to listen on 0.0.0.0 without a token" in done.stderr


# ---- the graph's layout ------------------------------------------------------------------

NAMES = [
    "billing-db", "ledger-service", "tax-calculator", "events-kafka", "Dana Whitfield",
    "INC-2024-14 invoice run did not start", "proration wrong on leap day", "Priya Raman",
    "OpenTelemetry spans missing in Go services", "請求書の再発行手順", "customer-portal",
    "WWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWW", "flaky test_refund_rounding", "x",
]  # fmt: skip


def _hood(first: int, children: list[int] | int) -> Neighbourhood:
    """A centre, ``first`` neighbours, and neighbour i's ``children[i]`` own neighbours."""
    each = children if isinstance(children, list) else [children] * first
    nodes = [GraphNode(name="centre", entityType="t", depth=0, parent=None)]
    relations = []
    for i in range(first):
        name = f"{NAMES[i % len(NAMES)]} {i}"
        nodes.append(GraphNode(name=name, entityType=f"type{i % 13}", depth=1, parent="centre"))
        relations.append(Relation(from_="centre", to=name, relationType="r"))
        for k in range(each[i] if i < len(each) else 0):
            kid = f"{NAMES[(i + k + 3) % len(NAMES)]} {i}-{k}"
            nodes.append(GraphNode(name=kid, entityType=None, depth=2, parent=name))
            relations.append(Relation(from_=name, to=kid, relationType="r"))
    return Neighbourhood(centre="centre", depth=2, nodes=nodes, relations=relations, left_out=0)


Box = list[tuple[float, float]]


def _label_box(node: PlacedNode) -> Box:
    """The corners of a node's label as the page draws it (text-anchor, rotation)."""
    width, half = text_width(node.label), 6.5  # a 12-unit font: 13 units high
    start = {"start": 0.0, "middle": -width / 2, "end": -width}[node.label_anchor]
    turn = math.radians(node.label_rotate)
    cos, sin = math.cos(turn), math.sin(turn)
    return [
        (node.label_x + dx * cos - dy * sin, node.label_y + dx * sin + dy * cos)
        for dx, dy in ((start, -half), (start + width, -half), (start + width, half), (start, half))
    ]


def _apart(a: Box, b: Box) -> bool:
    """Two convex outlines do not overlap (some edge of one separates them)."""
    for box in (a, b):
        for (x1, y1), (x2, y2) in zip(box, box[1:] + box[:1], strict=True):
            nx, ny = y1 - y2, x2 - x1
            pa = [nx * x + ny * y for x, y in a]
            pb = [nx * x + ny * y for x, y in b]
            if max(pa) <= min(pb) or max(pb) <= min(pa):
                return True
    return False


def _circle(node: PlacedNode) -> Box:
    r = NODE_RADIUS
    return [(node.x + r * math.cos(t), node.y + r * math.sin(t)) for t in range(0, 7)]


@pytest.mark.parametrize(
    ("first", "children"),
    [
        (49, 0),
        (7, 6),
        (16, 2),
        (1, 48),
        (16, [9, 4, 3, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),  # a real hub's shape
        (24, [24]),  # one neighbour has all the second ring
        (24, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 25]),
        (3, [15, 15, 16]),
    ],
)
def test_fifty_nodes_keep_their_labels_apart(first: int, children: list[int] | int) -> None:
    hood = _hood(first, children)
    placed = layout(hood)
    assert layout(hood) == placed  # no randomness: the same picture every visit
    assert len(placed.nodes) == len(hood.nodes) >= 20
    labels = [(n, _label_box(n)) for n in placed.nodes]
    for i, (a, box_a) in enumerate(labels):
        for b, box_b in labels[i + 1 :]:
            assert _apart(box_a, box_b), f"the labels of {a.name!r} and {b.name!r} overlap"
        for other in placed.nodes:
            if other is not a:
                assert _apart(box_a, _circle(other)), f"{a.name!r} covers {other.name!r}"
    x, y, width, height = (float(v) for v in placed.view_box.split())
    for _, box in labels:
        for px, py in box:
            assert x <= px <= x + width and y <= py <= y + height, "a label leaves the picture"
    assert len(placed.edges) == len(hood.relations)
    assert len({c for c, _ in placed.legend}) == min(12, len(placed.legend))


def _points(path: str) -> list[tuple[float, float]]:
    """Points along an edge's SVG path (``M x y L x y`` or ``M x y Q cx cy x y``)."""
    numbers = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", path)]
    if "Q" in path:
        (x0, y0, cx, cy, x1, y1) = numbers
        return [
            (
                (1 - t) ** 2 * x0 + 2 * (1 - t) * t * cx + t**2 * x1,
                (1 - t) ** 2 * y0 + 2 * (1 - t) * t * cy + t**2 * y1,
            )
            for t in (i / 50 for i in range(51))
        ]
    (x0, y0, x1, y1) = numbers
    return [(x0 + (x1 - x0) * i / 50, y0 + (y1 - y0) * i / 50) for i in range(51)]


def test_a_relation_between_two_neighbours_is_not_drawn_through_the_centre() -> None:
    """Two neighbours sit on opposite sides of the centre: a straight line between them
    would run under both of the centre's own lines and through the centre itself."""
    nodes = [
        GraphNode(name="Ada", entityType="person", depth=0, parent=None),
        GraphNode(name="compiler", entityType="project", depth=1, parent="Ada"),
        GraphNode(name="Rust", entityType="language", depth=1, parent="Ada"),
    ]
    relations = [
        Relation(from_="Ada", to="compiler", relationType="works_on"),
        Relation(from_="Rust", to="Ada", relationType="taught"),
        Relation(from_="compiler", to="Rust", relationType="written_in"),
    ]
    hood = Neighbourhood(centre="Ada", depth=1, nodes=nodes, relations=relations, left_out=0)
    placed = layout(hood)
    centre = placed.nodes[0]
    cross = [e for e in placed.edges if not e.tree]
    assert len(cross) == 1 and len(placed.edges) == 3
    for x, y in _points(cross[0].path):
        assert math.dist((x, y), (centre.x, centre.y)) > NODE_RADIUS * 3
    for edge in placed.edges:  # every edge still ends at its nodes' rims
        start, end = _points(edge.path)[0], _points(edge.path)[-1]
        a, b = placed.nodes[edge.a], placed.nodes[edge.b]
        assert math.dist(start, (a.x, a.y)) < NODE_RADIUS * 2.5
        assert math.dist(end, (b.x, b.y)) < NODE_RADIUS * 2.5

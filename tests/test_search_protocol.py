"""search_nodes over MCP, feature by feature, as a client sees it: a real `python -m memfts`
spawned over stdio and driven by the mcp client.

Each test empties the shared server through its own tools, stores a small graph, and checks
what `search_nodes` answers: CJK, accent and case folding, partial words, typos, the query
syntax, snippets and compact results, relation depth, the type filter, `limit` and `total`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from mcp_session import Session, emptied, error_text, only_text, params_for, session

pytestmark = pytest.mark.full_text  # the full-text ranking's exact results (conftest)

# ---- helpers -------------------------------------------------------------------------------


def entity(name: str, entity_type: str, *observations: str) -> dict[str, Any]:
    return {"name": name, "entityType": entity_type, "observations": list(observations)}


def relation(from_: str, to: str, relation_type: str) -> dict[str, str]:
    return {"from": from_, "to": to, "relationType": relation_type}


def seed(
    mcp: Session, entities: list[dict[str, Any]], relations: list[dict[str, str]] | None = None
) -> None:
    mcp.ok("create_entities", {"entities": entities})
    if relations:
        mcp.ok("create_relations", {"relations": relations})


def search(mcp: Session, query: str, **arguments: Any) -> dict[str, Any]:
    """A search that must succeed; its structuredContent, checked against its text block."""
    result = mcp.ok("search_nodes", {"query": query, **arguments})
    structured: dict[str, Any] | None = result.structured_content
    assert structured is not None
    assert json.loads(only_text(result)) == structured
    return structured


def names(result: dict[str, Any]) -> list[str]:
    return [e["name"] for e in result["entities"]]


def complete(result: dict[str, Any]) -> list[str]:
    """The entities holding every word: the first ``withEveryWord`` (all when it is absent);
    the rest of the page is the best partial matches."""
    return names(result)[: result.get("withEveryWord", len(result["entities"]))]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    """One memfts process for the whole module."""
    with session(params_for(tmp_path_factory.mktemp("search") / "memory.db")) as s:
        yield s


@pytest.fixture
def mcp(server: Session) -> Session:
    """The shared server, emptied through its own tools so each test starts from nothing."""
    return emptied(server)


# ---- 1. Chinese, Japanese, Korean ------------------------------------------------------------

CJK_GRAPH = [
    entity("Trip", "event", "東京タワーに行った"),
    entity("Lunch", "event", "昨日は寿司を食べた"),
    entity("Campus", "note", "我们明天去北京大学参观"),
    entity("Seoul", "note", "서울특별시에서 살아요"),
    entity("Plain", "note", "an English sentence about Tokyo"),
]


@pytest.fixture
def cjk(mcp: Session) -> Session:
    seed(mcp, CJK_GRAPH)
    return mcp


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("東京", ["Trip"]),  # a Japanese word at the start of a longer run
        ("タワー", ["Trip"]),  # katakana inside the run
        ("寿司", ["Lunch"]),  # two characters in the middle of a run
        ("寿", ["Lunch"]),  # one character
        ("北京", ["Campus"]),  # Chinese, two characters inside a run
        ("参", ["Campus"]),  # Chinese, one character
        ("서울", ["Seoul"]),  # Korean, two syllables at the start of a word
        ("특별시", ["Seoul"]),  # Korean, inside a word
        ("서", ["Seoul"]),  # Korean, one syllable
    ],
)
def test_cjk_words_are_found_inside_longer_runs(
    cjk: Session, query: str, expected: list[str]
) -> None:
    result = search(cjk, query)
    assert names(result) == expected
    assert result["total"] == len(expected)
    assert "correctedQuery" not in result  # found as typed, not by a spelling fix


def test_cjk_character_shared_by_two_runs_finds_both(cjk: Session) -> None:
    assert sorted(names(search(cjk, "京"))) == ["Campus", "Trip"]  # 東京 and 北京


@pytest.mark.parametrize("query", ["大阪", "寿司屋", "부산"])
def test_cjk_absent_words_find_nothing(cjk: Session, query: str) -> None:
    # 寿司屋 starts like 寿司 but is not in any run: a longer word does not match a shorter one
    result = search(cjk, query)
    assert result == {"entities": [], "relations": [], "total": 0}


def test_cjk_in_entity_names(mcp: Session) -> None:
    seed(mcp, [entity("東京スカイツリー", "landmark", "tall"), entity("大阪城", "landmark", "old")])
    assert names(search(mcp, "スカイ")) == ["東京スカイツリー"]
    assert names(search(mcp, "城")) == ["大阪城"]


# ---- 2. accents and case ---------------------------------------------------------------------


@pytest.fixture
def folding(mcp: Session) -> Session:
    seed(
        mcp,
        [
            entity("Paris school", "place", "École normale supérieure"),
            entity("Lyon school", "place", "une petite école"),
            entity("Cafe", "shop", "a naïve café in Zürich"),
            entity("Greek", "word", "ΣΟΦΙΑ means wisdom"),
            entity("Russian", "word", "МОСКВА is a city"),
            entity("Lower russian", "word", "город москва"),
            entity("Unrelated", "word", "ecology and economics"),
        ],
    )
    return mcp


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("ecole", ["Lyon school", "Paris school"]),
        ("ÉCOLE", ["Lyon school", "Paris school"]),
        ("Ecole", ["Lyon school", "Paris school"]),
        ("supérieure", ["Paris school"]),
        ("SUPERIEURE", ["Paris school"]),
        ("naive cafe", ["Cafe"]),
        ("ZURICH", ["Cafe"]),
        ("σοφια", ["Greek"]),  # Greek: lower case finds upper case
        ("Σοφια", ["Greek"]),
        ("москва", ["Lower russian", "Russian"]),  # Cyrillic, both cases stored
        ("МОСКВА", ["Lower russian", "Russian"]),
        ("Москва", ["Lower russian", "Russian"]),
    ],
)
def test_case_and_accents_are_ignored(folding: Session, query: str, expected: list[str]) -> None:
    result = search(folding, query)
    assert sorted(names(result)) == expected
    assert result["total"] == len(expected)
    assert "correctedQuery" not in result  # matched as typed


def test_greek_accents_are_ignored(mcp: Session) -> None:
    """The description promises accents are ignored: Greek tonos is an accent (ά = α + ́)."""
    seed(mcp, [entity("Road", "word", "ΟΔΟΣ"), entity("Coffee", "word", "καφές")])
    for query, expected in [("οδός", "Road"), ("καφες", "Coffee"), ("ΚΑΦΕΣ", "Coffee")]:
        result = search(mcp, query)
        assert names(result) == [expected]
        assert "correctedQuery" not in result, f"{query!r} only matched as a typo: {result}"


# ---- 3. partial words --------------------------------------------------------------------------


def test_partial_words_found_inside_longer_words(mcp: Session) -> None:
    seed(
        mcp,
        [
            entity("Login", "module", "handles authentication for users"),
            entity("Frontend", "project", "written in TypeScript"),
            entity("Backend", "project", "written in Rust"),
        ],
    )
    assert names(search(mcp, "auth")) == ["Login"]  # a word start
    assert names(search(mcp, "script")) == ["Frontend"]  # inside a word
    assert names(search(mcp, "SCRIPT")) == ["Frontend"]
    assert names(search(mcp, "entica")) == ["Login"]  # inside, neither start nor end
    assert search(mcp, "rust")["total"] == 1 and names(search(mcp, "ust")) == ["Backend"]


def test_whole_word_hit_ranks_above_partial_word_hit(mcp: Session) -> None:
    # the partial hit is created last, so ties (newest first) would put it first; "auth" is in
    # half the observations, so its bm25 is small: a common whole word must still win
    seed(
        mcp,
        [
            entity("Whole", "module", "uses auth daily"),
            entity("Partial", "module", "uses authentication daily"),
        ],
    )
    result = search(mcp, "auth")
    assert names(result) == ["Whole", "Partial"]
    assert result["total"] == 2
    # and the other way round: the whole word now is the longer one; "auth" follows as its
    # synonym (src/memfts/synonyms.txt)
    assert names(search(mcp, "authentication")) == ["Partial", "Whole"]


def test_whole_word_hit_ranks_above_partial_word_hit_among_many(mcp: Session) -> None:
    fillers = [entity(f"Filler {i}", "note", f"nothing to see {i}") for i in range(8)]
    seed(
        mcp,
        [
            entity("Whole", "module", "uses auth daily"),
            *fillers,
            entity("Partial", "module", "uses authentication daily"),
        ],
    )
    assert names(search(mcp, "auth")) == ["Whole", "Partial"]


def test_whole_word_name_ranks_above_partial_word_name(mcp: Session) -> None:
    seed(mcp, [entity("Script", "tool", "x"), entity("TypeScript", "tool", "x")])
    assert names(search(mcp, "script")) == ["Script", "TypeScript"]


def test_short_words_match_whole_words_only(mcp: Session) -> None:
    seed(mcp, [entity("Jason", "person", "writes json"), entity("Node", "tool", "node.js")])
    assert names(search(mcp, "js")) == ["Node"]  # not inside "json"


# ---- 4. typos ----------------------------------------------------------------------------------


@pytest.fixture
def databases(mcp: Session) -> Session:
    seed(
        mcp,
        [
            entity("Db", "service", "runs postgres 16"),
            entity("Cache", "service", "runs redis"),
            entity("Legacy", "service", "runs mysql"),
        ],
    )
    return mcp


def test_typo_is_corrected_and_searched(databases: Session) -> None:
    result = search(databases, "postgress")
    assert result["correctedQuery"] == "postgres"
    assert "postgres" in result["suggestions"]
    assert names(result) == ["Db"]
    assert result["total"] == 1


def test_typo_among_correct_words_is_corrected(databases: Session) -> None:
    result = search(databases, "postgress 16")
    assert result["correctedQuery"] == "postgres 16"
    assert names(result) == ["Db"]


def test_typo_next_to_a_matching_word_only_suggests(databases: Session) -> None:
    # "mysql" matches, so the query is not rewritten; the unknown word gets a suggestion
    result = search(databases, "postgress mysql")
    assert "correctedQuery" not in result
    assert result["suggestions"] == ["postgres"]
    assert names(result) == ["Legacy"]


def test_words_written_together_are_searched_apart(mcp: Session) -> None:
    seed(
        mcp,
        [
            entity("user_service", "service", "handles user sign-up"),
            entity("auth-middleware", "library", "checks tokens"),
        ],
    )
    for typed, searched, found in [
        ("checkstokens", "checks tokens", "auth-middleware"),
        ("userservice", "user service", "user_service"),
        ("authmiddleware", "auth middleware", "auth-middleware"),
    ]:
        result = search(mcp, typed)
        assert result["correctedQuery"] == searched
        assert names(result) == [found]
    # a word the synonym table knows is found as its synonym, without correction
    result = search(mcp, "signup")
    assert "correctedQuery" not in result
    assert names(result) == ["user_service"]


def test_a_question_finds_what_it_is_about(mcp: Session) -> None:
    """Models ask in sentences. The question words match nearly everything; left in, an
    entity holding "what", "does", "the" outranked the one about the editor."""
    seed(
        mcp,
        [
            entity("User", "person", "Prefers Neovim as the editor"),
            entity("Meeting", "meeting", "Discussed what the team does for the user"),
            entity("billing-service", "service", "Deploy fails when REDIS_URL is unset"),
            entity("Atlas", "project", "What does the deploy do? The CI does it"),
            entity("The Who", "band", "A rock band"),
        ],
    )
    assert names(search(mcp, "what editor does the user prefer"))[0] == "User"
    assert names(search(mcp, "why does the deploy fail"))[0] == "billing-service"
    # made only of such words, or quoted, they are searched as they are
    assert complete(search(mcp, "the who")) == ["The Who"]
    assert sorted(complete(search(mcp, '"what does" deploy'))) == ["Atlas"]


def test_no_correction_when_the_query_matches(databases: Session) -> None:
    result = search(databases, "postgres")
    assert names(result) == ["Db"]
    assert "correctedQuery" not in result and "suggestions" not in result


def test_gibberish_finds_nothing_and_suggests_nothing(databases: Session) -> None:
    result = search(databases, "xqzvwkj")
    assert result == {"entities": [], "relations": [], "total": 0}


# ---- 5. query syntax ---------------------------------------------------------------------------


@pytest.fixture
def drinks(mcp: Session) -> Session:
    seed(
        mcp,
        [
            entity("Alice", "person", "likes green tea"),
            entity("Bob", "person", "likes tea that is green", "met alice at the park"),
            entity("Carol", "robot", "likes green tea too"),
            entity("Dave", "person", "drinks coffee"),
            entity("Teapot", "thing", "holds water"),
            entity("Mug", "thing", "coffee or water"),
        ],
    )
    return mcp


def test_exact_phrase_needs_adjacent_words(drinks: Session) -> None:
    assert sorted(complete(search(drinks, "green tea"))) == ["Alice", "Bob", "Carol"]
    phrase = search(drinks, '"green tea"')
    assert sorted(names(phrase)) == ["Alice", "Carol"]  # Bob has both words, apart
    assert phrase["total"] == 2
    assert search(drinks, '"tea green"')["entities"] == []


def test_minus_excludes(drinks: Session) -> None:
    assert sorted(complete(search(drinks, "green tea -robot"))) == ["Alice", "Bob"]
    assert sorted(names(search(drinks, "green -park"))) == ["Alice", "Carol"]


def test_not_excludes(drinks: Session) -> None:
    result = search(drinks, "green tea NOT robot")
    assert sorted(complete(result)) == ["Alice", "Bob"]
    assert "Carol" not in names(result)


def test_or_matches_either_word(drinks: Session) -> None:
    # without OR every word is required: only Mug has both (the others fill the page after)
    assert complete(search(drinks, "coffee water")) == ["Mug"]
    either = search(drinks, "coffee OR water")
    assert sorted(names(either)) == ["Dave", "Mug", "Teapot"]
    assert either["total"] == 3


def test_prefix_star_matches_word_starts(drinks: Session) -> None:
    # "te" is too short to match inside words: a whole word only, and there is none
    assert search(drinks, "te")["total"] == 0
    assert sorted(names(search(drinks, "te*"))) == ["Alice", "Bob", "Carol", "Teapot"]
    # a prefix matches word starts, never insides
    assert names(search(drinks, "pot")) == ["Teapot"]
    assert search(drinks, "pot*")["entities"] == []


def test_type_filter_in_query(drinks: Session) -> None:
    result = search(drinks, "type:person tea")
    assert sorted(names(result)) == ["Alice", "Bob"]
    assert result["total"] == 2
    assert sorted(names(search(drinks, "tea type:PERSON"))) == ["Alice", "Bob"]
    assert sorted(names(search(drinks, 'type:"robot"'))) == ["Carol"]
    # alone, it lists every entity of the type
    assert sorted(names(search(drinks, "type:person"))) == ["Alice", "Bob", "Dave"]


def test_negated_type_filter_leaves_that_type_out(drinks: Session) -> None:
    # Carol's "tea" is a whole word, the Teapot's is part of its name
    assert names(search(drinks, "-type:person tea")) == ["Carol", "Teapot"]
    assert names(search(drinks, "tea NOT type:Person")) == ["Carol", "Teapot"]
    # alone, it lists every entity of the other types
    assert sorted(names(search(drinks, "-type:person"))) == ["Carol", "Mug", "Teapot"]


def test_review_cases_of_syntax_with_punctuation_stopwords_and_types(mcp: Session) -> None:
    seed(
        mcp,
        [
            entity("A", "tool", "uses node.js for the backend"),
            entity("B", "tool", "uses next.js and react"),
            entity("C", "thing", "a node in the graph"),
            entity("it", "word", "alpha"),
            entity("Other", "word", "alpha mention it"),
            entity("P", "person", "misspelled word here"),
            entity("Q", "project", "misspelled word there"),
        ],
    )
    # "-node.js" leaves out node.js, not every entity with "node" or "js"
    assert names(search(mcp, "uses -node.js")) == ["B"]
    # a name filter is never dropped as a question word
    assert complete(search(mcp, "name:it alpha")) == ["it"]
    # the type exclusion still holds when a typo is corrected
    corrected = search(mcp, "mispelled -type:person")
    assert corrected["correctedQuery"] == "misspelled"
    assert names(corrected) == ["Q"]
    # the last code point of Unicode is an ordinary character
    assert search(mcp, "a\U0010ffffbcd")["total"] == 0


def test_name_filter_in_query(drinks: Session) -> None:
    assert sorted(names(search(drinks, "alice"))) == ["Alice", "Bob"]  # Bob mentions her
    assert names(search(drinks, "name:alice")) == ["Alice"]
    assert names(search(drinks, "name:tea")) == ["Teapot"]  # not the tea drinkers


@pytest.mark.parametrize(
    ("broken", "same_as"),
    [
        ('"green tea', "green tea"),
        ('green tea"', "green tea"),
        ("(green tea", "green tea"),
        ("green tea)", "green tea"),
        ("green OR", "green"),
        ("OR green", "green"),
        ("green -", "green"),
        ("green NOT", "green"),
        ("green AND", "green"),
        ("green*)", "green*"),
        ("name: green", "green"),
    ],
)
def test_broken_syntax_around_words_reads_as_those_words(
    drinks: Session, broken: str, same_as: str
) -> None:
    result = search(drinks, broken)
    assert result["entities"], f"{broken!r} found nothing"
    assert result == search(drinks, same_as)


@pytest.mark.parametrize("broken", ['"unbalanced', "(", ")", "OR", "-", "NOT", "type:", "*", '"'])
def test_broken_syntax_alone_is_a_normal_empty_result(drinks: Session, broken: str) -> None:
    result = drinks.call("search_nodes", {"query": broken})
    assert not result.is_error, error_text(result)
    structured = result.structured_content
    assert structured is not None
    assert structured["entities"] == [] and structured["total"] == 0
    assert structured["relations"] == []


# ---- 6. snippets, compact, and the default shape ----------------------------------------------


def test_default_result_has_exactly_the_official_shape(drinks: Session) -> None:
    drinks.ok("create_relations", {"relations": [relation("Alice", "Dave", "knows")]})
    result = drinks.ok("search_nodes", {"query": "drinks"})
    # the official graph shape (no snippets, no null extras) plus `total`
    assert result.structured_content == {
        "entities": [entity("Dave", "person", "drinks coffee")],
        "relations": [relation("Alice", "Dave", "knows")],
        "total": 1,
    }
    assert only_text(result) == json.dumps(result.structured_content, indent=2, ensure_ascii=False)


def test_snippets_mark_the_hits(drinks: Session) -> None:
    result = search(drinks, "green tea", snippets=True)
    by_name = {e["name"]: e for e in result["entities"] if e["name"] in complete(result)}
    assert sorted(by_name) == ["Alice", "Bob", "Carol"]
    for hit in by_name.values():
        assert sorted(hit) == ["entityType", "name", "observations", "snippets"]
    assert by_name["Alice"]["snippets"] == ["likes **green** **tea**"]
    assert by_name["Alice"]["observations"] == ["likes green tea"]
    assert by_name["Bob"]["snippets"] == ["likes **tea** that is **green**"]  # not the park
    assert "relations" in result


def test_snippets_mark_partial_words(mcp: Session) -> None:
    seed(mcp, [entity("Login", "module", "handles authentication for users", "unrelated")])
    [hit] = search(mcp, "auth", snippets=True)["entities"]
    assert hit["snippets"] == ["handles **authentication** for users"]


def test_snippets_empty_for_a_name_only_hit(drinks: Session) -> None:
    result = search(drinks, "teapot", snippets=True)
    assert result["entities"] == [
        {"name": "Teapot", "entityType": "thing", "observations": ["holds water"], "snippets": []}
    ]


def test_compact_returns_names_types_and_snippets_only(drinks: Session) -> None:
    drinks.ok("create_relations", {"relations": [relation("Alice", "Dave", "knows")]})
    result = search(drinks, '"green tea"', compact=True)
    assert sorted(result) == ["entities", "total"]  # no relations
    assert sorted(result["entities"], key=lambda e: e["name"]) == [
        {"name": "Alice", "entityType": "person", "snippets": ["likes **green tea**"]},
        {"name": "Carol", "entityType": "robot", "snippets": ["likes **green tea** too"]},
    ]
    assert result["total"] == 2


# ---- 7. depth ----------------------------------------------------------------------------------


@pytest.fixture
def chain(mcp: Session) -> Session:
    """Alice -knows-> Dave -owns-> Teapot -sits_on-> Shelf; Eve knows nobody."""
    seed(
        mcp,
        [
            entity("Alice", "person", "likes green tea"),
            entity("Carol", "robot", "likes green tea too"),
            entity("Dave", "person", "drinks coffee"),
            entity("Teapot", "thing", "holds water"),
            entity("Shelf", "thing", "made of oak"),
            entity("Eve", "person", "listens"),
        ],
        [
            relation("Alice", "Dave", "knows"),
            relation("Dave", "Teapot", "owns"),
            relation("Teapot", "Shelf", "sits_on"),
            relation("Carol", "Alice", "admires"),
        ],
    )
    return mcp


def test_depth_zero_returns_only_hits(chain: Session) -> None:
    assert names(search(chain, "coffee")) == ["Dave"]
    assert names(search(chain, "coffee", depth=0)) == ["Dave"]


def test_depth_one_adds_neighbours_both_ways_after_hits(chain: Session) -> None:
    result = search(chain, "coffee", depth=1)
    assert names(result)[0] == "Dave"
    assert sorted(names(result)[1:]) == ["Alice", "Teapot"]  # incoming and outgoing
    assert result["total"] == 1  # total counts matches, not neighbours
    assert relation("Alice", "Dave", "knows") in result["relations"]


def test_depth_two_adds_second_hop_after_first(chain: Session) -> None:
    result = search(chain, "water", depth=2)
    assert names(result)[0] == "Teapot"
    assert sorted(names(result)[1:3]) == ["Dave", "Shelf"]
    assert names(result)[3:] == ["Alice"]
    assert "Eve" not in names(result) and "Carol" not in names(result)
    assert search(chain, "water", depth=1)["total"] == 1


def test_depth_ranks_neighbours_after_every_hit(chain: Session) -> None:
    # Alice and Carol both hit; Carol -> Alice is between hits, so no duplicate
    result = search(chain, '"green tea"', depth=1)
    assert sorted(names(result)[:2]) == ["Alice", "Carol"]
    assert names(result)[2:] == ["Dave"]
    assert len(names(result)) == len(set(names(result)))


@pytest.mark.parametrize("depth", [3, -1, 100])
def test_out_of_range_depth_is_a_tool_error_naming_depth(chain: Session, depth: int) -> None:
    result = chain.call("search_nodes", {"query": "coffee", "depth": depth})
    assert result.is_error
    assert result.structured_content is None
    assert "depth" in error_text(result)


# ---- 8. entityType and limit ------------------------------------------------------------------


def test_entity_type_argument_filters_case_insensitively(drinks: Session) -> None:
    for entity_type in ("person", "PERSON", "Person"):
        result = search(drinks, "tea", entityType=entity_type)
        assert sorted(names(result)) == ["Alice", "Bob"]
        assert result["total"] == 2
    assert search(drinks, "tea", entityType="planet") == {
        "entities": [],
        "relations": [],
        "total": 0,
    }


def test_entity_type_argument_with_empty_query_lists_that_type(drinks: Session) -> None:
    assert sorted(names(search(drinks, "", entityType="thing"))) == ["Mug", "Teapot"]


def test_limit_cuts_the_ranking_and_total_counts_all(drinks: Session) -> None:
    full = search(drinks, "tea")
    assert len(full["entities"]) == full["total"] == 4  # Alice, Bob, Carol, Teapot
    for limit in (1, 2, 3):
        page = search(drinks, "tea", limit=limit)
        assert names(page) == names(full)[:limit]
        assert page["total"] == 4


def test_limit_and_entity_type_together(drinks: Session) -> None:
    page = search(drinks, "tea", entityType="person", limit=1)
    assert len(page["entities"]) == 1
    assert page["entities"][0]["name"] in ("Alice", "Bob")
    assert page["total"] == 2


def test_limit_above_the_maximum_is_a_tool_error_naming_limit(drinks: Session) -> None:
    result = drinks.call("search_nodes", {"query": "tea", "limit": 10_001})
    assert result.is_error
    assert "limit" in error_text(result)

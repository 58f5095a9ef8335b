"""memfts beside the real official server (npm, ``tests/node``): what ``tools/list``,
``resources/list`` and ``initialize`` show a client must match, so that a client, or a model
prompted with the official server's tools, sees the same thing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import anyio
import mcp
import pytest
from mcp import StdioServerParameters

from conftest import node_tool
from mcp_session import params_for

Listing = dict[str, Any]


def listed(params: StdioServerParameters) -> Listing:
    async def ask() -> dict[str, Any]:
        async with mcp.Client(params, mode="legacy") as client:
            tools = (await client.list_tools()).tools
            resources = (await client.list_resources()).resources
            return {
                "tools": {
                    t.name: t.model_dump(mode="json", by_alias=True, exclude_none=True)
                    for t in tools
                },
                "resources": [
                    r.model_dump(mode="json", by_alias=True, exclude_none=True) for r in resources
                ],
                "capabilities": client.server_capabilities,
            }

    return anyio.run(ask)


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Listing, Listing]]:
    tmp = tmp_path_factory.mktemp("parity")
    official = StdioServerParameters(
        command=str(node_tool("mcp-server-memory")),
        env={"PATH": os.environ["PATH"], "MEMORY_FILE_PATH": str(tmp / "memory.jsonl")},
    )
    yield listed(official), listed(params_for(tmp / "memory.db"))


def properties(schema: dict[str, Any], path: str = "") -> dict[str, dict[str, Any]]:
    """Every property of a schema, nested ones by their dotted path (array items as ``[]``)."""
    found: dict[str, dict[str, Any]] = {}
    for name, prop in schema.get("properties", {}).items():
        variants = [v for v in prop.get("anyOf", [prop]) if v.get("type") != "null"]
        if len(variants) == 1:  # optional in memfts' result (`X | None`): X is what it holds
            prop = {**prop, **variants[0]}
        where = f"{path}{name}"
        found[where] = prop
        found |= properties(prop, f"{where}.")
        if "items" in prop:
            found |= properties(prop["items"], f"{where}[].")
    return found


def test_the_same_nine_tools_titles_descriptions_and_annotations(both: Any) -> None:
    official, memfts = both
    assert sorted(memfts["tools"]) == sorted(official["tools"])
    for name, tool in official["tools"].items():
        ours = memfts["tools"][name]
        assert ours["title"] == tool["title"], name
        assert ours["annotations"] == tool["annotations"], name
        if name == "search_nodes":  # the official text, then what ranked search adds
            assert ours["description"].startswith(tool["description"])
        else:
            assert ours["description"] == tool["description"], name


def test_every_official_argument_is_there_with_its_type_and_description(both: Any) -> None:
    official, memfts = both
    for name, tool in official["tools"].items():
        ours = properties(memfts["tools"][name]["inputSchema"])
        for where, prop in properties(tool["inputSchema"]).items():
            assert where in ours, f"{name}: {where} missing"
            assert ours[where].get("type") == prop.get("type"), f"{name}: {where}"
            assert ours[where].get("description") == prop.get("description"), f"{name}: {where}"
        required = set(tool["inputSchema"].get("required", []))
        assert set(memfts["tools"][name]["inputSchema"].get("required", [])) == required, name


def test_every_official_result_field_is_declared(both: Any) -> None:
    official, memfts = both
    for name, tool in official["tools"].items():
        ours = properties(memfts["tools"][name]["outputSchema"])
        for where, prop in properties(tool["outputSchema"]).items():
            assert where in ours, f"{name}: result field {where} missing"
            if "type" in prop and "type" in ours[where]:
                assert ours[where]["type"] == prop["type"], f"{name}: {where}"


def test_the_same_resource_and_subscribe_capability(both: Any) -> None:
    official, memfts = both
    assert memfts["resources"] == official["resources"]
    assert official["capabilities"].resources.subscribe is True
    assert memfts["capabilities"].resources.subscribe is True

"""The official memory server's storage and search, re-implemented line for line in Python.

``@modelcontextprotocol/server-memory`` (``src/memory/index.ts``) keeps the graph in a JSONL
file and re-reads all of it on every call: ``loadGraph`` reads the file, splits it into lines,
``JSON.parse``-s each one and sorts records into entities and relations; ``searchNodes`` keeps
the entities whose name, type or any observation contains the whole query as a
case-insensitive substring (no ranking, no limit) plus every relation with either endpoint
among them; every write is load, modify, then ``saveGraph`` (write a temp file, rename it over
the original). This module does the same, so the baseline can be timed in-process at sizes
where driving the real Node server over the Python MCP client would measure the client
(multi-MB responses; see stack-facts B4). ``bench/run.py`` also drives the real server to
check the two agree.
"""

from __future__ import annotations

import gc
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Graph = dict[str, list[dict[str, Any]]]


@dataclass
class JsonlMemory:
    path: Path

    def load_graph(self) -> Graph:
        try:
            data = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {"entities": [], "relations": []}
        graph: Graph = {"entities": [], "relations": []}
        # Python's cyclic GC would rescan the growing graph many times during the parse (2-3x
        # slower); V8 has no such cost, so keep the baseline as fast as Python allows
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            self._parse_into(graph, data)
        finally:
            if gc_was_enabled:
                gc.enable()
        return graph

    @staticmethod
    def _parse_into(graph: Graph, data: str) -> None:
        for line in data.split("\n"):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if not isinstance(item, dict):
                continue
            # the official server validates with zod and keeps only the schema's fields
            if item.get("type") == "entity":
                graph["entities"].append(
                    {
                        "name": item["name"],
                        "entityType": item["entityType"],
                        "observations": item["observations"],
                    }
                )
            elif item.get("type") == "relation":
                graph["relations"].append(
                    {"from": item["from"], "to": item["to"], "relationType": item["relationType"]}
                )

    def save_graph(self, graph: Graph) -> None:
        lines = [
            json.dumps(
                {
                    "type": "entity",
                    "name": e["name"],
                    "entityType": e["entityType"],
                    "observations": e["observations"],
                },
                ensure_ascii=False,
                separators=(",", ":"),
            )
            for e in graph["entities"]
        ] + [
            json.dumps(
                {
                    "type": "relation",
                    "from": r["from"],
                    "to": r["to"],
                    "relationType": r["relationType"],
                },
                ensure_ascii=False,
                separators=(",", ":"),
            )
            for r in graph["relations"]
        ]
        tmp = self.path.with_name(f"{self.path.name}.{secrets.token_hex(16)}.tmp")
        try:
            tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)

    def search_nodes(self, query: str) -> Graph:
        graph = self.load_graph()
        q = query.lower()
        entities = [
            e
            for e in graph["entities"]
            if q in e["name"].lower()
            or q in e["entityType"].lower()
            or any(q in o.lower() for o in e["observations"])
        ]
        names = {e["name"] for e in entities}
        relations = [r for r in graph["relations"] if r["from"] in names or r["to"] in names]
        return {"entities": entities, "relations": relations}

    def add_observations(self, additions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        graph = self.load_graph()
        results = []
        for o in additions:
            entity = next((e for e in graph["entities"] if e["name"] == o["entityName"]), None)
            if entity is None:
                raise KeyError(f"Entity with name {o['entityName']} not found")
            new = [c for c in o["contents"] if c not in entity["observations"]]
            entity["observations"].extend(new)
            results.append({"entityName": o["entityName"], "addedObservations": new})
        self.save_graph(graph)
        return results

    def create_entities(self, entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
        graph = self.load_graph()
        existing = [e["name"] for e in graph["entities"]]  # the official .some(): a linear scan
        new = [
            e
            for i, e in enumerate(entities)
            if e["name"] not in existing and all(p["name"] != e["name"] for p in entities[:i])
        ]
        graph["entities"].extend(new)
        self.save_graph(graph)
        return new

    def result_json(self, graph: Graph) -> str:
        """The tool's text block: ``JSON.stringify(graph, null, 2)``."""
        return json.dumps(graph, indent=2, ensure_ascii=False)

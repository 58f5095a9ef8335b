"""``memfts ui``: a local web page to read and curate the memory the agents write.

Server-rendered HTML (Jinja2 templates, every value escaped unless a filter here builds the
markup itself from escaped pieces) and one small script (``static/ui.js``) that refreshes
the page when any process writes to the file. Every read and write is a :class:`Store` or
:class:`Curation` method run in a worker thread, so the event loop never waits on SQLite.
Writes are POST-redirect-GET; destructive ones (delete, merge) show what will change and need
a second, confirming POST. Who may reach the page is :mod:`memfts.ui_security`'s job.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable
from datetime import datetime
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlencode

import anyio.to_thread
from jinja2 import Environment, PackageLoader
from markupsafe import Markup, escape
from mcp.server.transport_security import RequestBodyLimitMiddleware
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from memfts import ui_graph
from memfts.cli import size_text
from memfts.curation import Curation
from memfts.errors import (
    DuplicateObservationError,
    EntityNotFoundError,
    InputTooLargeError,
    InvalidInputError,
    MemftsError,
    NameTakenError,
    ObservationNotFoundError,
    StoreBusyError,
)
from memfts.store import Store
from memfts.ui_security import CSRF_FIELD, CsrfToken, guarded

T = TypeVar("T")

SEARCH_LIMIT = 20
MORE_STEP = 50
MAX_PAGE_LIMIT = 500
GRAPH_NODES = 50
OBSERVATIONS_PER_PAGE = 200
"""An entity page lists this many observations at a time (each comes with its edit forms)."""
MAX_FORM_BYTES = 1_000_000
"""Largest form a write may post, at least: an edited observation fits whatever the store's
limit (see :func:`build_app`)."""

_STATUS = {
    EntityNotFoundError: 404,
    ObservationNotFoundError: 409,
    NameTakenError: 409,
    DuplicateObservationError: 409,
    InvalidInputError: 400,
    InputTooLargeError: 400,
    StoreBusyError: 503,
}

_NOTICES = {
    "renamed": "Renamed from {from_}.",
    "retyped": "Type changed.",
    "edited": "Observation edited.",
    "observation-deleted": "Observation deleted.",
    "merged": "Merged {from_} into this entity.",
    "deleted": "Deleted {name}.",
}
"""What a redirect after a write says; only these texts, with names filled in (escaped)."""


SNIPPET_MARKS = ("\ue000", "\ue001")
"""What the page asks the search to put around the words that matched: characters of Unicode's
private use area, where the search's own ``**`` would be Markdown bold in agents' text."""


def _marked(snippet: str) -> Markup:
    """A search snippet with its hits in ``<mark>``: the text escaped, the marks ours (text
    that itself holds a mark character shifts the highlighting, never the escaping)."""
    start, end = SNIPPET_MARKS
    parts = snippet.replace(end, start).split(start)
    return Markup("").join(
        Markup("<mark>%s</mark>") % part if i % 2 else escape(part) for i, part in enumerate(parts)
    )


def _ago(microseconds: int) -> str:
    if not microseconds:
        return "never recorded"
    seconds = time.time() - microseconds / 1e6
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' * (n != 1)} ago"
    return "just now"


def _stamp(microseconds: int) -> str:
    if not microseconds:
        return ""
    return datetime.fromtimestamp(microseconds / 1e6).astimezone().isoformat(timespec="seconds")


def stored_field(text: str) -> str:
    """Stored text as a hidden form field's value: percent-encoded, so that it comes back as
    it was (a browser sends every line break of a form field as CR LF)."""
    return quote(text, safe="")


def observation_digest(observation: str) -> str:
    """What a form names an observation by: its text may be long, and would not come back
    exactly (see :func:`stored_field`)."""
    return hashlib.sha256(observation.encode("utf-8")).hexdigest()


def _link(path: str, **params: object) -> str:
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return f"{path}?{query}" if query else path


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("memfts", "templates"),
        autoescape=True,  # every template, whatever its file name
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        marked=_marked,
        ago=_ago,
        stamp=_stamp,
        size=size_text,
        exact=stored_field,
        digest=observation_digest,
    )
    env.globals.update(link=_link, csrf_field=CSRF_FIELD)
    return env


class UiApp:
    """The pages and actions of ``memfts ui`` over one store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.curation = Curation(store)
        self.csrf = CsrfToken()
        self.templates = _environment()
        self.max_form_bytes = max_form_bytes(store)

    # ---- plumbing ------------------------------------------------------------------------

    async def _call(self, request: Request, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """Run a store or curation method in a worker thread; its time is added to the
        request's."""
        started = time.perf_counter()
        try:
            return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kw))
        finally:
            spent = getattr(request.state, "store_ms", 0.0)
            request.state.store_ms = spent + (time.perf_counter() - started) * 1000

    async def _page(
        self, request: Request, template: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        """Render a page. The change marker is read before the page's data by the caller
        (see :meth:`_version`), so a write landing in between makes the page refresh once
        more rather than never."""
        version = getattr(request.state, "version", None)
        if version is None:
            version = await self._version(request)
        done = request.query_params.get("done")
        notice = None
        # only after this page's own redirect: a link from another site names it too
        if done in _NOTICES and request.headers.get("sec-fetch-site", "same-origin") == (
            "same-origin"
        ):
            notice = _NOTICES[done].format(
                from_=repr(request.query_params.get("from", "")),
                name=repr(request.query_params.get("name", "")),
            )
        # rendering a page of a large entity takes milliseconds: off the event loop too
        html = await anyio.to_thread.run_sync(
            functools.partial(
                self.templates.get_template(template).render,
                csrf=self.csrf.value,
                version=version,
                notice=notice,
                request=request,
                **context,
            )
        )
        store_ms = getattr(request.state, "store_ms", 0.0)
        return HTMLResponse(
            html, status_code=status, headers={"server-timing": f"store;dur={store_ms:.1f}"}
        )

    async def _version(self, request: Request) -> int:
        request.state.version = await self._call(request, self.store.data_version)
        return int(request.state.version)

    async def _form(self, request: Request) -> FormData:
        """The posted form, if it carries this page's CSRF token; else 403. (A body over
        :attr:`max_form_bytes` was refused with 413 before it was read.)"""
        form = await request.form(max_files=0, max_fields=20, max_part_size=self.max_form_bytes)
        if not self.csrf.matches(form.get(CSRF_FIELD)):
            raise HTTPException(
                403, "the form's CSRF token is missing or stale: reload the page and try again"
            )
        return form

    @staticmethod
    def _field(form: FormData, name: str) -> str:
        """What the person typed in the field ``name``."""
        value = form.get(name)
        if not isinstance(value, str):
            raise HTTPException(400, f"the form has no {name!r} field")
        # a browser sends CR LF for a textarea's line breaks: store what was typed
        return value.replace("\r\n", "\n")

    @staticmethod
    def _stored(form: FormData, name: str) -> str:
        """The stored text the page put in the hidden field ``name`` (see :func:`stored_field`)."""
        value = form.get(name)
        if not isinstance(value, str):
            raise HTTPException(400, f"the form has no {name!r} field")
        return unquote(value)

    async def _observation(self, request: Request, name: str, form: FormData) -> str:
        """The text of the observation of ``name`` the form names by its digest."""
        digest = self._field(form, "observation")
        detail = await self._call(request, self.curation.entity_detail, name, 0)
        if detail is None:
            raise EntityNotFoundError(name)
        for content in detail.observations:
            if observation_digest(content) == digest:
                return content
        raise ObservationNotFoundError(
            f"{name!r} no longer has that observation (it changed meanwhile): reload the "
            "entity and try again"
        )

    # ---- pages ---------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        """Search (the same engine as search_nodes), or the entities of one type (``?type=``:
        any characters, where ``type:`` in a query cannot hold a quote); without either, the
        latest changes."""
        await self._version(request)
        query = request.query_params.get("q", "")
        entity_type = request.query_params.get("type") or None
        limit = _int(request.query_params.get("limit"), SEARCH_LIMIT, 1, MAX_PAGE_LIMIT)
        if not query.strip() and entity_type is None:
            recent = await self._call(request, self.curation.recent_changes, SEARCH_LIMIT)
            stats = await self._call(request, self.store.stats)
            return await self._page(request, "home.html", recent=recent, stats=stats, query="")
        started = time.perf_counter()
        try:
            result = await self._call(
                request,
                self.store.search_nodes,
                query,
                limit,
                entity_type,
                snippets=True,
                marks=SNIPPET_MARKS,
            )
        except MemftsError as exc:
            return await self._page(
                request, "search.html", 400, query=query, entity_type=entity_type, error=str(exc)
            )
        search_ms = (time.perf_counter() - started) * 1000
        return await self._page(
            request,
            "search.html",
            query=query,
            entity_type=entity_type,
            result=result,
            limit=limit,
            more=min(limit + MORE_STEP, MAX_PAGE_LIMIT),
            search_ms=search_ms,
        )

    async def entity(self, request: Request, error: MemftsError | None = None) -> Response:
        await self._version(request)
        name = request.query_params.get("name", "")
        if error is not None:  # re-shown after a failed write: the names come from its form
            name = request.state.entity_name
        detail = await self._call(request, self.curation.entity_detail, name)
        if detail is None:
            return await self._page(request, "missing.html", 404, name=name)
        status = 200 if error is None else _STATUS.get(type(error), 500)
        total = len(detail.observations)
        first = _observation_page(request, total)
        return await self._page(
            request,
            "entity.html",
            status,
            entity=detail,
            first=first,
            shown=detail.observations[first - 1 : first - 1 + OBSERVATIONS_PER_PAGE],
            per_page=OBSERVATIONS_PER_PAGE,
            error=None if error is None else request.state.error_message or str(error),
            taken=getattr(request.state, "taken", None),
        )

    async def graph(self, request: Request) -> Response:
        await self._version(request)
        name = request.query_params.get("name", "")
        depth = _int(request.query_params.get("depth"), 1, 1, 2)
        hood = await self._call(request, self.curation.neighbourhood, name, depth, GRAPH_NODES)
        alone = len(hood.nodes) == 1
        if alone and await self._call(request, self.curation.entity_detail, name) is None:
            return await self._page(request, "missing.html", 404, name=name)
        layout = ui_graph.layout(hood)
        return await self._page(
            request,
            "graph.html",
            hood=hood,
            layout=layout,
            depth=depth,
            node_radius=ui_graph.NODE_RADIUS,
            centre_radius=ui_graph.CENTRE_RADIUS,
        )

    async def recent(self, request: Request) -> Response:
        await self._version(request)
        limit = _int(request.query_params.get("limit"), 100, 1, MAX_PAGE_LIMIT)
        recent = await self._call(request, self.curation.recent_changes, limit)
        return await self._page(request, "recent.html", recent=recent, limit=limit)

    async def duplicates(self, request: Request) -> Response:
        await self._version(request)
        found = await self._call(request, self.curation.likely_duplicates, 100)
        return await self._page(request, "duplicates.html", found=found)

    async def stats(self, request: Request) -> Response:
        await self._version(request)
        stats = await self._call(request, self.store.stats)
        types = await self._call(request, self.curation.entity_types, 30)
        return await self._page(request, "stats.html", stats=stats, types=types)

    async def version(self, request: Request) -> Response:
        """The change marker the page polls: it differs as soon as any process commits."""
        version = await self._call(request, self.store.data_version)
        return JSONResponse({"version": version})

    # ---- writes --------------------------------------------------------------------------

    async def _failed(
        self, request: Request, name: str, error: MemftsError, message: str | None = None
    ) -> Response:
        """The entity page again, saying why the write was refused (nothing changed): the
        error's own words, or ``message`` where the page knows better what went wrong."""
        request.state.entity_name = name
        request.state.error_message = message
        return await self.entity(request, error)

    async def rename(self, request: Request) -> Response:
        form = await self._form(request)
        name, new_name = self._stored(form, "name"), self._field(form, "new_name").strip()
        try:
            await self._call(request, self.curation.rename_entity, name, new_name)
        except NameTakenError as exc:
            request.state.taken = new_name  # offer the merge that was meant
            return await self._failed(request, name, exc)
        except MemftsError as exc:
            return await self._failed(request, name, exc)
        return _see(request, _link("/entity", name=new_name, done="renamed", **{"from": name}))

    async def retype(self, request: Request) -> Response:
        form = await self._form(request)
        name, entity_type = self._stored(form, "name"), self._field(form, "type").strip()
        try:
            await self._call(request, self.curation.set_entity_type, name, entity_type)
        except MemftsError as exc:
            return await self._failed(request, name, exc)
        return _see(request, _link("/entity", name=name, done="retyped"))

    async def edit_observation(self, request: Request) -> Response:
        form = await self._form(request)
        name, new = self._stored(form, "name"), self._field(form, "new")
        try:
            old = await self._observation(request, name, form)
            await self._call(request, self.curation.edit_observation, name, old, new)
        except MemftsError as exc:
            return await self._failed(request, name, exc)
        return _see(
            request, _link("/entity", name=name, obs=request.query_params.get("obs"), done="edited")
        )

    async def delete_observation(self, request: Request) -> Response:
        form = await self._form(request)
        name = self._stored(form, "name")
        try:
            content = await self._observation(request, name, form)
            if form.get("confirmed") != "yes":
                return await self._confirm(
                    request,
                    title=f"Delete this observation of {name!r}?",
                    changes=[content],
                    action=_link("/observation/delete", obs=request.query_params.get("obs")),
                    fields={"name": name, "observation": observation_digest(content)},
                    button="Delete the observation",
                    back=_link("/entity", name=name, obs=request.query_params.get("obs")),
                )
            await self._call(request, self.curation.delete_observation, name, content)
        except MemftsError as exc:
            return await self._failed(request, name, exc)
        return _see(
            request,
            _link(
                "/entity",
                name=name,
                obs=request.query_params.get("obs"),
                done="observation-deleted",
            ),
        )

    async def delete_entity(self, request: Request) -> Response:
        form = await self._form(request)
        name = self._stored(form, "name")
        try:
            if form.get("confirmed") != "yes":
                preview = await self._call(request, self.curation.delete_entity, name, dry_run=True)
                return await self._confirm(
                    request,
                    title=f"Delete {name!r}?",
                    changes=[
                        f"{name!r} ({preview.entityType}) is deleted",
                        f"with its {_plural(preview.observations, 'observation')}",
                        f"and {_plural(preview.relations, 'relation')} to or from it",
                    ],
                    action="/entity/delete",
                    fields={"name": name},
                    button=f"Delete {name}",
                    back=_link("/entity", name=name),
                )
            await self._call(request, self.curation.delete_entity, name)
        except MemftsError as exc:
            return await self._failed(request, name, exc)
        return _see(request, _link("/", done="deleted", name=name))

    async def merge(self, request: Request) -> Response:
        form = await self._form(request)
        source = self._stored(form, "source")
        # the name typed in the entity's "Merge into" box, or one the page gave
        target = (
            self._field(form, "into").strip() if "into" in form else self._stored(form, "target")
        )
        try:
            if form.get("confirmed") != "yes":
                preview = await self._call(
                    request, self.curation.merge_entities, source, target, dry_run=True
                )
                return await self._confirm(
                    request,
                    title=f"Merge {source!r} into {target!r}?",
                    changes=[
                        f"{_plural(preview.observations_added, 'observation')} of {source!r} "
                        f"appended to {target!r}"
                        + (
                            f" ({preview.observations_shared} it already has are skipped)"
                            if preview.observations_shared
                            else ""
                        ),
                        f"{_plural(preview.relations_moved, 'relation')} re-pointed to "
                        f"{target!r}"
                        + (
                            f" ({preview.relations_shared} it already has are dropped)"
                            if preview.relations_shared
                            else ""
                        ),
                        *(
                            [
                                f"{_plural(preview.relations_between, 'relation')} between the "
                                "two dropped (they would relate it to itself)"
                            ]
                            if preview.relations_between
                            else []
                        ),
                        f"{source!r} is deleted; {target!r} keeps its name and type",
                    ],
                    action="/merge",
                    fields={"source": source, "target": target},
                    button=f"Merge into {target}",
                    back=_link("/entity", name=source),
                )
            await self._call(request, self.curation.merge_entities, source, target)
        except EntityNotFoundError as exc:
            if exc.name != target:
                return await self._failed(request, source, exc)
            return await self._failed(
                request,
                source,
                exc,
                f"no entity is named {target!r} to merge {source!r} into: give the exact name "
                "of the entity to keep, capitals included (a search finds it)",
            )
        except MemftsError as exc:
            return await self._failed(request, source, exc)
        return _see(request, _link("/entity", name=target, done="merged", **{"from": source}))

    async def _confirm(
        self,
        request: Request,
        *,
        title: str,
        changes: list[str],
        action: str,
        fields: dict[str, str],
        button: str,
        back: str,
    ) -> Response:
        return await self._page(
            request,
            "confirm.html",
            title=title,
            changes=changes,
            action=action,
            fields=fields,
            button=button,
            back=back,
        )

    async def http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return await self._page(request, "error.html", exc.status_code, message=exc.detail)

    async def store_error(self, request: Request, exc: Exception) -> Response:
        """A read that failed for a reason the user can act on (busy, damaged file...)."""
        status = _STATUS.get(type(exc), 500)
        request.state.version = 0  # the store may be what failed: do not ask it again
        return await self._page(request, "error.html", status, message=str(exc))


def _int(raw: str | None, default: int, least: int, most: int) -> int:
    try:
        return min(max(int(raw or default), least), most)
    except ValueError:
        return default


def max_form_bytes(store: Store) -> int:
    """The largest form a write may post: :data:`MAX_FORM_BYTES`, or more when the store takes
    observations so long that an edited one (4 UTF-8 bytes a character at most, sent as they
    are by the multipart edit form) would not fit."""
    return max(MAX_FORM_BYTES, 4 * store.limits.max_observation_chars + 64_000)


def _observation_page(request: Request, total: int) -> int:
    """The number of the first observation the entity page lists (``?obs=``, 1 = the first):
    a page's first, whatever number was asked for."""
    asked = _int(request.query_params.get("obs"), 1, 1, max(total, 1))
    return (asked - 1) // OBSERVATIONS_PER_PAGE * OBSERVATIONS_PER_PAGE + 1


def _plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'s' * (n != 1)}"


def _see(request: Request, url: str) -> Response:
    """Post/redirect/get: the page to show after a write, with the write's store time."""
    store_ms = getattr(request.state, "store_ms", 0.0)
    return RedirectResponse(
        url, status_code=303, headers={"server-timing": f"store;dur={store_ms:.1f}"}
    )


def build_app(
    store: Store, *, host: str, port: int, token: str | None, extra_hosts: tuple[str, ...] = ()
) -> ASGIApp:
    """The page for ``store``, behind the host, token and same-origin rules."""
    ui = UiApp(store)
    static = StaticFiles(directory=str(resources.files("memfts") / "static"))
    app = Starlette(
        routes=[
            Route("/", ui.home),
            Route("/entity", ui.entity),
            Route("/graph", ui.graph),
            Route("/recent", ui.recent),
            Route("/duplicates", ui.duplicates),
            Route("/stats", ui.stats),
            Route("/api/version", ui.version),
            Route("/entity/rename", ui.rename, methods=["POST"]),
            Route("/entity/type", ui.retype, methods=["POST"]),
            Route("/entity/delete", ui.delete_entity, methods=["POST"]),
            Route("/observation/edit", ui.edit_observation, methods=["POST"]),
            Route("/observation/delete", ui.delete_observation, methods=["POST"]),
            Route("/merge", ui.merge, methods=["POST"]),
            Mount("/static", static, name="static"),
        ],
        exception_handlers={HTTPException: ui.http_error, MemftsError: ui.store_error},
    )
    limited = RequestBodyLimitMiddleware(app, ui.max_form_bytes)
    return guarded(limited, host=host, port=port, token=token, extra_hosts=extra_hosts)


def page_url(host: str, port: int, token: str | None) -> str:
    """The address to open; with a token, carrying it once (see :mod:`memfts.ui_security`)."""
    from memfts.http import url_host

    shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    return f"http://{url_host(shown)}:{port}/" + (f"?token={quote(token)}" if token else "")


def serve(
    store: Store, *, host: str, port: int, token: str | None, extra_hosts: tuple[str, ...] = ()
) -> None:
    """Serve the page until interrupted, then return so the caller closes the store."""
    from memfts.http import run

    app = build_app(store, host=host, port=port, token=token, extra_hosts=extra_hosts)
    run(app, host=host, port=port)

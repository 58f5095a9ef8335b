"""The ``memfts`` command: a thin shell over :mod:`memfts.store` and :mod:`memfts.server`.

Output is for people in a terminal (colour unless ``NO_COLOR`` is set or the output is not a
terminal) and ``--json`` is for scripts. A :class:`MemftsError` is one line on stderr and
exit status 1, never a traceback.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import signal
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click

from memfts import __version__
from memfts.errors import DatabaseOpenError, MemftsError

if TYPE_CHECKING:  # the store pulls in apsw: imported when a command needs it
    from memfts.server import MemoryServer
    from memfts.store import Store

DB_ENV = "MEMORY_DB_PATH"
FILE_ENV = "MEMORY_FILE_PATH"
"""The official server's variable: memfts keeps its database beside that file and follows it."""


def default_db_path() -> Path:
    """A per-user data folder that survives package upgrades and reinstalls."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "memfts" / "memory.db"


def followed_file(option: str | None) -> Path | None:
    """The official server's ``$MEMORY_FILE_PATH``, when it decides where the database is:
    set, with neither ``--db`` nor ``$MEMORY_DB_PATH`` (a config that swapped the official
    command for ``memfts`` and kept its variable)."""
    raw = os.environ.get(FILE_ENV)
    if option or os.environ.get(DB_ENV) or not raw:
        return None
    return Path(raw).expanduser().absolute()


def resolve_db_path(option: str | None) -> Path:
    """``--db``, else ``$MEMORY_DB_PATH``, else beside ``$MEMORY_FILE_PATH``'s file (its name
    with ``.memfts.db``), else :func:`default_db_path`; ``~`` expanded, relative paths taken
    from the working directory."""
    followed = followed_file(option)
    if followed is not None:
        return followed.with_name(followed.stem + ".memfts.db")
    raw = option or os.environ.get(DB_ENV) or str(default_db_path())
    return Path(raw).expanduser().absolute()


# ---- output helpers ------------------------------------------------------------------------


def _color() -> bool | None:
    """False when NO_COLOR is set (https://no-color.org); else click decides (terminals only)."""
    return False if os.environ.get("NO_COLOR") else None


def _out(message: str = "", *, err: bool = False, nl: bool = True) -> None:
    click.echo(message, err=err, nl=nl, color=_color())


def _style(text: str, **styles: Any) -> str:
    return click.style(text, **styles)


def size_text(n: int) -> str:
    """A byte count as people read it (also on ``memfts ui``'s stats page)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _counted(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def _json_out(data: Any) -> None:
    _out(json.dumps(data, indent=2, ensure_ascii=False))


# ---- the command group ---------------------------------------------------------------------


class _Group(click.Group):
    """Turns failures memfts expects into one-line errors instead of tracebacks."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)  # in the order they are defined, serve first

    def invoke(self, ctx: click.Context) -> Any:
        import apsw

        try:
            return super().invoke(ctx)
        except MemftsError as exc:
            raise click.ClickException(str(exc)) from None
        except apsw.Error as exc:  # a damaged file surfacing mid-command
            raise click.ClickException(f"database error: {exc}") from None


def db_option(fn: Any) -> Any:
    return click.option(
        "--db",
        "db",
        metavar="PATH",
        help=f"Database file (default: ${DB_ENV}, else beside ${FILE_ENV}'s file, else "
        f"{default_db_path()}).",
    )(fn)


def _db_option(db: str | None) -> str | None:
    """The subcommand's ``--db``, else the group's ``--db``."""
    return db or click.get_current_context().find_root().params.get("db")


def _db(db: str | None) -> Path:
    """The database the command works on (see :func:`resolve_db_path`)."""
    return resolve_db_path(_db_option(db))


@contextmanager
def _open_store(db: str | None, *, create: bool = False) -> Iterator[Store]:
    """Open the store; commands that only read refuse to create a missing database."""
    from memfts.store import Limits, Store

    path = _db(db)
    if not create and not path.exists():
        raise DatabaseOpenError(
            f"no database at {path} (set --db or ${DB_ENV}; `memfts import` or a first "
            "`memfts serve` creates it)"
        )
    store = Store(path, Limits.from_env())
    try:
        yield store
    finally:
        store.close()


@click.group(cls=_Group, invoke_without_command=True)
@db_option
@click.version_option(__version__, prog_name="memfts")
@click.pass_context
def main(ctx: click.Context, db: str | None) -> None:
    """memfts: knowledge-graph memory for AI agents, over MCP, in one SQLite file.

    With no command, serves MCP over stdio (same as `memfts serve`): that is what MCP
    clients launch.
    """
    logging.basicConfig(
        stream=sys.stderr, level=logging.WARNING, format="memfts: %(levelname)s %(message)s"
    )
    if ctx.invoked_subcommand is None:
        ctx.invoke(serve, db=db)


# ---- serve ---------------------------------------------------------------------------------


@main.command(short_help="Serve MCP on stdio (the default) or Streamable HTTP.")
@db_option
@click.option("--http", is_flag=True, help="Serve Streamable HTTP instead of stdio.")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (with --http). Any non-loopback address needs a token.",
)
@click.option(
    "--port",
    default=8765,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on (with --http).",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File holding the bearer token clients must send (else $MEMFTS_TOKEN).",
)
@click.option(
    "--allow-host",
    "allow_hosts",
    multiple=True,
    metavar="NAME",
    help="Extra Host header value clients may use (a DNS name or proxy name); repeatable.",
)
@click.option("--access-log", is_flag=True, help="Log every HTTP request to stderr (with --http).")
def serve(
    db: str | None,
    http: bool,
    host: str,
    port: int,
    token_file: Path | None,
    allow_hosts: tuple[str, ...],
    access_log: bool,
) -> None:
    """Serve the memory over MCP: stdio (what MCP clients launch) or --http for a team.

    Over HTTP, every request must carry `Authorization: Bearer TOKEN` when a token is set
    ($MEMFTS_TOKEN or --token-file); a token is required to listen on anything but loopback.
    """
    if http:
        from memfts import http as http_transport

        token = http_transport.load_token(token_file)
        http_transport.check_exposure(host, token)  # before opening anything
        listener = http_transport.listen(host, port)  # a busy port: one line, no banner
        port = listener.getsockname()[1]  # --port 0: the one the system gave
        with listener, _open_store(db, create=True) as store:
            _follow(store, db)
            _say_if_read_only(store)
            _out(
                f"memfts: serving {store.path} at http://{http_transport.url_host(host)}:{port}"
                f"/mcp ({'bearer token required' if token else 'no token: loopback only'})",
                err=True,
            )
            _settle_startup()
            http_transport.serve(
                store,
                host=host,
                port=port,
                token=token,
                extra_hosts=allow_hosts,
                sock=listener,
                access_log=access_log,
            )
        return
    import anyio

    from memfts.server import build_server
    from memfts.stdio import run_stdio

    with _open_store(db, create=True) as store:
        _follow(store, db)
        _say_if_read_only(store)
        server = build_server(store)
        _stop_on_signals(store, server)
        if sys.stdin.isatty():  # a person ran it by hand: say what it is waiting for
            _out(
                f"memfts: serving MCP on stdio for {store.path}; MCP clients launch this "
                "(see `memfts --help` for the commands people use). Ctrl-C stops it.",
                err=True,
            )
        _settle_startup()
        anyio.run(run_stdio, server)


def _settle_startup() -> None:
    """Keep Python's full garbage collections off what start-up built (modules, schemas, the
    open store), which lives as long as the server: walking it all paused a call for 13-33 ms
    every few hundred searches (the max of ``bench/quick.py --mcp``). No collection first: it
    would add 15 ms to every start, to free next to nothing."""
    gc.freeze()


def _say_if_read_only(store: Store) -> None:
    if store.read_only:
        _out(
            f"memfts: {store.path} cannot be written (its file, folder or disk is read-only): "
            "serving it for reading; writes fail",
            err=True,
        )


def _follow(store: Store, db: str | None) -> None:
    """With only ``$MEMORY_FILE_PATH`` set, merge what the official server's file gained since
    the last start (all of it, the first time): one transaction, said on stderr."""
    from memfts.transfer import Problem, follow_jsonl

    path = followed_file(_db_option(db))
    if path is None or store.read_only:  # a file that cannot be written is served as it is
        return

    def report(problem: Problem) -> None:
        _out(f"memfts: {problem}; skipped", err=True)

    result = follow_jsonl(store, path, on_problem=report)
    if result is None or not result.lines:
        return
    c = result.counts
    added = (
        f"{_counted(c.entities_added, 'entity', 'entities')}, "
        f"{_counted(c.observations_added, 'observation')} and "
        f"{_counted(c.relations_added, 'relation')} added"
    )
    if result.first:
        _out(
            f"memfts: imported {path} (${FILE_ENV}, the official server's file; only read) "
            f"into {store.path} in one transaction: {added}. Later starts merge what it "
            "gains; what is deleted there is not deleted here",
            err=True,
        )
    else:
        _out(
            f"memfts: merged what {path} gained since the last start "
            f"({_counted(result.lines, 'new or changed line')}): {added}",
            err=True,
        )


def _stop_on_signals(store: Store, server: MemoryServer) -> None:
    """Ctrl-C (SIGINT) and SIGTERM (a client quitting, systemd, docker stop) close the store
    like stdin EOF does, at once, with exit status 0: a requested stop is a clean one.

    The stdio loop may wait on stdin in a thread that an exception cannot interrupt (a
    terminal is read that way), so the handler closes the store itself (the call in progress
    finishes first) and ends the process; a KeyboardInterrupt would wait for Enter.
    """

    def handler(signum: int, frame: object) -> None:
        server.close()
        store.close(wait_s=5)
        os._exit(0)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


# ---- reading the memory --------------------------------------------------------------------


def _entity_block(
    entity: Any, *, index: int | None, max_observations: int | None, width: int
) -> list[str]:
    head = f"{index}. " if index is not None else ""
    lines = [f"{head}{_style(entity.name, bold=True)}  {_style(entity.entityType, fg='cyan')}"]
    indent = " " * len(head) + "  "
    shown = (
        entity.observations if max_observations is None else entity.observations[:max_observations]
    )
    for text in shown:
        one_line = " ".join(text.split())
        room = max(width - len(indent) - 2, 20)
        if max_observations is not None and len(one_line) > room:
            one_line = one_line[: room - 1] + "…"
        lines.append(f"{indent}- {one_line}")
    hidden = len(entity.observations) - len(shown)
    if hidden:
        lines.append(_style(f"{indent}… {hidden} more observation{'s' * (hidden > 1)}", dim=True))
    return lines


@main.command(
    short_help="Ranked full-text search, best match first.",
    # `memfts search redis -cache`: a word with a leading dash is the query's, not an option
    context_settings={"ignore_unknown_options": True},
)
@db_option
@click.argument("query", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option(
    "--limit", default=10, show_default=True, type=click.IntRange(1), help="Most results."
)
@click.option("--type", "entity_type", metavar="TYPE", help="Only entities of this type.")
@click.option(
    "--depth",
    default=0,
    show_default=True,
    type=click.IntRange(0, 2),
    help="Also list entities this many relations away from the hits.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (for scripts).")
def search(
    db: str | None,
    query: tuple[str, ...],
    limit: int,
    entity_type: str | None,
    depth: int,
    as_json: bool,
) -> None:
    """Ranked full-text search, best match first (the search_nodes tool).

    Shows the matching fragments of each entity. The query syntax is the tool's: "exact
    phrase", -exclude, a OR b, prefix*, name:word, type:person, -type:person.

    \b
    In a shell, quote what the shell would eat:
      memfts search redis -cache           a word with a leading - excludes it
      memfts search '"exact phrase"'       the shell strips one pair of quotes
      memfts search -- --no-verify         after --, nothing is an option
    """
    # bytes that are not UTF-8 in an argument arrive as lone surrogates: make them text
    text = " ".join(query).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if entity_type is not None:
        entity_type = entity_type.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    with _open_store(db) as store:
        limit = min(limit, store.limits.max_search_limit)
        result = store.search_nodes(text, limit, entity_type, snippets=True, depth=depth)
    if as_json:
        _json_out(result.model_dump(mode="json", by_alias=True, exclude_none=True))
        return
    if result.correctedQuery:
        _out(_style(f"nothing matched {text!r}; showing {result.correctedQuery!r}", dim=True))
    if not result.entities:
        hint = f"; did you mean {' or '.join(result.suggestions)}?" if result.suggestions else ""
        _out(f"no matches{hint}", err=True)
        return
    width = shutil.get_terminal_size().columns
    for i, hit in enumerate(result.entities, start=1):
        lines = _entity_block(hit, index=i, max_observations=3, width=width)
        if hit.snippets:  # why it matched, instead of the first observations
            indent = " " * len(f"{i}. ") + "  "
            lines = [lines[0]] + [f"{indent}- {_highlight(s)}" for s in hit.snippets]
        _out("\n".join(lines))
    if result.total > len(result.entities):
        more = "+" if result.totalIsLowerBound else ""
        _out(
            _style(
                f"{len(result.entities)} of {result.total:,}{more} matches (--limit for more)",
                dim=True,
            )
        )


def _highlight(snippet: str) -> str:
    """A snippet's **marked** hits in bold on a terminal, unmarked elsewhere."""
    parts = snippet.split("**")
    return "".join(
        _style(part, bold=True, fg="yellow") if i % 2 else part for i, part in enumerate(parts)
    )


@main.command(short_help="Entities by name, with observations and relations.")
@db_option
@click.argument("names", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (for scripts).")
def show(db: str | None, names: tuple[str, ...], as_json: bool) -> None:
    """Show entities by exact name, with all observations and relations (open_nodes).

    Exit status 1 if any name is not found.
    """
    with _open_store(db) as store:
        graph = store.open_nodes(list(names))
    found = {e.name for e in graph.entities}
    missing = [n for n in names if n not in found]
    if as_json:
        _json_out(graph.model_dump(mode="json", by_alias=True))
    else:
        width = shutil.get_terminal_size().columns
        for entity in graph.entities:
            _out("\n".join(_entity_block(entity, index=None, max_observations=None, width=width)))
            for r in graph.relations:
                if r.from_ == entity.name:
                    _out(f"  → {r.relationType} {_style(r.to, bold=True)}")
                elif r.to == entity.name:
                    _out(f"  ← {_style(r.from_, bold=True)} {r.relationType}")
            _out()
    for name in missing:
        _out(f"not found: {name}", err=True)
    if missing:
        sys.exit(1)


@main.command(short_help="Counts, file and WAL sizes, schema version.")
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def stats(db: str | None, as_json: bool) -> None:
    """Counts, file sizes, WAL size and schema version."""
    with _open_store(db) as store:
        s = store.stats()
    if as_json:
        _json_out(s.model_dump(mode="json"))
        return
    rows = [
        ("database", s.path),
        ("schema version", str(s.schema_version)),
        ("entities", f"{s.entities:,}"),
        ("entity types", f"{s.entity_types:,}"),
        ("observations", f"{s.observations:,}"),
        ("relations", f"{s.relations:,}"),
        ("file size", size_text(s.db_bytes)),
        ("WAL size", size_text(s.wal_bytes)),
    ]
    for label, value in rows:
        _out(f"{label + ':':<16}{value}")


@main.command(short_help="Integrity checks; exit status 1 if damaged.")
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--repair",
    is_flag=True,
    help="First remove rows that belong to nothing (observations of entities other tools "
    "deleted), in one transaction.",
)
def check(db: str | None, as_json: bool, repair: bool) -> None:
    """Run SQLite's integrity_check and the FTS5 integrity-check, and look for rows that
    belong to nothing (observations of an entity deleted by another tool, such as the
    sqlite3 shell, whose foreign keys are off).

    Exit status 0 if the database is healthy, 1 if not (or if it cannot be opened).
    """
    from memfts.store import FTS_NOT_CHECKED

    with _open_store(db) as store:
        report = store.check(repair=repair)
    if as_json:
        _json_out(report.model_dump(mode="json"))
    else:
        ok, bad = _style("ok", fg="green"), _style("FAILED", fg="red", bold=True)
        _out(f"sqlite integrity: {ok if report.sqlite_integrity == 'ok' else bad}")
        if report.sqlite_integrity != "ok":
            _out(f"  {report.sqlite_integrity}")
        fts_checked = report.fts_integrity != FTS_NOT_CHECKED
        fts = ok if report.fts_integrity == "ok" else bad if fts_checked else "not checked"
        _out(f"fts5 integrity:   {fts}")
        if report.fts_integrity != "ok":
            _out(f"  {report.fts_integrity}")
        counts = [
            "unreadable" if n is None else f"{n:,}"
            for n in (report.entities, report.observations, report.relations)
        ]
        _out(f"{counts[0]} entities, {counts[1]} observations, {counts[2]} relations")
        if report.removed_orphans:
            _out(f"removed {report.removed_orphans:,} orphaned rows")
        if report.orphaned_rows:
            _out(
                f"orphaned rows:    {bad} {report.orphaned_rows:,} belong to nothing "
                "(observations of entities deleted by another tool); "
                "`memfts check --repair` removes them"
            )
        elif report.orphaned_rows is None:
            _out(f"orphaned rows:    {bad} cannot be counted")
        if report.sqlite_integrity != "ok" or report.fts_integrity not in ("ok", FTS_NOT_CHECKED):
            _out(
                "the database is damaged: see 'Troubleshooting' in the README "
                "(memfts export, sqlite3 .recover)",
                err=True,
            )
    sys.exit(0 if report.ok else 1)


@main.command(short_help="Merge index segments, truncate the WAL (--vacuum).")
@db_option
@click.option("--vacuum", is_flag=True, help="Also rewrite the file to return free pages to disk.")
def optimize(db: str | None, vacuum: bool) -> None:
    """Merge full-text index segments and truncate the WAL (and VACUUM with --vacuum)."""
    with _open_store(db) as store:
        before = store.stats()
        store.optimize(vacuum=vacuum)
        after = store.stats()
    _out(
        f"file {size_text(before.db_bytes)} -> {size_text(after.db_bytes)}, "
        f"WAL {size_text(before.wal_bytes)} -> {size_text(after.wal_bytes)}"
    )


@main.command(short_help="Vectors for semantic search (memfts[semantic]).")
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def embed(db: str | None, as_json: bool) -> None:
    """Write the vectors semantic search needs for entities that have none.

    Needed once after installing the semantic extra on an existing database, and after a
    memfts without the extra (or another tool) changed entities. Safe to interrupt and run
    again: it carries on where it stopped. Servers may keep running meanwhile.
    """
    with _open_store(db) as store:
        missing = store.vectors_missing()
        with _progress_bars(sys.stderr.isatty() and not as_json)("embedding", missing) as bar:
            counts = store.embed_missing(bar)
    if as_json:
        _json_out(counts.model_dump())
        return
    _out(f"{counts.embedded:,} entities embedded with {counts.model} ({counts.entities:,} in all)")


# ---- import / export -----------------------------------------------------------------------


def _progress_bars(enabled: bool) -> Any:
    """A :data:`memfts.transfer.Progress` drawing a bar on stderr when it is a terminal."""

    @contextmanager
    def progress(label: str, total: int) -> Iterator[Any]:
        if not enabled:
            yield lambda n: None
            return
        with click.progressbar(
            length=max(total, 1), label=label, file=sys.stderr, color=_color(), width=30
        ) as bar:
            yield bar.update

    return progress


@main.command("import", short_help="Merge a memory.jsonl or SQLite memory.db in.")
@db_option
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--strict",
    is_flag=True,
    help="Check the whole input first; if any line or row is malformed, import nothing and exit 1.",
)
def import_(db: str | None, path: Path, strict: bool) -> None:
    """Merge a memory file into the database: safe to run again, it adds nothing twice.

    PATH is the official server's memory.jsonl (or legacy memory.json), or a SQLite
    memory.db from a SQLite fork of it; the format is detected from the content. New
    entities are created, existing ones gain the observations they lack, and relations
    already present are skipped. Malformed lines are reported with their line numbers and
    skipped (exit status 0); with --strict nothing is imported if any is malformed.
    """
    from memfts.transfer import Problem, import_file, open_source, validate

    source = open_source(path)  # a wrong or missing file fails before the database is created
    if path.stat().st_size == 0:
        _out(f"{path} is empty: nothing to import", err=True)
    tty = sys.stderr.isatty()
    bars = _progress_bars(tty)

    first_problems: list[str] = []

    def report(problem: Problem) -> None:
        prefix = "\r\x1b[K" if tty else ""  # clear the progress bar's line first
        _out(f"{prefix}{_style('malformed', fg='yellow')} {problem}", err=True)
        if len(first_problems) < 5:
            first_problems.append(problem.where)

    if strict:
        malformed = validate(source, on_problem=report, progress=bars)
        if malformed:
            _out(f"--strict: {malformed:,} malformed in {path}; nothing was imported", err=True)
            sys.exit(1)
    with _open_store(db, create=True) as store:
        result = import_file(store, path, strict=strict, on_problem=report, progress=bars)
        target = store.path
    if result.aborted:  # the file changed between the check and the import
        _out(
            f"--strict: {path} changed while importing; stopped at the first malformed item",
            err=True,
        )
        sys.exit(1)
    c = result.counts
    _out(f"imported {path} ({result.format}) into {target}")
    for label, added, skipped in (
        ("entities", c.entities_added, c.entities_skipped),
        ("observations", c.observations_added, c.observations_skipped),
        ("relations", c.relations_added, c.relations_skipped),
    ):
        _out(f"  {label + ':':<14}{added:,} added, {skipped:,} already present")
    if result.malformed:
        more = result.malformed - len(first_problems)
        where = ", ".join(first_problems) + (f" and {more:,} more" if more else "")
        _out(
            _style(
                f"  malformed:    {result.malformed:,} skipped: {where} (see stderr)", fg="yellow"
            )
        )


@main.command(short_help="Write the graph as official-server JSONL.")
@db_option
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Replace PATH if it exists.")
def export(db: str | None, path: Path | None, force: bool) -> None:
    """Write the graph as JSONL the official server loads as-is (stdout without PATH).

    The file is written atomically: to go back, point the official server's
    MEMORY_FILE_PATH at it.
    """
    from memfts.transfer import export_file, write_jsonl

    with _open_store(db) as store:
        if path is None or str(path) == "-":
            out: IO[bytes] = sys.stdout.buffer
            try:
                if stat.S_ISREG(os.fstat(out.fileno()).st_mode):  # `> file`: never held up
                    write_jsonl(store, out)
                else:
                    # A pipe goes through a spool file first: the read snapshot lasts as long
                    # as writing the lines takes, not as long as a slow reader of the pipe (a
                    # snapshot held open pins the WAL: every write of other processes
                    # meanwhile piles up in it).
                    with tempfile.TemporaryFile() as spool:
                        write_jsonl(store, spool)
                        spool.seek(0)
                        shutil.copyfileobj(spool, out, 1 << 20)
                out.flush()
            except BrokenPipeError:  # `memfts export | head`: the reader left, not an error
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            except OSError as exc:  # a full disk (or $TMPDIR) under the spool or the file
                raise click.ClickException(
                    f"export to standard output failed: {exc.strerror or exc} "
                    f"(the spool file is in {tempfile.gettempdir()}: set TMPDIR, or export "
                    "to a FILE)"
                ) from None
            return
        counts = export_file(store, path, force=force)
    _out(
        f"exported {counts.entities:,} entities and {counts.relations:,} relations to {path}",
        err=True,
    )


# ---- backup / restore ----------------------------------------------------------------------


def _backup_summary(report: Any) -> str:
    return (
        f"{report.entities:,} entities, {report.observations:,} observations, "
        f"{report.relations:,} relations; {size_text(report.bytes)} in {report.seconds:.1f} s"
    )


@main.command(short_help="A consistent copy of the database, while servers write.")
@db_option
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Replace PATH if it exists.")
def backup(db: str | None, path: Path, force: bool) -> None:
    """Copy the database to PATH as it is at this moment, while servers go on writing.

    One SQLite read snapshot (writers are not held up); the copy is checked like
    `memfts check` before it takes PATH's name, is one self-contained file, and is created
    0600 (MEMFTS_FILE_MODE to change). Put it back with `memfts restore PATH`.
    """
    from memfts.backup import backup as make_backup

    with _open_store(db) as store:
        report = make_backup(store, path, force=force)
    _out(f"backed up {store.path} to {report.path}: {_backup_summary(report)}")


@main.command(short_help="Put a backup (or a Litestream restore) in place, safely.")
@db_option
@click.argument("source", type=click.Path(path_type=Path))
@click.option(
    "--force",
    is_flag=True,
    help="Restore even while other processes (servers) have the database open; "
    "they see the restored memory at once.",
)
def restore(db: str | None, source: Path, force: bool) -> None:
    """Replace the database with the backup SOURCE (from `memfts backup`, or a file
    `litestream restore` wrote).

    SOURCE is checked first (integrity, full-text indexes, orphaned rows) on a copy, upgraded
    to this memfts's schema if it is older; nothing is changed if it is damaged. The database
    it replaces is kept beside it (DB.before-restore-TIME). Refused while other processes
    have the database open, unless --force.
    """
    from memfts.backup import restore as put_back

    report = put_back(source, _db(db), force=force)
    _out(f"restored {source} into {report.path}: {_backup_summary(report)}")
    if report.replaced:
        _out(f"the database it replaced is kept as {report.replaced}")


# ---- curation: what `memfts ui` does, from a terminal ---------------------------------------


def _confirm(question: str, yes: bool) -> None:
    """Go on with ``--yes`` or a "y" typed at the prompt; anything else changes nothing."""
    if yes:
        return
    try:
        agreed = click.confirm(question, default=False, err=True)
    except click.Abort:  # stdin closed: a script that forgot --yes
        raise click.ClickException(
            "not confirmed, nothing changed: pass --yes to do it without asking"
        ) from None
    if not agreed:
        raise click.ClickException("nothing changed")


def _observation(store: Store, name: str, number: int) -> str:
    """The text of an entity's observation by its position (1 = first, as `show` lists them)."""
    from memfts.errors import EntityNotFoundError, InvalidInputError

    graph = store.open_nodes([name])
    if not graph.entities:
        raise EntityNotFoundError(name)
    observations = graph.entities[0].observations
    if not 1 <= number <= len(observations):
        raise InvalidInputError(
            f"{name!r} has {len(observations)} observation{'s' * (len(observations) != 1)}: "
            f"give a number from 1 to {len(observations)} (the order `memfts show` lists them in)"
            if observations
            else f"{name!r} has no observations"
        )
    return observations[number - 1]


def _short(text: str, room: int = 70) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= room else one_line[: room - 1] + "…"


@main.command(short_help="Browse and curate the memory in a local web page.")
@db_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Any non-loopback address needs a token.",
)
@click.option(
    "--port",
    default=8766,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on (0: any free port).",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File holding the token the page requires (else $MEMFTS_TOKEN).",
)
@click.option(
    "--allow-host",
    "allow_hosts",
    multiple=True,
    metavar="NAME",
    help="Extra Host header value browsers may use (a DNS name or proxy name); repeatable.",
)
@click.option("--open", "open_browser", is_flag=True, help="Open the page in a browser.")
def ui(
    db: str | None,
    host: str,
    port: int,
    token_file: Path | None,
    allow_hosts: tuple[str, ...],
    open_browser: bool,
) -> None:
    """Serve a web page on this machine to search, browse and curate the memory: ranked
    search, entity pages, a graph view, recent changes, stats, likely duplicates; rename,
    retype, edit, delete and merge. It follows what agents write, from any process.

    Same rules as `serve --http`: loopback needs no token; any other address needs one
    ($MEMFTS_TOKEN or --token-file), and then the printed URL carries it once.
    """
    from memfts import http as http_transport
    from memfts import ui as web

    token = http_transport.load_token(token_file)
    http_transport.check_exposure(host, token)  # before opening anything
    if port == 0:
        port = _free_port(host)
    with _open_store(db) as store:
        url = web.page_url(host, port, token)
        _out(f"memfts ui: {store.path} at {url} (Ctrl-C stops it)", err=True)
        if open_browser:
            import webbrowser

            webbrowser.open(url)
        web.serve(store, host=host, port=port, token=token, extra_hosts=allow_hosts)


def _free_port(host: str) -> int:
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host.strip("[]"), 0))
        return int(probe.getsockname()[1])


yes_option = click.option("--yes", "-y", is_flag=True, help="Do it without asking first.")


@main.command(short_help="Rename an entity; its relations follow.")
@db_option
@click.argument("name")
@click.argument("new_name")
def rename(db: str | None, name: str, new_name: str) -> None:
    """Rename entity NAME to NEW_NAME; relations to and from it follow the new name.

    If an entity called NEW_NAME exists, nothing changes: merge the two instead
    (`memfts merge NAME NEW_NAME`).
    """
    from memfts.curation import Curation

    with _open_store(db) as store:
        report = Curation(store).rename_entity(name, new_name)
    merged = (
        f" ({report.relations_merged} already there, dropped)" if report.relations_merged else ""
    )
    verb = "follows" if report.relations_moved == 1 else "follow"
    moved = _counted(report.relations_moved, "relation")
    _out(f"renamed {name!r} to {new_name!r}; {moved} {verb} it{merged}")


@main.command("set-type", short_help="Change an entity's type.")
@db_option
@click.argument("name")
@click.argument("entity_type", metavar="TYPE")
def set_type(db: str | None, name: str, entity_type: str) -> None:
    """Change the type of entity NAME to TYPE."""
    from memfts.curation import Curation

    with _open_store(db) as store:
        Curation(store).set_entity_type(name, entity_type)
    _out(f"{name!r} is now a {entity_type!r}")


@main.command("edit-observation", short_help="Replace the text of one observation.")
@db_option
@click.argument("name")
@click.argument("number", type=int)
@click.argument("text")
def edit_observation(db: str | None, name: str, number: int, text: str) -> None:
    """Replace observation NUMBER of entity NAME (1 = first, as `memfts show` lists them)
    with TEXT; it keeps its place."""
    from memfts.curation import Curation

    with _open_store(db) as store:
        old = _observation(store, name, number)
        Curation(store).edit_observation(name, old, text)
    _out(f"observation {number} of {name!r} was: {_short(old)}")


@main.command("delete-observation", short_help="Delete one observation.")
@db_option
@click.argument("name")
@click.argument("number", type=int)
@yes_option
def delete_observation(db: str | None, name: str, number: int, yes: bool) -> None:
    """Delete observation NUMBER of entity NAME (1 = first, as `memfts show` lists them).

    Asks first, unless --yes.
    """
    from memfts.curation import Curation

    with _open_store(db) as store:
        old = _observation(store, name, number)
        _confirm(f"delete observation {number} of {name!r}: {_short(old)!r}?", yes)
        Curation(store).delete_observation(name, old)
    _out(f"deleted observation {number} of {name!r}")


@main.command(short_help="Delete an entity, its observations and relations.")
@db_option
@click.argument("name")
@yes_option
def delete(db: str | None, name: str, yes: bool) -> None:
    """Delete entity NAME with its observations and every relation to or from it.

    Says what will go and asks first, unless --yes.
    """
    from memfts.curation import Curation

    with _open_store(db) as store:
        curation = Curation(store)
        preview = curation.delete_entity(name, dry_run=True)
        _confirm(
            f"delete {name!r} ({preview.entityType}) with its "
            f"{_counted(preview.observations, 'observation')} and "
            f"{_counted(preview.relations, 'relation')}?",
            yes,
        )
        report = curation.delete_entity(name)
    _out(
        f"deleted {name!r}, {_counted(report.observations, 'observation')}, "
        f"{_counted(report.relations, 'relation')}"
    )


@main.command(short_help="Merge one entity into another.")
@db_option
@click.argument("source")
@click.argument("target")
@yes_option
def merge(db: str | None, source: str, target: str, yes: bool) -> None:
    """Merge entity SOURCE into TARGET, which keeps its name and type; SOURCE is deleted.

    SOURCE's observations are appended to TARGET's in order (except those TARGET has);
    its relations are re-pointed to TARGET (one TARGET already has is dropped, and so are
    relations between the two, which would relate TARGET to itself). Says what will change
    and asks first, unless --yes.
    """
    from memfts.curation import Curation

    with _open_store(db) as store:
        curation = Curation(store)
        preview = curation.merge_entities(source, target, dry_run=True)
        _confirm(f"merge {source!r} into {target!r}: {preview.summary()}?", yes)
        report = curation.merge_entities(source, target)
    _out(f"merged: {report.summary()}")


@main.command(short_help="Entities whose names differ only in spelling.")
@db_option
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1), help="Most groups.")
@click.option("--json", "as_json", is_flag=True, help="Print the groups as JSON.")
def duplicates(db: str | None, limit: int, as_json: bool) -> None:
    """List likely duplicates: entities whose names differ only by case, accents,
    punctuation, spacing or a plural ending, the most recently changed first.

    Each group starts with the suggested target (most observations) and shows the command
    merging the others into it.
    """
    import shlex

    from memfts.curation import Curation

    with _open_store(db) as store:
        found = Curation(store).likely_duplicates(limit)
    if as_json:
        _json_out(found.model_dump(mode="json"))
        return
    if not found.groups:
        _out("no likely duplicates")
        return
    for group in found.groups:
        target = group.entities[0]
        for candidate in group.entities:
            mark = "→" if candidate is target else " "
            name, kind = _style(candidate.name, bold=True), _style(candidate.entityType, fg="cyan")
            _out(
                f"{mark} {name}  {kind}  {_counted(candidate.observations, 'observation')}, "
                f"{_counted(candidate.relations, 'relation')}"
            )
        for other in group.entities[1:]:
            _out(
                _style(
                    f"    memfts merge {shlex.quote(other.name)} {shlex.quote(target.name)}",
                    dim=True,
                )
            )
    if found.total_groups > len(found.groups):
        _out(
            _style(
                f"{len(found.groups)} of {found.total_groups} groups (--limit for more)", dim=True
            )
        )

"""The ``memfts`` command: a thin shell over :mod:`memfts.store` and :mod:`memfts.server`."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from memfts import __version__
from memfts.errors import MemftsError

DB_ENV = "MEMORY_DB_PATH"


def default_db_path() -> Path:
    """A per-user data folder that survives package upgrades and reinstalls."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "memfts" / "memory.db"


def resolve_db_path(option: str | None) -> Path:
    """``--db``, else ``$MEMORY_DB_PATH``, else :func:`default_db_path`; ``~`` expanded,
    relative paths taken from the working directory."""
    raw = option or os.environ.get(DB_ENV) or str(default_db_path())
    return Path(raw).expanduser().absolute()


db_option = click.option(
    "--db",
    "db",
    metavar="PATH",
    help=f"Database file (default: ${DB_ENV}, else {default_db_path()}).",
)


@click.group(invoke_without_command=True)
@db_option
@click.version_option(__version__, prog_name="memfts")
@click.pass_context
def main(ctx: click.Context, db: str | None) -> None:
    """memfts: knowledge-graph memory for AI agents, over MCP.

    With no command, serves MCP over stdio (same as `memfts serve`).
    """
    logging.basicConfig(
        stream=sys.stderr, level=logging.WARNING, format="memfts: %(levelname)s %(message)s"
    )
    if ctx.invoked_subcommand is None:
        ctx.invoke(serve, db=db)


@main.command()
@db_option
def serve(db: str | None) -> None:
    """Serve the memory over MCP on stdio (what MCP clients launch)."""
    from memfts.server import build_server
    from memfts.store import Limits, Store

    try:
        store = Store(resolve_db_path(db), Limits.from_env())
    except MemftsError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        build_server(store).run()
    finally:
        store.close()

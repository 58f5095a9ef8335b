"""The ``memfts`` command line: real subprocesses where the process boundary matters (exit
status, stdout vs stderr, the switch from the official server end to end), click's runner
for the rest."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import anyio
import mcp
import pytest
from click.testing import CliRunner
from mcp import StdioServerParameters

from conftest import memfts_command, server_env
from memfts.cli import main

DATA = Path(__file__).parent / "data"
OFFICIAL = DATA / "official-memory.jsonl"


def run(*args: str, db: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m memfts ARGS`` as a user would run it, stdin closed, no terminal."""
    environ = {k: v for k, v in os.environ.items() if k not in ("MEMORY_DB_PATH", "NO_COLOR")}
    environ.update(env)
    prefix = ["--db", str(db)] if db is not None else []
    return subprocess.run(
        [*memfts_command(), *prefix, *args],
        capture_output=True,
        text=True,
        env=environ,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def invoke(*args: str, color: bool = False, **env: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=env or None, color=color)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def imported(tmp_path: Path) -> Path:
    db = tmp_path / "imported.db"
    code, _, err = invoke("--db", str(db), "import", str(OFFICIAL))
    assert code == 0, err
    return db


# ---- switching from the official server ----------------------------------------------------


def test_switch_from_official_server_is_one_import_then_the_same_tools(tmp_path: Path) -> None:
    db = tmp_path / "memfts" / "memory.db"
    done = run("import", str(OFFICIAL), MEMORY_DB_PATH=str(db))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"imported {OFFICIAL} (jsonl) into {db}",
        "  entities:     4 added, 0 already present",
        "  observations: 6 added, 0 already present",
        "  relations:    3 added, 0 already present",
    ]
    assert done.stderr == ""

    async def ask() -> tuple[list[str], list[str]]:
        params = StdioServerParameters(
            command=memfts_command()[0], args=memfts_command()[1:], env=server_env(db)
        )
        async with mcp.Client(params, mode="legacy") as client:
            found = await client.call_tool("search_nodes", {"query": "typescript"})
            graph = await client.call_tool("read_graph", {})
        assert found.structured_content is not None and graph.structured_content is not None
        return (
            [e["name"] for e in found.structured_content["entities"]],
            [e["name"] for e in graph.structured_content["entities"]],
        )

    found, everything = anyio.run(ask)
    assert found == ["Alice"]
    assert everything == ["Alice", "Acme Rockets", "Café Crème", "Bob"]


def test_going_back_export_to_stdout_is_the_official_file(imported: Path) -> None:
    done = run("export", db=imported)
    assert done.returncode == 0, done.stderr
    assert done.stdout.encode() == OFFICIAL.read_bytes()


def test_export_to_a_file_refuses_to_overwrite_without_force(
    imported: Path, tmp_path: Path
) -> None:
    target = tmp_path / "memory.jsonl"
    code, _, err = invoke("--db", str(imported), "export", str(target))
    assert code == 0 and "4 entities and 3 relations" in err
    assert target.read_bytes() == OFFICIAL.read_bytes()
    target.write_text("precious\n")
    code, _, err = invoke("--db", str(imported), "export", str(target))
    assert code == 1 and "exists; pass --force" in err
    assert target.read_text() == "precious\n"
    code, _, _ = invoke("--db", str(imported), "export", str(target), "--force")
    assert code == 0 and target.read_bytes() == OFFICIAL.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp


def test_export_gives_the_file_a_normal_mode_and_keeps_a_replaced_files_mode(
    imported: Path, tmp_path: Path
) -> None:
    fresh = tmp_path / "fresh.jsonl"
    old_umask = os.umask(0o022)
    try:
        assert invoke("--db", str(imported), "export", str(fresh))[0] == 0
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o644  # not mkstemp's 0600
    shared = tmp_path / "shared.jsonl"
    shared.write_text("old\n")
    shared.chmod(0o664)
    assert invoke("--db", str(imported), "export", str(shared), "--force")[0] == 0
    assert stat.S_IMODE(shared.stat().st_mode) == 0o664


def test_search_within_a_lower_configured_search_limit(imported: Path) -> None:
    done = run("search", "--json", "rockets", db=imported, MEMFTS_MAX_SEARCH_LIMIT="1")
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["entities"]) == 1


def test_import_reports_malformed_lines_and_keeps_going(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    done = run("import", str(DATA / "malformed.jsonl"), db=db)
    assert done.returncode == 0
    reported = [line for line in done.stderr.splitlines() if line.startswith("malformed line ")]
    assert [line.split(":")[0] for line in reported] == [
        f"malformed line {n}" for n in (2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14)
    ]
    assert "\x1b[" not in done.stderr  # not a terminal: no colour, no progress bar
    assert "  entities:     2 added, 0 already present" in done.stdout
    assert (
        "  malformed:    12 skipped: line 2, line 4, line 5, line 6, line 7 and 7 more (see stderr)"
        in done.stdout
    )


def test_import_strict_imports_nothing_and_fails(tmp_path: Path) -> None:
    db = tmp_path / "strict.db"
    done = run("import", "--strict", str(DATA / "malformed.jsonl"), db=db)
    assert done.returncode == 1
    assert "malformed line 2: not valid JSON" in done.stderr
    assert "--strict: 12 malformed" in done.stderr and "nothing was imported" in done.stderr
    assert not db.exists()
    assert "import nothing" in invoke("import", "--help")[1]


def test_import_twice_adds_nothing(imported: Path) -> None:
    code, out, _ = invoke("--db", str(imported), "import", str(OFFICIAL))
    assert code == 0
    assert "  entities:     0 added, 4 already present" in out
    assert "  relations:    0 added, 3 already present" in out


def test_import_of_a_sqlite_fork_database(tmp_path: Path) -> None:
    fork = tmp_path / "fork.db"  # the name says nothing: the content does
    conn = sqlite3.connect(fork)
    conn.executescript(
        "CREATE TABLE entities (name TEXT PRIMARY KEY, entity_type TEXT NOT NULL);"
        "CREATE TABLE observations (id INTEGER PRIMARY KEY, entity_name TEXT, content TEXT);"
        "CREATE TABLE relations (id INTEGER PRIMARY KEY, source TEXT, target TEXT, "
        "relation_type TEXT);"
        "INSERT INTO entities VALUES ('Ada', 'person');"
        "INSERT INTO observations(entity_name, content) VALUES ('Ada', 'Wrote the first program');"
        "INSERT INTO relations(source, target, relation_type) VALUES ('Ada', 'Babbage', 'knew');"
    )
    conn.commit()
    conn.close()
    db = tmp_path / "m.db"
    code, out, err = invoke("--db", str(db), "import", str(fork))
    assert code == 0, err
    assert "(sqlite)" in out and "1 added" in out
    code, out, _ = invoke("--db", str(db), "show", "Ada")
    assert "Wrote the first program" in out and "→ knew Babbage" in out


def test_import_of_a_file_that_is_no_memory_is_one_line(tmp_path: Path) -> None:
    other = tmp_path / "notes.txt"
    other.write_text("hello\n")
    done = run("import", str(other), db=tmp_path / "m.db")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "neither JSON lines" in done.stderr
    assert not (tmp_path / "m.db").exists()


# ---- reading from a terminal ---------------------------------------------------------------


def test_search_is_ranked_and_readable(imported: Path) -> None:
    code, out, _ = invoke("--db", str(imported), "search", "rockets")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "1. Acme Rockets  company"
    assert "     - Builds reusable rockets" in lines
    assert any(line.startswith("2. Alice  person") for line in lines)


def test_search_json_limit_and_type(imported: Path) -> None:
    code, out, _ = invoke("--db", str(imported), "search", "--json", "--limit", "1", "rockets")
    assert code == 0
    result = json.loads(out)
    assert [e["name"] for e in result["entities"]] == ["Acme Rockets"]
    assert result["total"] == 2
    code, out, _ = invoke("--db", str(imported), "search", "--json", "--type", "PERSON", "rockets")
    assert [e["name"] for e in json.loads(out)["entities"]] == ["Alice"]


def test_search_with_no_match_says_so_on_stderr(imported: Path) -> None:
    code, out, err = invoke("--db", str(imported), "search", "zeppelin")
    assert (code, out, err) == (0, "", "no matches\n")


def test_search_shows_why_it_matched_and_what_it_corrected(imported: Path) -> None:
    code, out, _ = invoke("--db", str(imported), "search", "javascrpt")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "nothing matched 'javascrpt'; showing 'javascript'"
    assert lines[1:3] == ["1. Alice  person", "     - Prefers TypeScript over JavaScript"]
    # the matching fragment, not the entity's first observation
    assert "Works at Acme Rockets" not in out
    code, out, _ = invoke("--db", str(imported), "search", "--depth", "1", "javascript")
    assert [line.split("  ")[0] for line in out.splitlines() if line[0].isdigit()][:1] == [
        "1. Alice"
    ]
    assert "2. " in out  # a neighbour of Alice, after her


@pytest.mark.full_text
def test_search_takes_words_with_a_leading_dash_and_quotes(imported: Path) -> None:
    """`-word` excludes it (not "No such option"), quotes reach the search as typed, and after
    `--` even an option's name is a query word; through the real command, as a shell runs it."""
    done = run("search", "rockets", "-toulouse", db=imported)
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stdout.splitlines() if line[0].isdigit()] == ["1. Alice  person"]
    done = run("search", "-toulouse", "rockets", "--limit", "5", db=imported)
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stdout.splitlines() if line[0].isdigit()] == ["1. Alice  person"]

    phrase = run("search", "--json", '"reusable rockets"', db=imported)
    assert [e["name"] for e in json.loads(phrase.stdout)["entities"]] == ["Acme Rockets"]
    unquoted = run("search", "--json", '"rockets reusable"', db=imported)  # not adjacent so
    assert json.loads(unquoted.stdout)["entities"] == []

    done = run("search", "--json", "--", "--toulouse", db=imported)  # searched, not an option
    assert done.returncode == 0, done.stderr
    assert [e["name"] for e in json.loads(done.stdout)["entities"]] == ["Acme Rockets"]
    done = run("search", "--json", "--", "-toulouse", db=imported)  # nothing else to find:
    assert [e["name"] for e in json.loads(done.stdout)["entities"]] == ["Acme Rockets"]


def test_search_help_says_how_to_quote_in_a_shell() -> None:
    out = run("search", "--help").stdout
    assert "memfts search redis -cache" in out
    assert """memfts search '"exact phrase"'""" in out
    assert "memfts search -- " in out


def test_ctrl_c_stops_a_server_run_in_a_terminal_at_once_with_status_0(tmp_path: Path) -> None:
    """A person runs `memfts` by hand, then presses Ctrl-C: the terminal's line discipline
    sends SIGINT to the foreground process, which must end now (it used to wait for Enter,
    then say "Aborted!" and exit 1)."""
    import fcntl
    import pty
    import termios
    import time

    master, terminal = pty.openpty()

    def take_the_terminal() -> None:  # in the child: the pty becomes its controlling terminal
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    env = server_env(tmp_path / "m.db")
    server = subprocess.Popen(
        memfts_command(),
        stdin=terminal,
        stdout=terminal,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
        preexec_fn=take_the_terminal,
    )
    os.close(terminal)
    try:
        assert server.stderr is not None
        banner = server.stderr.readline().decode()  # serving: it is waiting on the terminal
        assert "Ctrl-C stops it" in banner, banner
        time.sleep(0.2)
        pressed = time.monotonic()
        os.write(master, b"\x03")  # Ctrl-C typed on the keyboard
        assert server.wait(timeout=10) == 0
        assert time.monotonic() - pressed < 5
        assert "Aborted" not in server.stderr.read().decode()
    finally:
        if server.poll() is None:
            server.kill()
        os.close(master)
    assert (tmp_path / "m.db").exists()


def test_colour_only_in_terminals_and_never_with_no_color(imported: Path) -> None:
    _, out, _ = invoke("--db", str(imported), "search", "rockets", color=True)
    assert "\x1b[1mAcme Rockets\x1b[0m" in out
    _, out, _ = invoke("--db", str(imported), "search", "rockets", color=True, NO_COLOR="1")
    assert "\x1b[" not in out and "Acme Rockets" in out


def test_show_prints_everything_and_fails_on_unknown_names(imported: Path) -> None:
    done = run("show", "Alice", "Nobody", db=imported)
    assert done.returncode == 1
    assert done.stdout.splitlines()[:5] == [
        "Alice  person",
        "  - Works at Acme Rockets",
        "  - Prefers TypeScript over JavaScript",
        "  → works_at Acme Rockets",
        "  ← Bob knows",
    ]
    assert done.stderr == "not found: Nobody\n"
    code, out, _ = invoke("--db", str(imported), "show", "--json", "Bob")
    assert code == 0
    assert json.loads(out)["relations"] == [{"from": "Bob", "to": "Alice", "relationType": "knows"}]


def test_stats_counts_sizes_and_schema_version(imported: Path) -> None:
    code, out, _ = invoke("--db", str(imported), "stats", "--json")
    figures = json.loads(out)
    assert code == 0
    assert (figures["entities"], figures["observations"], figures["relations"]) == (4, 6, 3)
    assert figures["schema_version"] >= 1 and figures["db_bytes"] > 0
    code, out, _ = invoke("--db", str(imported), "stats")
    assert "entities:       4" in out and "WAL size:" in out and "schema version:" in out


def test_db_option_after_the_command_wins_over_env(imported: Path, tmp_path: Path) -> None:
    code, out, err = invoke(
        "stats", "--json", "--db", str(imported), MEMORY_DB_PATH=str(tmp_path / "other.db")
    )
    assert code == 0, err
    assert json.loads(out)["path"] == str(imported)


def test_db_comes_from_env_when_not_given(imported: Path) -> None:
    done = run("stats", "--json", MEMORY_DB_PATH=str(imported))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["path"] == str(imported)


def test_read_commands_do_not_create_a_missing_database(tmp_path: Path) -> None:
    missing = tmp_path / "nothing-here.db"
    for command in (["stats"], ["check"], ["search", "x"], ["show", "x"], ["export"]):
        done = run(*command, db=missing)
        assert done.returncode == 1, command
        assert done.stderr.startswith("Error: no database at") and "Traceback" not in done.stderr
    assert not missing.exists()


# ---- upkeep --------------------------------------------------------------------------------


def test_check_healthy_is_exit_0(imported: Path) -> None:
    done = run("check", db=imported)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        "sqlite integrity: ok",
        "fts5 integrity:   ok",
        "4 entities, 6 observations, 3 relations",
    ]


def test_check_damaged_index_is_exit_1(imported: Path) -> None:
    conn = sqlite3.connect(imported)  # change text behind the index's back
    conn.executescript(
        "DROP TRIGGER observations_au; "
        "UPDATE observations SET content = 'rewritten' "
        "WHERE id = (SELECT min(id) FROM observations);"
    )
    conn.commit()
    conn.close()
    done = run("check", db=imported)
    assert done.returncode == 1
    assert "fts5 integrity:   FAILED" in done.stdout
    assert "the database is damaged" in done.stderr


def test_check_of_a_file_that_is_not_a_database_is_one_line(tmp_path: Path) -> None:
    bogus = tmp_path / "memory.db"
    bogus.write_bytes(b"this is not sqlite" * 100)
    done = run("check", db=bogus)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "is not a SQLite database" in done.stderr
    assert bogus.read_bytes() == b"this is not sqlite" * 100


def test_optimize_truncates_the_wal(imported: Path) -> None:
    from memfts.models import Entity
    from memfts.store import Store

    other = Store(imported)  # another session keeps the file open, so its WAL stays
    other.create_entities(
        [Entity(name=f"e{i}", entityType="t", observations=["x" * 500]) for i in range(200)]
    )
    try:
        wal = Path(f"{imported}-wal")
        assert wal.stat().st_size > 0
        code, out, err = invoke("--db", str(imported), "optimize", "--vacuum")
        assert code == 0, err
        assert out.startswith("file ") and " -> 0 B" in out
        assert wal.stat().st_size == 0
    finally:
        other.close()


def test_help_lists_every_command_and_each_takes_db() -> None:
    done = run("--help")
    assert done.returncode == 0
    commands = ["serve", "search", "show", "stats", "check", "optimize", "embed", "import"]
    commands += [
        "export",
        "backup",
        "restore",
        "ui",
        "rename",
        "set-type",
        "edit-observation",
        "delete-observation",
    ]
    commands += ["delete"]
    commands += ["merge", "duplicates"]
    listed = [line.split()[0] for line in done.stdout.split("Commands:")[1].strip().splitlines()]
    assert listed == commands
    for command in commands:
        assert "--db PATH" in invoke(command, "--help")[1], command


def test_serve_http_refuses_a_public_address_without_token(tmp_path: Path) -> None:
    done = run("serve", "--http", "--host", "0.0.0.0", "--port", "1", db=tmp_path / "m.db")
    assert done.returncode == 1
    assert "refusing to listen on 0.0.0.0 without a token" in done.stderr
    assert done.stderr.count("\n") == 1
    assert not (tmp_path / "m.db").exists()


def test_python_dash_m_and_console_script_agree() -> None:
    script = Path(sys.executable).with_name("memfts")
    assert script.exists()
    done = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stdout.startswith("memfts, version ")

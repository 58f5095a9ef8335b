"""The README as a new user follows it: its shell commands, run from a fresh copy of the
repository with a scratch HOME and a bare system PATH.

The first command must install ``memfts`` on the PATH (pipx, from PyPI into the checkout's
``.venv``) and run it; then every later command in the README must work verbatim, in a new
shell (``bash -i``: it reads the ``~/.bashrc`` the install changed), Claude Code's own CLI
included: ``claude mcp add --scope user memory -- memfts`` then ``claude mcp list`` shows
"✔ Connected". ``/home/you`` in a command stands for the user's home, as the README says.

Network: PyPI (pipx, memfts' dependencies), nothing else; the pip cache of the user running
the tests is shared to keep it quick.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import ROOT, node_tool

README = ROOT / "README.md"
OFFICIAL = ROOT / "tests" / "data" / "official-memory.jsonl"

SUITE = "the test command: the suite this test is part of (CI runs it)"
LITESTREAM = "a replica under /mnt, kept running: tests/test_backup.py runs Litestream for real"
NOT_RUN = {
    "python3 -m venv .venv && .venv/bin/pip install -q -e '.[dev]' "
    "&& npm install --prefix tests/node --no-audit --no-fund && .venv/bin/python -m pytest": SUITE,
    ".venv/bin/python -m pytest": SUITE,
    "python3 -m venv .venv-semantic && .venv-semantic/bin/pip install -q -e '.[dev,semantic]' "
    "&& .venv-semantic/bin/python -m pytest": "the suite again, with the semantic extra",
    "apt-get install chromium": "installs a system package (.ci/run does)",
    "litestream replicate ~/.local/share/memfts/memory.db file:///mnt/replica/memory": LITESTREAM,
    "litestream restore -o /tmp/memory-restored.db file:///mnt/replica/memory": LITESTREAM,
    "memfts restore /tmp/memory-restored.db": LITESTREAM,
    "npm install --prefix tests/node": "installs what the tests drive (.ci/run does)",
    ".venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy": (
        "a developer's check: needs the dev install of the test command"
    ),
}
"""README commands this test does not run, and why. Each must still be in the README."""

LONG_RUNNING = ("memfts ui", "memfts serve --http")
"""Servers: started (in a network namespace of their own, so a port in use elsewhere on the
machine does not matter), seen serving for a few seconds, stopped."""

PROSE = [
    "memfts --help",
    "memfts stats",
    "memfts search typescript",
    "memfts show Alice",
    "memfts search redis -cache",
    """memfts search '"exact phrase"'""",
    "memfts search -- --no-verify",
    "memfts export ~/official/memory.jsonl --force",
]
"""Commands written inline in the README's prose, run after its code blocks."""


@dataclass
class Snippet:
    command: str
    output: list[str] = field(default_factory=list)
    """For a ``$ command`` block: the lines shown after it."""


def readme_snippets() -> list[Snippet]:
    """Every shell command of the README's code blocks, in order: each line of a ``bash``
    block (comments dropped, ``\\`` continuations joined), and each ``$ `` line of a plain
    block with the lines it shows."""
    snippets: list[Snippet] = []
    text = README.read_text()
    for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
        if lang in ("bash", "sh"):
            body = re.sub(r"\s*\\\n\s*", " ", body)
            for line in body.splitlines():
                command = re.sub(r"\s+#.*$", "", line).strip()
                if command and not command.startswith("#"):
                    snippets.append(Snippet(command))
        elif lang == "":
            current: Snippet | None = None
            for line in body.splitlines():
                if line.startswith("$ "):
                    current = Snippet(line[2:])
                    snippets.append(current)
                elif current is not None and line.strip():
                    current.output.append(line)
    return snippets


@dataclass
class User:
    """A person with a fresh clone, a scratch HOME and nothing installed but Python."""

    home: Path
    clone: Path
    work: Path
    env: dict[str, str]

    def shell(
        self, command: str, *, new_shell: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """``command`` as typed into a terminal: ``bash -i`` (a new terminal, reading
        ``~/.bashrc``), or the shell the first command was typed into."""
        command = command.replace("/home/you", str(self.home))
        argv = ["bash", "-ic" if new_shell else "-c", command]
        in_checkout = not new_shell or command.startswith(".venv/")
        done = subprocess.run(
            argv, cwd=self.clone if in_checkout else self.work, env=self.env, text=True,
            stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
        )  # fmt: skip
        noise = ("bash: cannot set terminal process group", "bash: no job control in this shell")
        stderr = "".join(
            line for line in done.stderr.splitlines(True) if not line.startswith(noise)
        )
        return subprocess.CompletedProcess(argv, done.returncode, done.stdout, stderr)

    def ok(self, command: str, **kwargs: object) -> str:
        done = self.shell(command, **kwargs)  # type: ignore[arg-type]
        assert done.returncode == 0, (
            f"{command!r} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
        return done.stdout


def fresh_copy(dest: Path) -> None:
    """What a clone holds: the files git tracks (or would, for new ones), not .venv & co."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


@pytest.fixture(scope="module")
def user(tmp_path_factory: pytest.TempPathFactory) -> Iterator[User]:
    base = tmp_path_factory.mktemp("readme")
    home, clone, work = base / "home", base / "memfts", base / "home" / "project"
    if Path("/etc/skel").is_dir():  # a new account's dotfiles, as on Debian and Ubuntu
        shutil.copytree("/etc/skel", home)
    work.mkdir(parents=True)
    (home / "official").mkdir()
    shutil.copy(OFFICIAL, home / "official" / "memory.jsonl")
    fresh_copy(clone)
    env = {
        "HOME": str(home),
        "PATH": f"{node_tool('claude').parent}:/usr/local/bin:/usr/bin:/bin",  # + claude
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "PIP_CACHE_DIR": os.environ.get("PIP_CACHE_DIR") or str(Path.home() / ".cache" / "pip"),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    yield User(home, clone, work, env)


def claude_reset(user: User) -> None:
    """Forget the MCP servers added so far: the README's `claude mcp add` lines are
    alternatives (one scope each), not steps."""
    for config in (user.home / ".claude.json", user.work / ".mcp.json"):
        config.unlink(missing_ok=True)


def claude_list(user: User) -> str:
    listed = user.ok("claude mcp list", timeout=120)
    [line] = [line for line in listed.splitlines() if line.startswith("memory: ")]
    return line


def serves(user: User, command: str) -> None:
    """A server command keeps serving (and says where) until stopped."""
    command = command.replace("/home/you", str(user.home))
    isolated = ["unshare", "-rn"] if shutil.which("unshare") else []
    server = subprocess.Popen(
        [*isolated, "bash", "-ic", command], cwd=user.work, env=user.env, text=True,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    try:
        time.sleep(4)
        assert server.poll() is None, f"{command!r} stopped: {server.communicate()}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        out, err = server.communicate(timeout=30)
    assert "http://" in out + err, (out, err)


def test_the_readme_works_verbatim_for_a_new_user(user: User) -> None:
    snippets = readme_snippets()
    for command in NOT_RUN:
        assert command in [s.command for s in snippets], f"not in the README any more: {command}"

    # the first screen: exactly two commands, install-and-run, then the tests
    first_block = re.search(r"^```bash\n(.*?)^```", README.read_text(), re.S | re.M)
    assert first_block is not None
    commands = [c for c in first_block.group(1).splitlines() if c and not c.startswith("#")]
    first, tests = snippets[0], snippets[1]
    assert commands == [first.command, tests.command]
    assert "pipx install" in first.command and first.command.endswith("&& memfts")
    assert tests.command in NOT_RUN
    assert tests.command in (ROOT / ".ci" / "run").read_text().splitlines()  # what CI runs
    done = user.shell(first.command, new_shell=False)
    assert done.returncode == 0, done.stdout + done.stderr
    installed = user.home / ".local" / "bin" / "memfts"
    assert installed.exists()
    assert (user.home / ".local" / "share" / "memfts" / "memory.db").exists()  # it ran
    # a new terminal finds it
    assert user.ok("command -v memfts").strip() == str(installed)

    # the Claude Desktop entry names the file `command -v memfts` printed
    desktop = re.search(r'"command": "(/home/you/[^"]+)"', README.read_text())
    assert desktop is not None
    assert desktop.group(1).replace("/home/you", str(user.home)) == str(installed)

    ran = []
    for snippet in snippets[2:]:
        command = snippet.command
        if command in NOT_RUN:
            continue
        ran.append(command)
        if command.startswith(LONG_RUNNING):
            serves(user, command)
        elif command.startswith("claude mcp add"):
            claude_reset(user)
            user.ok(command)
            if "--transport http" in command:
                continue  # memory-host is the README's example name of a server
            line = claude_list(user)
            if "--scope project" in command:  # waits for approval, as the README says
                assert "Pending approval" in line, line
            else:
                assert line == "memory: memfts  - ✔ Connected", line
        elif command == "claude mcp list":
            claude_reset(user)
            user.ok("claude mcp add --scope user memory -- memfts")
            assert claude_list(user) == "memory: memfts  - ✔ Connected"
        else:
            if command.startswith("memfts restore ~/backups/memory-2026-11-28.db"):
                # the README's example of a backup made on an earlier day, as cron would have
                backups = sorted((user.home / "backups").glob("memory-*.db"))
                shutil.copy(backups[-1], user.home / "backups" / "memory-2026-11-28.db")
            if command.startswith("memfts --db memory.db export"):
                # the troubleshooting section speaks of the user's own memory.db, here
                shutil.copy(user.home / ".local/share/memfts/memory.db", user.work / "memory.db")
            out = user.ok(command)
            if snippet.output and command.startswith("memfts import"):
                assert out.splitlines()[0] == snippet.output[0].replace("/home/you", str(user.home))
    for command in PROSE:
        assert f"`{command}`" in README.read_text(), f"not in the README any more: {command}"
        ran.append(command)
        user.ok(command)

    assert user.ok("litestream version").strip()  # installed on the PATH by pipx
    # memfts does not run from the checkout
    shutil.rmtree(user.clone)
    assert user.ok("memfts --version").startswith("memfts, version ")

    for needed in ("memfts import", "memfts search", "memfts --help", "memfts export"):
        assert any(command.startswith(needed) for command in ran), needed
    # what the commands did: the official file came in, went back out, and was rescued
    conn = sqlite3.connect(user.work / "fresh.db")
    assert conn.execute("SELECT count(*) FROM entities").fetchone()[0] == 4
    conn.close()
    assert (user.home / "official" / "memory.jsonl").read_text().count('"type":"entity"') == 4


def test_claude_code_connects_to_the_installed_memfts(user: User) -> None:
    """The promise of the first screen, once more on its own: after the first command,
    Claude Code's `claude mcp add --scope user memory -- memfts` connects."""
    if not (user.home / ".local" / "bin" / "memfts").exists():
        user.ok(readme_snippets()[0].command, new_shell=False)
    claude_reset(user)
    user.ok("claude mcp add --scope user memory -- memfts")
    assert claude_list(user) == "memory: memfts  - ✔ Connected"

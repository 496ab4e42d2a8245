import ctypes
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from agents.tools import files
from agents.tools.base import ToolBox, ToolContext, ToolError
from agents.tools.files import FILE_TOOLS, resolve_path
from agents.tools.shell import BASH_TOOL


@pytest.fixture
def worktree(tmp_path: Path) -> Path:
    root = tmp_path / "worktree"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    return root


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    secret = tmp_path / "outside.txt"
    secret.write_text("top secret\n")
    return secret


@pytest.fixture
def box(worktree: Path) -> ToolBox:
    return ToolBox.of([*FILE_TOOLS, BASH_TOOL], ToolContext(worktree=worktree))


def ok(box: ToolBox, name: str, **tool_input) -> str:
    result = box.execute(name, tool_input)
    assert not result.is_error, result.content
    return result.content


def error(box: ToolBox, name: str, **tool_input) -> str:
    result = box.execute(name, tool_input)
    assert result.is_error, result.content
    return result.content


# Read


def test_read_numbers_lines_like_cat_n(box, worktree):
    (worktree / "a.txt").write_text("first\nsecond\n")
    assert ok(box, "Read", file_path="a.txt") == "     1\tfirst\n     2\tsecond"


def test_read_accepts_an_absolute_path_inside_the_worktree(box, worktree):
    (worktree / "a.txt").write_text("hello")
    assert ok(box, "Read", file_path=str(worktree / "a.txt")) == "     1\thello"


def test_read_offset_and_limit_select_lines_and_say_where_to_continue(box, worktree):
    (worktree / "ten.txt").write_text("".join(f"line {n}\n" for n in range(1, 11)))
    content = ok(box, "Read", file_path="ten.txt", offset=3, limit=2)
    assert content == "     3\tline 3\n     4\tline 4\n\n(More lines follow; use offset=5 to read on.)"
    assert ok(box, "Read", file_path="ten.txt", offset=9).splitlines() == [
        "     9\tline 9",
        "    10\tline 10",
    ]


def test_read_offset_past_the_end_says_how_long_the_file_is(box, worktree):
    (worktree / "two.txt").write_text("a\nb\n")
    assert "has only 2 lines" in ok(box, "Read", file_path="two.txt", offset=5)


def test_read_truncates_long_lines_and_caps_output(box, worktree):
    (worktree / "long.txt").write_text("x" * 5000 + "\nshort\n")
    first, second = ok(box, "Read", file_path="long.txt").splitlines()
    assert first == "     1\t" + "x" * 2000 + " [line truncated]"
    assert second == "     2\tshort"

    (worktree / "big.txt").write_text(("y" * 1000 + "\n") * 1000)
    content = ok(box, "Read", file_path="big.txt", limit=1000)
    assert len(content) < 260 * 1024
    assert "Output cut at 256 KB" in content


def test_read_empty_file_says_it_is_empty(box, worktree):
    (worktree / "empty.txt").touch()
    assert ok(box, "Read", file_path="empty.txt") == "(File empty.txt is empty.)"


def test_read_refuses_missing_file_directory_and_binary(box, worktree):
    assert "File does not exist: nope.txt" in error(box, "Read", file_path="nope.txt")
    (worktree / "src").mkdir()
    assert "src is a directory" in error(box, "Read", file_path="src")
    (worktree / "blob.bin").write_bytes(b"\x89PNG\0\0\x01")
    assert "binary" in error(box, "Read", file_path="blob.bin")


# Write and Edit


def test_write_creates_parents_and_reads_back(box, worktree):
    assert ok(box, "Write", file_path="pkg/sub/hello.txt", content="héllo\n") == (
        "Wrote 7 bytes to pkg/sub/hello.txt"
    )
    assert (worktree / "pkg/sub/hello.txt").read_text(encoding="utf-8") == "héllo\n"
    assert ok(box, "Read", file_path="pkg/sub/hello.txt") == "     1\théllo"
    ok(box, "Write", file_path="pkg/sub/hello.txt", content="replaced")
    assert (worktree / "pkg/sub/hello.txt").read_text() == "replaced"


def test_edit_replaces_a_unique_string(box, worktree):
    (worktree / "m.py").write_text("def old():\n    return 1\n")
    assert ok(box, "Edit", file_path="m.py", old_string="old", new_string="new") == (
        "Edited m.py: replaced 1 occurrence."
    )
    assert (worktree / "m.py").read_text() == "def new():\n    return 1\n"


def test_edit_refuses_an_ambiguous_string_unless_replace_all(box, worktree):
    (worktree / "m.py").write_text("x = 1\nx = 1\nx = 1\n")
    message = error(box, "Edit", file_path="m.py", old_string="x = 1", new_string="y = 2")
    assert "found 3 times" in message and "replace_all" in message
    assert (worktree / "m.py").read_text() == "x = 1\nx = 1\nx = 1\n"
    assert "replaced 3 occurrences" in ok(
        box, "Edit", file_path="m.py", old_string="x = 1", new_string="y = 2", replace_all=True
    )
    assert (worktree / "m.py").read_text() == "y = 2\ny = 2\ny = 2\n"


def test_edit_errors_for_missing_text_same_strings_and_missing_file(box, worktree):
    (worktree / "m.py").write_text("pass\n")
    assert "not found" in error(box, "Edit", file_path="m.py", old_string="nothing", new_string="x")
    assert "the same" in error(box, "Edit", file_path="m.py", old_string="pass", new_string="pass")
    assert "does not exist" in error(box, "Edit", file_path="gone.py", old_string="a", new_string="b")


# Glob


def test_glob_matches_recursively_newest_first_and_skips_git(box, worktree):
    for index, name in enumerate(["a.py", "pkg/b.py", "pkg/deep/c.py", "pkg/notes.md"]):
        path = worktree / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
        os.utime(path, (1_000_000 + index, 1_000_000 + index))
    (worktree / ".git" / "hook.py").write_text("")

    assert ok(box, "Glob", pattern="**/*.py").splitlines() == ["pkg/deep/c.py", "pkg/b.py", "a.py"]
    assert ok(box, "Glob", pattern="*.py") == "a.py"
    assert ok(box, "Glob", pattern="**/*.{py,md}", path="pkg").splitlines() == [
        "pkg/notes.md",
        "pkg/deep/c.py",
        "pkg/b.py",
    ]
    assert ok(box, "Glob", pattern="**/*.rs") == "No files found"


# Grep


def test_grep_searches_text_files_with_a_glob_filter(box, worktree):
    (worktree / "pkg").mkdir()
    (worktree / "app.py").write_text("import os\ndef main():\n    pass\n")
    (worktree / "pkg" / "util.py").write_text("def helper():\n    return 1\n")
    (worktree / "README.md").write_text("def in docs\n")
    (worktree / "data.bin").write_bytes(b"def \0binary")
    (worktree / ".git" / "def.py").write_text("def hidden():\n")

    assert ok(box, "Grep", pattern=r"def \w+\(", glob="*.py").splitlines() == [
        "app.py:2:def main():",
        "pkg/util.py:1:def helper():",
    ]
    assert ok(box, "Grep", pattern="^def", glob="**/*.py", path="pkg") == "pkg/util.py:1:def helper():"
    assert ok(box, "Grep", pattern="def").splitlines() == [
        "README.md:1:def in docs",
        "app.py:2:def main():",
        "pkg/util.py:1:def helper():",
    ]
    assert ok(box, "Grep", pattern="(?i)IMPORT", path="app.py") == "app.py:1:import os"
    assert ok(box, "Grep", pattern="absent") == "No matches found"


def test_grep_caps_matches_and_says_how_many_were_cut(box, worktree):
    (worktree / "many.txt").write_text("hit\n" * 600)
    lines = ok(box, "Grep", pattern="hit").splitlines()
    assert len(lines) == 501
    assert lines[-1].startswith("[100 more matches not shown")


def test_grep_reports_an_invalid_regex(box):
    assert "Invalid regular expression" in error(box, "Grep", pattern="def (")


# Refusals


@pytest.mark.parametrize("tool", ["Read", "Write"])
def test_paths_outside_the_worktree_are_refused(box, worktree, outside, tool):
    extra = {"content": "pwned"} if tool == "Write" else {}
    for path in ["../outside.txt", str(outside), "/etc/passwd", "sub/../../outside.txt"]:
        message = error(box, tool, file_path=path, **extra)
        assert path in message or repr(path) in message
        assert f"You work in {os.path.realpath(worktree)}" in message
    assert outside.read_text() == "top secret\n"


def test_symlink_pointing_outside_is_refused_for_read_write_and_edit(box, worktree, outside):
    (worktree / "link.txt").symlink_to(outside)
    (worktree / "linkdir").symlink_to(outside.parent)
    assert "outside your worktree" in error(box, "Read", file_path="link.txt")
    assert "outside your worktree" in error(box, "Write", file_path="link.txt", content="pwned")
    assert "outside your worktree" in error(
        box, "Edit", file_path="link.txt", old_string="top", new_string="x"
    )
    assert "outside your worktree" in error(box, "Write", file_path="linkdir/new.txt", content="x")
    assert "outside your worktree" in error(box, "Grep", pattern="secret", path="linkdir")
    assert "outside your worktree" in error(box, "Glob", pattern="*", path="linkdir")
    assert outside.read_text() == "top secret\n"
    assert not (outside.parent / "new.txt").exists()


def test_nul_byte_in_a_path_is_refused(box):
    assert "NUL byte" in error(box, "Read", file_path="a\0b")
    with pytest.raises(ToolError, match="NUL byte"):
        resolve_path(ToolContext(worktree=Path("/tmp")), "x\0", for_write=True)


def test_writes_inside_git_are_refused_but_reads_are_not(box, worktree):
    message = error(box, "Write", file_path=".git/hooks/pre-commit", content="#!/bin/sh\nrm -rf ~\n")
    assert "inside .git" in message
    assert not (worktree / ".git/hooks/pre-commit").exists()
    assert "inside .git" in error(box, "Write", file_path=".git", content="gitdir: /tmp/evil")
    assert "inside .git" in error(box, "Edit", file_path=".git/HEAD", old_string="ref", new_string="x")
    assert "ref: refs/heads/" in ok(box, "Read", file_path=".git/HEAD")


def test_symlinks_inside_the_worktree_are_read_through_but_never_written_through(box, worktree):
    (worktree / "real").mkdir()
    (worktree / "real" / "a.txt").write_text("hello\n")
    (worktree / "link.txt").symlink_to("real/a.txt")
    (worktree / "linkdir").symlink_to("real")
    assert ok(box, "Read", file_path="link.txt") == "     1\thello"
    assert ok(box, "Read", file_path="linkdir/a.txt") == "     1\thello"

    assert "never write through symlinks" in error(box, "Write", file_path="link.txt", content="x")
    assert "never write through symlinks" in error(
        box, "Edit", file_path="link.txt", old_string="hello", new_string="x"
    )
    assert (worktree / "real" / "a.txt").read_text() == "hello\n"
    assert (worktree / "link.txt").is_symlink()
    ok(box, "Write", file_path="linkdir/b.txt", content="through a directory link")
    assert (worktree / "real" / "b.txt").read_text() == "through a directory link"


def test_writes_inside_git_are_refused_however_the_path_reaches_it(box, worktree):
    (worktree / "sub").mkdir()
    (worktree / "hooks").symlink_to(".git/hooks")
    for path in ["sub/../.git/config", ".git/./config", "hooks/pre-commit", ".GIT/config"]:
        assert "inside .git" in error(box, "Write", file_path=path, content="pwned\n")
    assert not (worktree / ".git" / "hooks" / "pre-commit").exists()
    assert "pwned" not in (worktree / ".git" / "config").read_text()


def test_writes_to_a_git_file_of_a_linked_worktree_are_refused(box, worktree):
    shutil.rmtree(worktree / ".git")
    (worktree / ".git").write_text("gitdir: /repo/.git/worktrees/agent-1\n")
    assert "inside .git" in error(box, "Write", file_path=".git", content="gitdir: /tmp/evil\n")
    assert "inside .git" in error(box, "Write", file_path="./sub/../.git", content="gitdir: /tmp/evil\n")
    assert "inside .git" in error(box, "Edit", file_path=".git", old_string="/repo", new_string="/tmp")
    assert (worktree / ".git").read_text() == "gitdir: /repo/.git/worktrees/agent-1\n"


def test_directories_file_parents_and_fifos_get_clear_errors_without_hanging(box, worktree):
    (worktree / "a.txt").write_text("a")
    (worktree / "src").mkdir()
    assert "a.txt is a file, not a directory" in error(box, "Write", file_path="a.txt/b.txt", content="x")
    assert "a.txt is a file, not a directory" in error(box, "Read", file_path="a.txt/b.txt")
    assert "src is a directory, not a file" in error(box, "Write", file_path="src", content="x")
    assert ". is a directory, not a file" in error(box, "Write", file_path=".", content="x")
    assert "src is a directory, not a file" in error(
        box, "Edit", file_path="src", old_string="a", new_string="b"
    )
    os.mkfifo(worktree / "pipe")
    assert "not a regular file" in error(box, "Read", file_path="pipe")
    assert "not a regular file" in error(box, "Write", file_path="pipe", content="x")
    assert "not a regular file" in error(box, "Grep", pattern="x", path="pipe")


def test_glob_and_grep_do_not_descend_into_a_symlinked_directory_that_leaves(box, worktree, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "secret.py").write_text("top secret\n")
    (worktree / "linkdir").symlink_to(elsewhere)
    (worktree / "mine.py").write_text("mine\n")
    assert ok(box, "Glob", pattern="**/*") == "mine.py"
    assert ok(box, "Grep", pattern="secret") == "No matches found"


# Symlinks swapped in after the check (TOCTOU)


@pytest.fixture
def outside_dir(tmp_path: Path) -> Path:
    """A directory beside the worktree, and `sub` in the worktree with the same file name in it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f.txt").write_text("top secret\n")
    return outside


@pytest.fixture
def sub(worktree: Path) -> Path:
    sub = worktree / "sub"
    sub.mkdir()
    (sub / "f.txt").write_text("inside\n")
    return sub


def swap_after_check(monkeypatch, swap) -> None:
    """Run `swap` right after resolve_path accepted a path, before the tool opens it."""
    check = files.resolve_path

    def check_then_swap(*args, **kwargs):
        checked = check(*args, **kwargs)
        swap()
        return checked

    monkeypatch.setattr(files, "resolve_path", check_then_swap)


def assert_untouched(outside: Path) -> None:
    assert sorted(os.listdir(outside)) == ["f.txt"]
    assert (outside / "f.txt").read_text() == "top secret\n"


@pytest.mark.parametrize(
    ("name", "tool_input"),
    [
        ("Read", {"file_path": "sub/f.txt"}),
        ("Write", {"file_path": "sub/f.txt", "content": "pwned"}),
        ("Write", {"file_path": "sub/new.txt", "content": "pwned"}),
        ("Write", {"file_path": "sub/deeper/new.txt", "content": "pwned"}),
        ("Edit", {"file_path": "sub/f.txt", "old_string": "top", "new_string": "pwned"}),
        ("Grep", {"pattern": "secret", "path": "sub"}),
        ("Glob", {"pattern": "*", "path": "sub"}),
    ],
)
def test_a_directory_swapped_for_a_symlink_after_the_check_is_not_followed(
    box, worktree, sub, outside_dir, monkeypatch, name, tool_input
):
    def swap():
        sub.rename(worktree / "sub.moved")
        sub.symlink_to(outside_dir)

    swap_after_check(monkeypatch, swap)
    message = error(box, name, **tool_input)
    assert "changed while being opened (a symlink appeared at sub)" in message
    assert "top secret" not in message
    assert_untouched(outside_dir)


@pytest.mark.parametrize(
    ("name", "tool_input"),
    [
        ("Read", {"file_path": "f.txt"}),
        ("Write", {"file_path": "f.txt", "content": "pwned"}),
        ("Write", {"file_path": "new.txt", "content": "pwned"}),
        ("Edit", {"file_path": "f.txt", "old_string": "top", "new_string": "pwned"}),
        ("Grep", {"pattern": "secret", "path": "f.txt"}),
    ],
)
def test_a_file_swapped_for_a_symlink_after_the_check_is_not_followed(
    box, worktree, outside_dir, monkeypatch, name, tool_input
):
    (worktree / "f.txt").write_text("inside\n")

    def swap():
        target = worktree / tool_input.get("file_path", tool_input.get("path"))
        target.unlink(missing_ok=True)
        target.symlink_to(outside_dir / target.name)

    swap_after_check(monkeypatch, swap)
    message = error(box, name, **tool_input)
    assert "changed while being opened (a symlink appeared at" in message
    assert "top secret" not in message
    assert_untouched(outside_dir)


def exchange(first: Path, second: Path) -> None:
    """Swap two directory entries atomically (Linux renameat2 RENAME_EXCHANGE)."""
    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd, rename_exchange = -100, 2
    if libc.renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def test_racing_symlink_swaps_never_let_a_tool_read_or_write_outside(box, worktree, sub, outside_dir):
    parked = worktree / "parked"
    parked.symlink_to(outside_dir)
    try:
        exchange(sub, parked)
        exchange(sub, parked)
    except (AttributeError, OSError) as exc:
        pytest.skip(f"renameat2(RENAME_EXCHANGE) is not available here: {exc}")
    done = threading.Event()
    swaps = 0

    def keep_swapping():
        nonlocal swaps
        while not done.is_set():
            exchange(sub, parked)
            swaps += 1
            time.sleep(0)  # let the tools run between swaps, so checks and opens straddle them

    swapper = threading.Thread(target=keep_swapping)
    swapper.start()
    outcomes = set()
    try:
        for _ in range(500):
            written = box.execute("Write", {"file_path": "sub/new.txt", "content": "pwned"})
            read = box.execute("Read", {"file_path": "sub/f.txt"})
            found = box.execute("Grep", {"pattern": "secret"})
            assert "top secret" not in read.content and "top secret" not in found.content
            assert not any("failed unexpectedly" in result.content for result in (written, read, found))
            outcomes.update({written.is_error, read.is_error})
    finally:
        done.set()
        swapper.join()
    assert_untouched(outside_dir)
    assert swaps > 0 and outcomes == {True, False}


# Schema validation through the toolbox


@pytest.mark.parametrize(
    ("name", "tool_input", "expected"),
    [
        ("Read", {}, "'file_path' is a required property"),
        ("Read", {"file_path": "a.txt", "mode": "r"}, "Additional properties are not allowed"),
        ("Read", {"file_path": "a.txt", "offset": "3"}, "is not of type 'integer'"),
        ("Edit", {"file_path": "a.txt", "old_string": "a"}, "'new_string' is a required property"),
        ("Bash", {"command": "true", "timeout": 600_001}, "is greater than the maximum"),
    ],
)
def test_schema_errors_become_error_results(box, name, tool_input, expected):
    result = box.execute(name, tool_input)
    assert result.is_error
    assert result.content.startswith(f"Invalid input for {name}")
    assert expected in result.content


def test_every_schema_is_closed_and_described():
    for tool in [*FILE_TOOLS, BASH_TOOL]:
        assert tool.input_schema["type"] == "object"
        assert tool.input_schema["additionalProperties"] is False
        assert all(prop["description"] for prop in tool.input_schema["properties"].values())
    assert [tool.name for tool in FILE_TOOLS] == ["Read", "Write", "Edit", "Glob", "Grep"]

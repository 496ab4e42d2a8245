"""File tools with Claude Code's names and schemas: Read, Write, Edit, Glob, Grep.

Every path the model gives goes through `resolve_path`, the one place that decides whether a path
is inside the agent's worktree. Every file or directory is then opened through `_open`, which
walks the checked path down from the worktree root one name at a time without following symlinks:
a directory or file swapped for a symlink between the check and the open makes the call fail
instead of escaping the worktree.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from agents.tools.base import Tool, ToolContext, ToolError

READ_DEFAULT_LIMIT = 2000
MAX_LINE_CHARS = 2000
MAX_OUTPUT_CHARS = 256 * 1024
BINARY_SNIFF_BYTES = 8192
GLOB_MAX_RESULTS = 1000
GREP_MAX_MATCHES = 500
GREP_MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_BRACE_ALTERNATIVES = 64
TRUNCATED_LINE_MARK = " [line truncated]"

# Directories on the way to a file are only passed through (O_PATH where the OS has it); a
# symlink in their place fails with ENOTDIR instead of being followed.
_PASS_THROUGH_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Directories Glob and Grep list.
_LIST_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# The last name of a path. O_NONBLOCK so that opening a FIFO cannot hang the tool: it is refused
# after fstat like any file that is not regular.
_FINAL_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(frozen=True)
class WorktreePath:
    """A path `resolve_path` accepted: the worktree's real root and the symlink-free names below it."""

    root: str
    parts: tuple[str, ...]

    @property
    def rel(self) -> str:
        """The path relative to the worktree, as the model should see it."""
        return os.path.join(*self.parts) if self.parts else "."

    def child(self, parts: tuple[str, ...]) -> WorktreePath:
        return WorktreePath(self.root, self.parts + parts)


def resolve_path(ctx: ToolContext, file_path: str, *, for_write: bool = False) -> WorktreePath:
    """Where `file_path` (relative to the worktree or absolute) really is, or a ToolError.

    Symlinks and `..` are resolved before the check, so a link inside the worktree that points
    outside it is refused like the outside path itself, and a link that stays inside works for
    reading. Writes are refused inside `.git` and through a symlink named as the file itself.
    """
    root = os.path.realpath(ctx.worktree)
    if not os.path.isdir(root):
        raise ToolError(
            f"Your worktree {root} is gone (deleted from outside). Stop and end your turn: a person has to "
            "look; your committed work is safe on your branch."
        )
    if "\0" in file_path:
        raise ToolError(f"Refusing path {file_path!r}: it contains a NUL byte. You work in {root}.")
    joined = os.path.join(root, file_path)
    resolved = _realpath(joined, file_path)
    if resolved != root and not resolved.startswith(root.rstrip(os.sep) + os.sep):
        raise ToolError(
            f"Refusing path {file_path!r}: it resolves (following symlinks and '..') to {resolved}, "
            f"which is outside your worktree. You work in {root}; use a path inside it."
        )
    if os.path.islink(resolved):  # realpath leaves a link it cannot resolve in place
        raise ToolError(f"Refusing path {file_path!r}: it is a symlink that loops. You work in {root}.")
    path = WorktreePath(root, Path(resolved).relative_to(root).parts)
    if not for_write:
        return path
    if any(part.lower() == ".git" for part in path.parts):  # any case: git refuses .GIT paths too
        raise ToolError(
            f"Refusing to write {file_path!r}: it is inside .git, and agents may not change git "
            f"internals. You work in {root}; use git commands through Bash to commit or branch."
        )
    parent, name = os.path.split(joined.rstrip(os.sep))
    if os.path.islink(os.path.join(_realpath(parent, file_path), name)):
        raise ToolError(
            f"Refusing to write {file_path!r}: it is a symlink (to {path.rel}), and Write and Edit "
            f"never write through symlinks. Write {path.rel} itself if that is the file you mean."
        )
    return path


def _realpath(path: str, file_path: str) -> str:
    try:
        return os.path.realpath(path)
    except OSError as exc:  # a symlink replaced by a directory between realpath's lstat and readlink
        raise ToolError(
            f"Refusing path {file_path!r}: it changed while being checked ({exc.strerror}). Try again, "
            "and do not swap directories for symlinks while a tool uses them."
        ) from None


def _open(path: WorktreePath, flags: int, *, make_parents: bool = False) -> int:
    """A file descriptor for `path`, opened from the worktree root one name at a time.

    No symlink is followed: resolve_path checked a symlink-free path, so a symlink met here
    appeared after the check and fails with a ToolError. `make_parents` creates missing
    directories. Raises FileNotFoundError (and unexpected OSErrors) for the caller to explain.
    """
    directory = os.open(path.root, _PASS_THROUGH_FLAGS)
    try:
        if not path.parts:
            return os.open(".", flags | _FINAL_FLAGS, dir_fd=directory)
        for depth in range(1, len(path.parts)):
            opened = _open_name(path, directory, depth, _PASS_THROUGH_FLAGS, make=make_parents)
            os.close(directory)
            directory = opened
        return _open_name(path, directory, len(path.parts), flags | _FINAL_FLAGS)
    finally:
        os.close(directory)


def _open_name(path: WorktreePath, directory: int, depth: int, flags: int, *, make: bool = False) -> int:
    """Open the name at `depth` in path (1 = the first name) inside the already open `directory`."""
    name = path.parts[depth - 1]
    shown = os.path.join(*path.parts[:depth])
    try:
        return os.open(name, flags, 0o666, dir_fd=directory)
    except FileNotFoundError:
        if not make:
            raise
        with contextlib.suppress(FileExistsError):  # made meanwhile by someone else: open theirs
            os.mkdir(name, dir_fd=directory)
        return _open_name(path, directory, depth, flags)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a FIFO without a reader or a socket, opened for writing
            raise ToolError(f"{shown} is not a regular file (a device, socket or FIFO).") from None
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        with contextlib.suppress(OSError):
            if not stat.S_ISLNK(os.stat(name, dir_fd=directory, follow_symlinks=False).st_mode):
                where = "" if shown == path.rel else f"Cannot open {path.rel}: "
                raise ToolError(f"{where}{shown} is a file, not a directory.") from None
        raise ToolError(
            f"{path.rel} changed while being opened (a symlink appeared at {shown}); nothing was read "
            "or written. Symlinks are never followed after a path is checked: try again, and do not "
            "swap directories for symlinks while a tool uses them."
        ) from None


def _require_regular(path: WorktreePath, info: os.stat_result) -> None:
    if stat.S_ISDIR(info.st_mode):
        raise _is_a_directory(path)
    if not stat.S_ISREG(info.st_mode):
        raise ToolError(f"{path.rel} is not a regular file (a device, socket or FIFO).")


def _is_a_directory(path: WorktreePath) -> ToolError:
    return ToolError(f"{path.rel} is a directory, not a file. Use Glob or Bash `ls` to list it.")


def _open_file(
    path: WorktreePath, flags: int, *, hint: str = "", make_parents: bool = False
) -> tuple[int, os.stat_result]:
    """A descriptor for the regular file at `path` and its stat, or a ToolError saying why not."""
    try:
        fd = _open(path, flags, make_parents=make_parents)
    except FileNotFoundError:
        raise ToolError(f"File does not exist: {path.rel}.{hint}") from None
    except IsADirectoryError:  # opened for writing
        raise _is_a_directory(path) from None
    info = os.fstat(fd)
    try:
        _require_regular(path, info)
    except ToolError:
        os.close(fd)
        raise
    return fd, info


def _looks_binary(fd: int) -> bool:
    return b"\0" in os.pread(fd, BINARY_SNIFF_BYTES, 0)


def _iter_lines(handle: IO[str]) -> Iterator[str]:
    """Each line without its ending, cut at MAX_LINE_CHARS without ever holding a longer line."""
    while True:
        line = handle.readline(MAX_LINE_CHARS + 1)
        if not line:
            return
        if line.endswith("\n"):
            yield line[:-1]
        elif len(line) <= MAX_LINE_CHARS:
            yield line  # the last line, without a newline
        else:
            while (rest := handle.readline(64 * 1024)) and not rest.endswith("\n"):
                pass
            yield line[:MAX_LINE_CHARS] + TRUNCATED_LINE_MARK


# Read


def _read(ctx: ToolContext, tool_input: dict[str, Any]) -> str:
    path = resolve_path(ctx, tool_input["file_path"])
    fd, info = _open_file(path, os.O_RDONLY, hint=" Use Glob to find files.")
    with open(fd, encoding="utf-8", errors="replace") as handle:
        return _numbered_lines(path, handle, info, tool_input)


def _numbered_lines(
    path: WorktreePath, handle: IO[str], info: os.stat_result, tool_input: dict[str, Any]
) -> str:
    if info.st_size == 0:
        return f"(File {path.rel} is empty.)"
    if _looks_binary(handle.fileno()):
        raise ToolError(
            f"{path.rel} looks like a binary file (it has NUL bytes); Read shows text files only. "
            "Use Bash (e.g. `file` or `xxd | head`) to inspect it."
        )
    offset = tool_input.get("offset", 1)
    limit = tool_input.get("limit", READ_DEFAULT_LIMIT)
    shown: list[str] = []
    size = 0
    note = ""
    for number, line in enumerate(_iter_lines(handle), start=1):
        if number < offset:
            continue
        if len(shown) == limit:
            note = f"(More lines follow; use offset={number} to read on.)"
            break
        numbered = f"{number:>6}\t{line}"
        if size + len(numbered) + 1 > MAX_OUTPUT_CHARS:
            note = f"(Output cut at {MAX_OUTPUT_CHARS // 1024} KB; use offset={number} to read on.)"
            break
        shown.append(numbered)
        size += len(numbered) + 1
    else:
        if not shown:
            return f"(File {path.rel} has only {number} lines; offset {offset} is past its end.)"
    return "\n".join(shown) + (f"\n\n{note}" if note else "")


# Write


def _encode(content: str) -> bytes:
    try:
        return content.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ToolError(f"Content is not valid Unicode text: {exc}") from None


def _write(ctx: ToolContext, tool_input: dict[str, Any]) -> str:
    path = resolve_path(ctx, tool_input["file_path"], for_write=True)
    data = _encode(tool_input["content"])
    fd, _ = _open_file(path, os.O_WRONLY | os.O_CREAT, make_parents=True)
    with os.fdopen(fd, "wb") as handle:
        handle.truncate()  # only now that the file is known to be a regular one inside the worktree
        handle.write(data)
    return f"Wrote {len(data)} bytes to {path.rel}"


# Edit: read and write through one descriptor, so both happen to the same file.


def _edit(ctx: ToolContext, tool_input: dict[str, Any]) -> str:
    path = resolve_path(ctx, tool_input["file_path"], for_write=True)
    fd, _ = _open_file(path, os.O_RDWR, hint=" Use Write to create it.")
    with os.fdopen(fd, "r+b") as handle:
        old, new = tool_input["old_string"], tool_input["new_string"]
        if not old:
            raise ToolError("old_string is empty. Use Write to create or overwrite a whole file.")
        if old == new:
            raise ToolError("old_string and new_string are the same; there is nothing to change.")
        try:
            text = handle.read().decode("utf-8")
        except UnicodeDecodeError:
            raise ToolError(f"{path.rel} is not UTF-8 text; Edit only changes text files.") from None
        count = text.count(old)
        if count == 0:
            raise ToolError(
                f"old_string was not found in {path.rel}. It must match the file exactly, including "
                "whitespace and indentation; Read the file to check."
            )
        if count > 1 and not tool_input.get("replace_all", False):
            raise ToolError(
                f"old_string was found {count} times in {path.rel}. Give more surrounding context to make "
                "it unique, or set replace_all to true to replace every occurrence."
            )
        updated = _encode(text.replace(old, new))
        handle.seek(0)
        handle.truncate()
        handle.write(updated)
    return f"Edited {path.rel}: replaced {count} occurrence{'s' if count > 1 else ''}."


# Glob and Grep share the walk and the pattern matching.


def _expand_braces(pattern: str) -> list[str]:
    """`*.{py,md}` -> [`*.py`, `*.md`], innermost braces first so nesting works."""
    match = re.search(r"\{([^{}]*,[^{}]*)\}", pattern)
    if match is None:
        return [pattern]
    expanded: list[str] = []
    for alternative in match.group(1).split(","):
        expanded.extend(_expand_braces(pattern[: match.start()] + alternative + pattern[match.end() :]))
        if len(expanded) > MAX_BRACE_ALTERNATIVES:
            raise ToolError(f"Pattern {pattern!r} expands to too many alternatives; simplify its braces.")
    return expanded


def _compile_glob(pattern: str, *, name: str) -> list[tuple[str, ...]]:
    """Patterns as tuples of path components, `**` collapsed; refuses absolute and `..` patterns."""
    if os.path.isabs(pattern):
        raise ToolError(
            f"{name} {pattern!r} is absolute; patterns are relative to path (default the worktree). "
            "Pass the directory as path and a relative pattern such as '**/*.py'."
        )
    compiled = []
    for alternative in _expand_braces(pattern):
        parts: list[str] = []
        for part in alternative.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                raise ToolError(f"{name} {pattern!r} contains '..'; use path to choose the directory.")
            if part == "**" and parts and parts[-1] == "**":
                continue
            parts.append(part)
        compiled.append(tuple(parts))
    return compiled


def _matches(pattern: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_matches(rest, parts[i:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], head) and _matches(rest, parts[1:])


def _walk_files(directory: int, prefix: tuple[str, ...] = ()) -> Iterator[tuple[int, str, tuple[str, ...]]]:
    """Every file under the open `directory` as (its directory's fd, its name, its path parts).

    Sorted, skipping `.git`. Symlinks to files are listed and symlinks to directories skipped, and
    neither is followed; a directory swapped for a symlink mid-walk is skipped. Each fd stays open
    until the next item is asked for.
    """
    with os.scandir(directory) as listing:
        entries = sorted((entry for entry in listing if entry.name != ".git"), key=lambda entry: entry.name)
    subdirectories = []
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                subdirectories.append(entry.name)
            elif not entry.is_dir():
                yield directory, entry.name, (*prefix, entry.name)
        except OSError:
            continue  # removed while we walked
    for name in subdirectories:
        try:
            subdirectory = os.open(name, _LIST_FLAGS, dir_fd=directory)
        except OSError:
            continue  # removed, or replaced by a symlink, while we walked
        try:
            yield from _walk_files(subdirectory, (*prefix, name))
        finally:
            os.close(subdirectory)


def _open_search_base(ctx: ToolContext, tool_input: dict[str, Any]) -> tuple[WorktreePath, int]:
    """The checked `path` a search starts from (default the worktree) and a descriptor for it."""
    base = resolve_path(ctx, tool_input.get("path", "."))
    try:
        return base, _open(base, os.O_RDONLY)
    except FileNotFoundError:
        raise ToolError(f"{base.rel} does not exist. Leave out path to search your whole worktree.") from None


def _glob(ctx: ToolContext, tool_input: dict[str, Any]) -> str:
    patterns = _compile_glob(tool_input["pattern"], name="Pattern")
    base, directory = _open_search_base(ctx, tool_input)
    found = []
    try:
        if not stat.S_ISDIR(os.fstat(directory).st_mode):
            raise ToolError(f"Directory {base.rel} is not a directory; Glob searches a directory.")
        for parent, name, parts in _walk_files(directory):
            if any(_matches(pattern, parts) for pattern in patterns):
                try:
                    modified = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mtime
                except FileNotFoundError:
                    continue  # removed while we walked
                found.append((-modified, base.child(parts).rel))
    finally:
        os.close(directory)
    if not found:
        return "No files found"
    found.sort()
    lines = [rel for _, rel in found[:GLOB_MAX_RESULTS]]
    if len(found) > GLOB_MAX_RESULTS:
        lines.append(
            f"(Results cut: showing the {GLOB_MAX_RESULTS} most recently modified of {len(found)} files. "
            "Use a more specific pattern or path.)"
        )
    return "\n".join(lines)


def _grep_files(base: WorktreePath, fd: int, glob: str | None) -> Iterator[tuple[str, int, os.stat_result]]:
    """Each regular file to search as (its name for the model, an open descriptor, its stat).

    `fd` is the open base: a file is searched alone, a directory walked. Symlinks are not followed,
    as ripgrep does by default. Each descriptor is closed when the next file is asked for.
    """
    info = os.fstat(fd)
    if not stat.S_ISDIR(info.st_mode):
        _require_regular(base, info)
        yield base.rel, fd, info
        return
    patterns = _compile_glob(glob, name="glob") if glob else None
    by_path = glob is not None and "/" in glob
    for parent, name, parts in _walk_files(fd):
        if patterns is not None:
            subject = parts if by_path else parts[-1:]
            if not any(_matches(pattern, subject) for pattern in patterns):
                continue
        try:
            file_fd = os.open(name, os.O_RDONLY | _FINAL_FLAGS, dir_fd=parent)
        except OSError:
            continue  # a symlink, unreadable, or removed while we walked
        try:
            info = os.fstat(file_fd)
            if stat.S_ISREG(info.st_mode):
                yield base.child(parts).rel, file_fd, info
        finally:
            os.close(file_fd)


def _grep(ctx: ToolContext, tool_input: dict[str, Any]) -> str:
    try:
        regex = re.compile(tool_input["pattern"])
    except re.error as exc:
        raise ToolError(f"Invalid regular expression {tool_input['pattern']!r}: {exc}") from None
    base, base_fd = _open_search_base(ctx, tool_input)
    shown: list[str] = []
    size = 0
    total = 0
    too_big: list[str] = []
    try:
        for rel, fd, info in _grep_files(base, base_fd, tool_input.get("glob")):
            if info.st_size > GREP_MAX_FILE_BYTES:
                too_big.append(rel)
                continue
            try:
                if _looks_binary(fd):
                    continue
                with open(fd, encoding="utf-8", errors="replace", closefd=False) as handle:
                    for number, line in enumerate(handle, start=1):
                        if not regex.search(line):
                            continue
                        total += 1
                        if len(shown) < GREP_MAX_MATCHES and size < MAX_OUTPUT_CHARS:
                            text = line.rstrip("\r\n")
                            if len(text) > MAX_LINE_CHARS:
                                text = text[:MAX_LINE_CHARS] + TRUNCATED_LINE_MARK
                            shown.append(f"{rel}:{number}:{text}")
                            size += len(shown[-1]) + 1
            except OSError:
                continue  # unreadable
    finally:
        os.close(base_fd)
    lines = shown or ["No matches found"]
    if total > len(shown):
        lines.append(f"[{total - len(shown)} more matches not shown; narrow the pattern, path or glob.]")
    if too_big:
        listed = ", ".join(too_big[:5]) + (", ..." if len(too_big) > 5 else "")
        lines.append(f"[Skipped {len(too_big)} files over {GREP_MAX_FILE_BYTES // 2**20} MB: {listed}]")
    return "\n".join(lines)


def _schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


_FILE_PATH = {
    "type": "string",
    "description": "Path of the file, relative to your worktree or absolute inside it.",
}

FILE_TOOLS: list[Tool] = [
    Tool(
        name="Read",
        description=(
            "Reads a text file from your worktree. Returns up to 2000 lines from the start by default; "
            "for long files pass offset (the 1-based line to start at) and limit (how many lines). "
            "Lines longer than 2000 characters are truncated. Output is numbered like `cat -n`: "
            "spaces, the line number and a tab come before each line; they are not part of the file, "
            "so leave them out of Edit's old_string. Directories and binary files are refused: use "
            "Glob or Bash for those."
        ),
        input_schema=_schema(
            {
                "file_path": _FILE_PATH,
                "offset": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "Line number to start at (1-based).",
                },
                "limit": {"type": "integer", "minimum": 1, "description": "Number of lines to read."},
            },
            ["file_path"],
        ),
        handler=_read,
    ),
    Tool(
        name="Write",
        description=(
            "Writes a file in your worktree as UTF-8, creating parent directories and replacing the "
            "file if it exists. Prefer Edit to change part of an existing file, and Read a file before "
            "overwriting it. Files inside .git cannot be written."
        ),
        input_schema=_schema(
            {
                "file_path": _FILE_PATH,
                "content": {"type": "string", "description": "The full content to write to the file."},
            },
            ["file_path", "content"],
        ),
        handler=_write,
    ),
    Tool(
        name="Edit",
        description=(
            "Replaces exact text in an existing file. old_string must match the file exactly, including "
            "whitespace and indentation (copy it from Read's output without the line-number prefix). "
            "The edit fails if old_string is not found, or if it is found more than once and "
            "replace_all is not set: then include more surrounding lines to make it unique. Use "
            "replace_all to rename something throughout the file."
        ),
        input_schema=_schema(
            {
                "file_path": _FILE_PATH,
                "old_string": {"type": "string", "description": "The text to replace."},
                "new_string": {
                    "type": "string",
                    "description": "The text to replace it with (must differ from old_string).",
                },
                "replace_all": {
                    "type": "boolean",
                    "description": "Replace every occurrence of old_string (default false).",
                },
            },
            ["file_path", "old_string", "new_string"],
        ),
        handler=_edit,
    ),
    Tool(
        name="Glob",
        description=(
            "Finds files by name pattern, e.g. `**/*.py` or `src/**/*.{ts,tsx}`. `*` matches within one "
            "directory, `**` across any number of directories; a pattern without `**` only matches at "
            "its own depth. Returns file paths relative to your worktree, most recently modified first "
            "(at most 1000). .git is skipped. Use Grep to search file contents."
        ),
        input_schema=_schema(
            {
                "pattern": {"type": "string", "description": "The glob pattern to match file paths against."},
                "path": {
                    "type": "string",
                    "description": "Directory to search in (relative to your worktree or absolute inside "
                    "it). Defaults to the worktree.",
                },
            },
            ["pattern"],
        ),
        handler=_glob,
    ),
    Tool(
        name="Grep",
        description=(
            "Searches file contents with a Python regular expression (e.g. `def \\w+\\(`; start it with "
            "`(?i)` to ignore case). Searches text files under path (default your worktree) or a single "
            "file, skipping .git and binary files. glob filters which files are searched: `*.py` matches "
            "file names, `src/**/*.py` paths. Output is one `path:line_number:line` per matching line, "
            "at most 500. Use this instead of grep or rg in Bash."
        ),
        input_schema=_schema(
            {
                "pattern": {"type": "string", "description": "The regular expression to search for."},
                "path": {
                    "type": "string",
                    "description": "File or directory to search (relative to your worktree or absolute "
                    "inside it). Defaults to the worktree.",
                },
                "glob": {
                    "type": "string",
                    "description": "Only search files matching this glob, e.g. `*.py` or `**/*.{ts,tsx}`.",
                },
            },
            ["pattern"],
        ),
        handler=_grep,
    ),
]

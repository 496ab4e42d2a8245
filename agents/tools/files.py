"""File tools with Claude Code's names and schemas: Read, Write, Edit, Glob, Grep.

Every path the model gives goes through `resolve_path`, the one place that decides whether a path
is inside the agent's worktree.
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
from collections.abc import Iterator
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


def resolve_path(ctx: ToolContext, file_path: str, *, for_write: bool = False) -> Path:
    """The real location of `file_path` (relative to the worktree or absolute), or a ToolError.

    Symlinks and `..` are resolved before the check, so a link inside the worktree that points
    outside it is refused like the outside path itself.
    """
    root = os.path.realpath(ctx.worktree)
    if not os.path.isdir(root):
        raise ToolError(
            f"Your worktree {root} is gone (deleted from outside). Stop and end your turn: a person has to "
            "look; your committed work is safe on your branch."
        )
    if "\0" in file_path:
        raise ToolError(f"Refusing path {file_path!r}: it contains a NUL byte. You work in {root}.")
    resolved = os.path.realpath(os.path.join(root, file_path))
    if resolved != root and not resolved.startswith(root.rstrip(os.sep) + os.sep):
        raise ToolError(
            f"Refusing path {file_path!r}: it resolves (following symlinks and '..') to {resolved}, "
            f"which is outside your worktree. You work in {root}; use a path inside it."
        )
    if for_write and ".git" in Path(os.path.relpath(resolved, root)).parts:
        raise ToolError(
            f"Refusing to write {file_path!r}: it is inside .git, and agents may not change git "
            f"internals. You work in {root}; use git commands through Bash to commit or branch."
        )
    return Path(resolved)


def _relative(ctx: ToolContext, path: Path | str) -> str:
    return os.path.relpath(path, os.path.realpath(ctx.worktree))


def _regular_file(ctx: ToolContext, path: Path, *, hint: str = "") -> os.stat_result:
    """The file's stat, or a ToolError saying why it cannot be used as a file."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ToolError(f"File does not exist: {_relative(ctx, path)}.{hint}") from None
    if stat.S_ISDIR(info.st_mode):
        raise ToolError(
            f"{_relative(ctx, path)} is a directory, not a file. Use Glob or Bash `ls` to list it."
        )
    if not stat.S_ISREG(info.st_mode):
        raise ToolError(f"{_relative(ctx, path)} is not a regular file (a device, socket or FIFO).")
    return info


def _looks_binary(path: Path) -> bool:
    with path.open("rb") as handle:
        return b"\0" in handle.read(BINARY_SNIFF_BYTES)


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
    info = _regular_file(ctx, path, hint=" Use Glob to find files.")
    rel = _relative(ctx, path)
    if info.st_size == 0:
        return f"(File {rel} is empty.)"
    if _looks_binary(path):
        raise ToolError(
            f"{rel} looks like a binary file (it has NUL bytes); Read shows text files only. "
            "Use Bash (e.g. `file` or `xxd | head`) to inspect it."
        )
    offset = tool_input.get("offset", 1)
    limit = tool_input.get("limit", READ_DEFAULT_LIMIT)
    shown: list[str] = []
    size = 0
    note = ""
    with path.open(encoding="utf-8", errors="replace") as handle:
        lines = _iter_lines(handle)
        for number, line in enumerate(lines, start=1):
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
                return f"(File {rel} has only {number} lines; offset {offset} is past its end.)"
    return "\n".join(shown) + (f"\n\n{note}" if note else "")


# Write


def _encode(content: str) -> bytes:
    try:
        return content.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ToolError(f"Content is not valid Unicode text: {exc}") from None


def _write(ctx: ToolContext, tool_input: dict[str, Any]) -> str:
    path = resolve_path(ctx, tool_input["file_path"], for_write=True)
    rel = _relative(ctx, path)
    if path.exists() and not path.is_file():
        raise ToolError(f"{rel} exists and is not a regular file; Write only replaces files.")
    data = _encode(tool_input["content"])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except (NotADirectoryError, FileExistsError):
        raise ToolError(f"Cannot write {rel}: a parent of it is a file, not a directory.") from None
    return f"Wrote {len(data)} bytes to {rel}"


# Edit


def _edit(ctx: ToolContext, tool_input: dict[str, Any]) -> str:
    path = resolve_path(ctx, tool_input["file_path"], for_write=True)
    _regular_file(ctx, path, hint=" Use Write to create it.")
    rel = _relative(ctx, path)
    old, new = tool_input["old_string"], tool_input["new_string"]
    if not old:
        raise ToolError("old_string is empty. Use Write to create or overwrite a whole file.")
    if old == new:
        raise ToolError("old_string and new_string are the same; there is nothing to change.")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ToolError(f"{rel} is not UTF-8 text; Edit only changes text files.") from None
    count = text.count(old)
    if count == 0:
        raise ToolError(
            f"old_string was not found in {rel}. It must match the file exactly, including "
            "whitespace and indentation; Read the file to check."
        )
    if count > 1 and not tool_input.get("replace_all", False):
        raise ToolError(
            f"old_string was found {count} times in {rel}. Give more surrounding context to make it "
            "unique, or set replace_all to true to replace every occurrence."
        )
    path.write_bytes(_encode(text.replace(old, new)))
    return f"Edited {rel}: replaced {count} occurrence{'s' if count > 1 else ''}."


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


def _walk_files(base: Path) -> Iterator[tuple[Path, tuple[str, ...]]]:
    """Every file under base (symlinks listed, not followed), skipping `.git`, in sorted order."""
    for directory, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        relative_dir = Path(directory).relative_to(base).parts
        for filename in sorted(filenames):
            if filename != ".git":
                yield Path(directory, filename), (*relative_dir, filename)


def _search_dir(ctx: ToolContext, tool_input: dict[str, Any]) -> Path:
    return resolve_path(ctx, tool_input["path"]) if "path" in tool_input else resolve_path(ctx, ".")


def _glob(ctx: ToolContext, tool_input: dict[str, Any]) -> str:
    base = _search_dir(ctx, tool_input)
    if not base.is_dir():
        problem = "is not a directory" if base.exists() else "does not exist"
        raise ToolError(f"Directory {_relative(ctx, base)} {problem}; Glob searches a directory.")
    patterns = _compile_glob(tool_input["pattern"], name="Pattern")
    found = []
    for path, parts in _walk_files(base):
        if any(_matches(pattern, parts) for pattern in patterns):
            try:
                found.append((-path.lstat().st_mtime, _relative(ctx, path)))
            except FileNotFoundError:
                continue  # removed while we walked
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


def _grep_candidates(ctx: ToolContext, base: Path, glob: str | None) -> Iterator[tuple[Path, os.stat_result]]:
    if base.is_file():
        yield base, _regular_file(ctx, base)
        return
    if not base.is_dir():
        _regular_file(ctx, base)  # raises the right error: missing or special file
    patterns = _compile_glob(glob, name="glob") if glob else None
    by_path = glob is not None and "/" in glob
    for path, parts in _walk_files(base):
        if patterns is not None:
            subject = parts if by_path else parts[-1:]
            if not any(_matches(pattern, subject) for pattern in patterns):
                continue
        info = path.lstat()
        if stat.S_ISREG(info.st_mode):  # symlinks are not followed, as ripgrep does by default
            yield path, info


def _grep(ctx: ToolContext, tool_input: dict[str, Any]) -> str:
    try:
        regex = re.compile(tool_input["pattern"])
    except re.error as exc:
        raise ToolError(f"Invalid regular expression {tool_input['pattern']!r}: {exc}") from None
    base = _search_dir(ctx, tool_input)
    shown: list[str] = []
    size = 0
    total = 0
    too_big: list[str] = []
    for path, info in _grep_candidates(ctx, base, tool_input.get("glob")):
        rel = _relative(ctx, path)
        if info.st_size > GREP_MAX_FILE_BYTES:
            too_big.append(rel)
            continue
        try:
            if _looks_binary(path):
                continue
            with path.open(encoding="utf-8", errors="replace") as handle:
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
            continue  # unreadable or removed while we searched
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

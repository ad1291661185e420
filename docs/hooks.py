"""MkDocs hook: the configuration reference, generated from ``digitgan.config.describe()``.

``describe()`` returns ``(key, type_name, default, help)`` for every config field (keys such
as ``train.iters`` or ``model.mlp.g_hidden``); it is also what ``digitgan config --explain``
prints, so the page and the command cannot disagree. The page that holds the marker line
``<!-- config-reference -->`` gets one ``##`` section per config section (the part of the key
before its first dot), each with a table of its fields.

Nothing here is skipped quietly: if digitgan cannot be imported, ``describe()`` fails or
returns nothing, or the reference page lacks its marker, the build stops with an error.
"""

from __future__ import annotations

import html
import json
import math
from typing import Any

from mkdocs.exceptions import PluginError

MARKER = "<!-- config-reference -->"
PAGE = "reference/configuration.md"


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell: no pipes, no line breaks, no raw HTML."""
    text = html.escape(" ".join(str(text).split()), quote=False)
    return text.replace("|", "\\|")


def _code(text: str) -> str:
    """A code span for a table cell (pipes inside a code span do not split the cell)."""
    text = " ".join(str(text).split())
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _default(value: Any) -> str:
    """A default as it is written in a TOML config file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "(none)"
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else "nan")
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


def _rows() -> list[tuple[str, str, Any, str]]:
    try:
        from digitgan.config import describe

        rows = list(describe())
    except Exception as e:  # any failure stops the build, with the cause named
        raise PluginError(
            f"docs/hooks.py: cannot build {PAGE}: digitgan.config.describe() failed: "
            f"{type(e).__name__}: {e}"
        ) from e
    if not rows:
        raise PluginError("docs/hooks.py: digitgan.config.describe() returned no fields")
    for row in rows:
        if len(row) != 4 or not isinstance(row[0], str) or "." not in row[0]:
            raise PluginError(
                "docs/hooks.py: describe() rows must be (key 'section.name', type, default, "
                f"help); got {row!r}"
            )
    return rows


def config_reference() -> str:
    """The markdown that replaces the marker: one section and table per config section."""
    sections: dict[str, list[tuple[str, str, Any, str]]] = {}
    for row in _rows():
        sections.setdefault(row[0].split(".", 1)[0], []).append(row)
    out = []
    for section, rows in sections.items():
        out += [f"## {section}", ""]
        out += ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        for key, type_name, default, help_text in rows:
            cells = (_code(key), _cell(type_name), _code(_default(default)), _cell(help_text))
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def on_page_markdown(markdown: str, page, config, files) -> str:
    path = page.file.src_uri
    if MARKER not in markdown:
        if path == PAGE:
            raise PluginError(f"docs/hooks.py: {PAGE} has no {MARKER} line to replace")
        return markdown
    lines = markdown.split("\n")
    if sum(line.strip() == MARKER for line in lines) != 1:
        raise PluginError(f"docs/hooks.py: {path} must hold {MARKER} once, on a line of its own")
    table = config_reference()
    return "\n".join(table if line.strip() == MARKER else line for line in lines)

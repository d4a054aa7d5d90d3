"""Untrusted text (labels, families, reasons, captions, paths...) as literal markdown.

Model labels come from directory names, families and reasons from datasets and views: none
of it may shape report.md (or ``$GITHUB_STEP_SUMMARY``, the same text) or the terminal.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

__all__ = ["md_code", "md_json", "md_link_target", "md_text", "one_line"]

# CSI (colours, cursor moves) and OSC (window titles, hyperlinks) escapes, whole, so that no
# stray "[31m" is left behind; any other control char becomes a space below.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]")
# Bidi overrides and isolates can make a label display as another one ("Trojan Source").
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_SPACES = re.compile(r"\s+")


def _is_control(ch: str) -> bool:
    # Cc: C0, DEL, C1 (NEL, CSI...); Zl/Zp: U+2028/2029, which some renderers break lines on.
    return unicodedata.category(ch) in ("Cc", "Zl", "Zp") or ch in _BIDI


def one_line(text: object) -> str:
    """``text`` as one printable line: ANSI escapes dropped, control characters, line and
    paragraph separators and bidi overrides as spaces, runs of spaces as one.

    For the terminal: a label cannot move the cursor, recolour or rewrite earlier lines.
    """
    s = _ANSI.sub("", str(text))
    s = "".join(" " if _is_control(ch) else ch for ch in s)
    return _SPACES.sub(" ", s).strip()


# Backslash-escaped wherever they appear. CommonMark lets a backslash escape any ASCII
# punctuation; these are the ones that open syntax mid-line: links and images ([ ] — a "("
# or "!" is inert without them), emphasis and strikethrough (* ~), code (`), table cells
# (|; GFM splits a row on an unescaped | even inside a code span), headings' closing
# sequences and issue references (#), GitHub's math ($), and the backslash itself.
_ESCAPED = frozenset("\\`*~[]|#$")
# As entities, not backslashes: they stay literal inside raw HTML blocks too (the
# <details> around the extras), where a backslash escape is not read.
_ENTITIES = {"<": "&lt;", ">": "&gt;", "&": "&amp;"}
# At the start of a line these open a block (list item, thematic break, setext underline,
# ordered list "1." / "1)"); a template may put untrusted text there.
_LINE_START = re.compile(r"^(?:[-+=]|\d{1,9}[.)](?= |$))")


def md_text(text: object, limit: int | None = None) -> str:
    """``text`` so that GitHub-flavoured markdown renders it as literal text, one line.

    Safe in a table cell, running text, a list item or a heading, at the start of a line or
    not: control characters and line breaks become spaces (no injected heading or row);
    ``<``, ``>`` and ``&`` become entities (``<img onerror=...>`` shows as text, and no
    ``<javascript:...>`` autolink can form); ``[``/``]`` are escaped, so no ``[..](..)``
    link or ``![..](..)`` image can form and a ``javascript:`` URL stays text (GFM's
    extended autolinks only take ``www.``, ``http(s)://``, ``ftp://`` and e-mail addresses,
    whose links are ordinary ones); ``|`` is ``\\|`` so a cell never splits; ``*``, ``~``,
    `````` ` `````` and ``_`` (the latter only where it could delimit emphasis: intraword
    ``_`` never does, so ``novel_recall`` stays readable in the raw file) cannot format.
    Text longer than ``limit`` characters is cut, with ``…``, before escaping.
    """
    s = one_line(text)
    if limit is not None and len(s) > limit:
        s = s[: max(limit - 1, 0)].rstrip() + "…"
    out = []
    for i, ch in enumerate(s):
        if ch in _ENTITIES:
            out.append(_ENTITIES[ch])
        elif ch in _ESCAPED:
            out.append("\\" + ch)
        elif ch == "_" and not (0 < i < len(s) - 1 and s[i - 1].isalnum() and s[i + 1].isalnum()):
            out.append("\\_")
        else:
            out.append(ch)
    escaped = "".join(out)
    m = _LINE_START.match(escaped)
    if m:
        end = m.end()
        escaped = escaped[: end - 1] + "\\" + escaped[end - 1 :]
    return escaped


_PLAIN_CODE = re.compile(r"^[A-Za-z0-9._:/@+=-]+$")


def md_code(text: object) -> str:
    """``text`` as an inline code span when it is a plain name (a metric, a gate), else as
    :func:`md_text`: backslash escapes do not work inside a code span, so one holding a
    backtick or ``|`` could end early or split a row. Not for table cells holding ``|``."""
    s = one_line(text)
    return f"`{s}`" if _PLAIN_CODE.match(s) else md_text(s)


def md_json(text: str) -> str:
    """Compact JSON (ASCII: ``json.dumps`` escapes control characters) as a code span, its
    fence longer than any run of backticks inside, so the span cannot end early."""
    s = one_line(text)
    longest = max((len(r) for r in re.findall(r"`+", s)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def md_link_target(path: str) -> str:
    """A relative file path as a link destination: percent-encoded, so no space, ``)``,
    ``<`` or scheme (``javascript:`` would need its ``:``) can change where it points."""
    return quote(path, safe="/")

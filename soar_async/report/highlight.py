"""Python syntax highlighting as HTML spans, small enough to embed and safe on any text.

Model-written programs are often not valid Python (cut off at the token limit, unbalanced
quotes), so this is a regular-expression tokenizer that never fails, not `tokenize`, which
raises on such text. Every piece of text goes through `escape`, so a program can neither
inject markup into the report nor put an external URL into it (see `escape`).
"""

from __future__ import annotations

import builtins
import html
import keyword
import re

KEYWORDS = frozenset(keyword.kwlist)
BUILTINS = frozenset(n for n in dir(builtins) if not n.startswith("_")) - KEYWORDS

_TOKEN = re.compile(
    r"""
    (?P<c>\#[^\n]*)
  | (?P<s>(?:[rRbBuUfF]{0,2})(?:'''[\s\S]*?(?:'''|$(?![\s\S]))|\"\"\"[\s\S]*?(?:\"\"\"|$(?![\s\S]))
        |'(?:\\.|[^'\\\n])*(?:'|$)|"(?:\\.|[^"\\\n])*(?:"|$)))
  | (?P<n>\b(?:0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+
        |(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)(?:[eE][+-]?\d+)?[jJ]?)\b)
  | (?P<w>[A-Za-z_][A-Za-z0-9_]*)
    """,
    re.VERBOSE | re.MULTILINE,
)
"""Comments, strings (any prefix, triple-quoted, unterminated ones run to the end of the
line or text), numbers, words; everything between matches is plain text."""

CLASSES = {"k": "keyword", "s": "string", "n": "number", "c": "comment", "b": "builtin", "f": "defined name"}
"""The span classes `highlight` emits (the report's CSS colours them)."""


def escape(text: str, *, quote: bool = True) -> str:
    """HTML-escape text for element content (`quote=False`: quotes stay, programs are full of
    them) or quoted attributes. "://" is written with a character reference for the slash: it
    reads the same, but the file holds no URL, so a program or task name that mentions one
    cannot make the report look as if it loads anything."""
    return html.escape(text, quote=quote).replace("://", ":&#47;/")


def _span(cls: str, text: str) -> str:
    return f"<span class={cls}>{escape(text, quote=False)}</span>"


def highlight(code: str) -> str:
    """`code` as HTML: keywords, builtins, strings, numbers, comments and the names after
    def/class in spans of the classes in `CLASSES`, the rest escaped as it is."""
    out: list[str] = []
    pos = 0
    after_def = False
    for m in _TOKEN.finditer(code):
        if m.start() > pos:
            out.append(escape(code[pos : m.start()], quote=False))
        kind = m.lastgroup or ""
        text = m.group()
        if kind == "w":
            if text in KEYWORDS:
                out.append(_span("k", text))
                after_def = text in ("def", "class")
                pos = m.end()
                continue
            if after_def:
                out.append(_span("f", text))
            elif text in BUILTINS:
                out.append(_span("b", text))
            else:
                out.append(escape(text, quote=False))
        else:
            out.append(_span(kind, text))
        after_def = False
        pos = m.end()
    out.append(escape(code[pos:], quote=False))
    return "".join(out)

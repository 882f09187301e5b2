"""Helpers of the report tests: a small HTML reader (`Dom`), enough to find elements by tag,
class, id and attribute in the report as written and in the DOM a headless browser dumps after
the scripts ran; the shared run's description; the CLI in this process."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from soar_async.cli import main

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    parent: Element | None
    content: list[Element | str] = field(default_factory=list)
    """Child elements and text, in document order."""

    @property
    def children(self) -> list[Element]:
        return [c for c in self.content if isinstance(c, Element)]

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def text(self) -> str:
        """All text inside, in document order."""
        return "".join(c if isinstance(c, str) else c.text() for c in self.content)

    def iter(self) -> Iterator[Element]:
        yield self
        for c in self.children:
            yield from c.iter()

    def find_all(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> list[Element]:
        """Elements inside (this one included) with that tag, class and attributes (data_x for data-x)."""
        return [
            e
            for e in self.iter()
            if (tag is None or e.tag == tag)
            and (cls is None or cls in e.classes)
            and all(e.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]

    def by_id(self, id_: str) -> Element:
        (found,) = self.find_all(id=id_)
        return found


class Dom(HTMLParser):
    """A tolerant tree of an HTML document: enough to find elements and read their text."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#root", {}, None)
        self._cur = self.root
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        el = Element(tag, {k: v or "" for k, v in attrs}, self._cur)
        self._cur.content.append(el)
        if tag not in VOID:
            self._cur = el

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._cur.content.append(Element(tag, {k: v or "" for k, v in attrs}, self._cur))

    def handle_endtag(self, tag: str) -> None:
        el: Element | None = self._cur
        while el is not None and el.tag != tag:
            el = el.parent
        if el is not None and el.parent is not None:
            self._cur = el.parent

    def handle_data(self, data: str) -> None:
        self._cur.content.append(data)


@dataclass
class ScriptedRun:
    run_dir: Path
    report: Path
    results: dict[str, Any]
    """`soar results --json` of the run."""
    report_stdout: str


def soar_out(*args: str) -> str:
    """The CLI in this process; its stdout (it must succeed)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(list(args))
    assert rc == 0, f"soar {' '.join(args)} exited {rc}"
    return buf.getvalue()

"""Turn an HTML page into its title and the text a visitor would read, using only the standard library.

Scripts, styles and other markup that never renders as text are dropped, so a reviewer (model or rule) sees
the agenda rather than analytics snippets. Block-level elements become line breaks; whitespace inside a line
is collapsed to single spaces.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

MAX_TEXT_CHARS = 20_000

_WHITESPACE = re.compile(r"\s+")

# Elements whose content is never visible text. <head> is skipped too, except for its <title>.
SKIPPED = frozenset({"script", "style", "noscript", "template", "svg", "head", "iframe", "object"})

# Elements that start a new line of text, so "<li>Ruby</li><li>Rails</li>" does not read "RubyRails".
BLOCKS = frozenset(
    {
        "address",
        "article",
        "aside",
        "blockquote",
        "br",
        "dd",
        "div",
        "dl",
        "dt",
        "figcaption",
        "figure",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "td",
        "th",
        "tr",
        "ul",
    }
)


class _TextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title_parts: list[str] = []
        self.text_parts: list[str] = []
        self._skipping: list[str] = []
        self._in_title = False
        self._seen_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            # </head> is optional in HTML: an opening <body> always ends the head.
            self._close("head")
        if tag == "title" and not self._seen_title and set(self._skipping) <= {"head"}:
            self._in_title = True
        elif tag in SKIPPED:
            self._skipping.append(tag)
        elif tag in BLOCKS:
            self.text_parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self._in_title:
            self._in_title = False
            self._seen_title = True
        elif tag in SKIPPED:
            self._close(tag)
        elif tag in BLOCKS:
            self.text_parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title_parts.append(data)
        elif not self._skipping:
            # Line breaks in the source are just whitespace; only block elements break lines.
            self.text_parts.append(_WHITESPACE.sub(" ", data))

    def _close(self, tag: str) -> None:
        """Leave the innermost open ``tag``, along with anything left unclosed inside it."""
        if tag in self._skipping:
            index = len(self._skipping) - 1 - self._skipping[::-1].index(tag)
            del self._skipping[index:]


def _collapse_line(text: str) -> str:
    return " ".join(text.split())


def extract(html: str, *, max_chars: int = MAX_TEXT_CHARS) -> tuple[str, str]:
    """Return ``(title, text)`` for ``html``.

    The title is the first ``<title>`` of the document (not one inside an ``<svg>``), whitespace-collapsed.
    The text is the visible text, one line per block, at most ``max_chars`` characters (cut at a word
    boundary when possible). Malformed HTML never raises: the parser recovers as browsers do, roughly.
    """
    parser = _TextParser()
    parser.feed(html)
    parser.close()
    title = _collapse_line("".join(parser.title_parts))
    lines = (_collapse_line(line) for line in "".join(parser.text_parts).split("\n"))
    text = "\n".join(line for line in lines if line)
    return title, _truncate(text, max_chars)


def _truncate(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    boundary = max(cut.rfind(" "), cut.rfind("\n"))
    # Only back off to a word boundary when it does not throw away a large tail.
    if boundary >= max_chars * 0.9:
        cut = cut[:boundary]
    return cut.rstrip()

"""Attachment bytes to plain text: base64, the declared charset, HTML without its markup.

Notes arrive as ``Attachment.data`` (base64) with a ``contentType`` such as
``text/html; charset=ISO-8859-1``.  Only text types are read; everything else (PDF, RTF, images)
is reported back as not read, never guessed at.  Scripts and styles are dropped with their
content; block elements end a line, so a table row or list item stays its own sentence.
"""
from __future__ import annotations

import base64
import binascii
import codecs
from html.parser import HTMLParser

READABLE = {"text/plain": "plain", "text/html": "html", "application/xhtml+xml": "html"}
BLOCK_TAGS = frozenset({"p", "div", "br", "li", "tr", "td", "th", "h1", "h2", "h3", "h4", "h5", "h6",
                        "table", "ul", "ol", "section", "article", "header", "footer", "pre", "blockquote", "dd", "dt"})
SKIPPED_TAGS = frozenset({"script", "style", "head", "title", "template", "noscript"})


class Unreadable(ValueError):
    """Why an attachment was not read, in words for the card ("PDF", "not valid base64")."""


def media_type(content_type: object) -> tuple[str, str | None]:
    """(``type/subtype`` in lower case, the charset parameter or None)."""
    if not isinstance(content_type, str) or not content_type.strip():
        return "", None
    kind, *params = (part.strip() for part in content_type.split(";"))
    charset = next((p.split("=", 1)[1].strip().strip('"') for p in params if p.lower().startswith("charset=")), None)
    return kind.lower(), charset


def decode(data: object, content_type: object, max_bytes: int) -> str:
    """The text of a base64 attachment; raises :class:`Unreadable` saying why not."""
    kind, charset = media_type(content_type)
    if kind and kind not in READABLE:
        raise Unreadable(kind_name(kind))
    if not isinstance(data, str) or not data.strip():
        raise Unreadable("empty attachment")
    if len(data) > max_bytes * 4 // 3 + 4:
        raise Unreadable(f"larger than {max_bytes:,} bytes")
    try:
        raw = base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        raise Unreadable("not valid base64") from None
    return to_text(raw, kind or "text/plain", charset)


def to_text(raw: bytes, kind: str, charset: str | None) -> str:
    """Bytes of a text attachment as text, in the declared charset (UTF-8 when none is declared,
    falling back to Windows-1252, which decodes any byte); HTML loses its markup."""
    if charset:
        try:
            codecs.lookup(charset)
        except (LookupError, ValueError, TypeError):
            raise Unreadable(f"unknown charset {charset[:40]!r}") from None
        text = raw.decode(charset, errors="replace")
    else:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("cp1252", errors="replace")
    return strip_html(text) if READABLE.get(kind) == "html" else text


def kind_name(kind: str) -> str:
    names = {"application/pdf": "PDF", "application/rtf": "RTF", "text/rtf": "RTF"}
    return names.get(kind, "images" if kind.startswith("image/") else kind[:60])


class _TextOnly(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag, attrs):
        if tag in SKIPPED_TAGS:
            self.skipping += 1
        elif tag in BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in SKIPPED_TAGS:
            self.skipping = max(0, self.skipping - 1)
        elif tag in BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.skipping:
            self.parts.append(data)


def strip_html(html: str) -> str:
    """The visible text of an HTML fragment or document (FHIR Narrative.div included)."""
    parser = _TextOnly()
    parser.feed(html)
    parser.close()
    return "".join(parser.parts)

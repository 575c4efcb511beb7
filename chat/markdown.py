"""Model replies as safe HTML: Markdown rendered on the server, then sanitised.

Model output is untrusted (a prompt can make a model write anything), so two
independent layers stand between it and the page:

1. Markdown runs with its raw-HTML handling removed, so `<script>` in a reply is
   escaped and shown as text rather than passed through.
2. nh3 (ammonia) then keeps only a short list of tags and attributes, only
   http/https/mailto links, and adds rel="nofollow noopener noreferrer" and
   target="_blank" (a link in a reply opens in a new tab, so the chat stays open).

Either layer alone would stop a script; both are here because the first one
depends on Markdown internals that could change between releases.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as etree

import markdown
import nh3
from markdown.treeprocessors import Treeprocessor

ALLOWED_TAGS = {
    "p",
    "br",
    "hr",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "strong",
    "em",
    "del",
    "code",
    "pre",
    "blockquote",
    "ul",
    "ol",
    "li",
    "a",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
}
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "code": {"class"},
    "ol": {"start"},
    "th": {"align"},
    "td": {"align"},
}
LINK_SCHEMES = {"http", "https", "mailto"}
LINK_REL = "nofollow noopener noreferrer"
# Set on every link, whatever the reply wrote: with rel=noopener the new tab cannot
# reach back into this page through window.opener.
LINK_TARGET = "_blank"

_SAFE_HREF = re.compile(r"^(?:https?://|mailto:)", re.IGNORECASE)
_LANGUAGE_CLASS = re.compile(r"^language-[A-Za-z0-9_+#.-]{1,40}$")
_ALIGN = {"left", "right", "center"}


def _attribute_filter(tag: str, attr: str, value: str) -> str | None:
    if attr == "href":
        # Relative and protocol-relative links are dropped too: a reply should not
        # be able to point at this site's own pages (or look like it does).
        return value if _SAFE_HREF.match(value.strip()) else None
    if tag == "code" and attr == "class":
        return value if _LANGUAGE_CLASS.match(value) else None
    if attr == "align":
        return value if value in _ALIGN else None
    if attr == "start":
        return value if value.isdigit() and len(value) < 7 else None
    return value


_cleaner = nh3.Cleaner(
    tags=ALLOWED_TAGS,
    clean_content_tags={"script", "style"},
    attributes=ALLOWED_ATTRIBUTES,
    attribute_filter=_attribute_filter,
    link_rel=LINK_REL,
    set_tag_attribute_values={"a": {"target": LINK_TARGET}},
    url_schemes=LINK_SCHEMES,
    url_relative="deny",
    strip_comments=True,
)


class _ImagesAsLinks(Treeprocessor):
    """`![alt](url)` becomes a link: a reply must not load images (tracking pixels)."""

    def run(self, root: etree.Element) -> None:
        for img in root.iter("img"):
            src = img.get("src", "")
            alt = img.get("alt", "") or "image"
            img.attrib.clear()
            img.tag = "a"
            img.set("href", src)
            img.text = alt


class _NoRawHtml(markdown.Extension):
    def extendMarkdown(self, md: markdown.Markdown) -> None:
        # Without these, Markdown passes raw HTML through untouched; with them
        # removed it is escaped like any other text.
        md.preprocessors.deregister("html_block")
        md.inlinePatterns.deregister("html")
        md.treeprocessors.register(_ImagesAsLinks(md), "images_as_links", 5)


def sanitize_html(html: str) -> str:
    """Keep only the allowed tags, attributes and link schemes."""
    return _cleaner.clean(html)


def render_markdown(text: str) -> str:
    """Markdown (with fenced code blocks and tables) to sanitised HTML."""
    # A Markdown instance keeps per-document state, so a new one per call is
    # the thread-safe choice (the worker runs many threads); it costs ~0.1 ms.
    md = markdown.Markdown(
        extensions=["fenced_code", "tables", "sane_lists", _NoRawHtml()],
        # `align` survives sanitising; the default inline `style` would not.
        extension_configs={"tables": {"use_align_attribute": True}},
        output_format="html",
    )
    return sanitize_html(md.convert(text or ""))

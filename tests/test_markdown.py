"""chat.markdown: model output rendered to HTML that cannot run anything."""

from __future__ import annotations

import re

import pytest

from chat.markdown import LINK_REL, render_markdown, sanitize_html

LINK = f'target="_blank" rel="{LINK_REL}"'

# Anything that would make a browser run script or fetch a resource.
DANGER = re.compile(r"<script|<img|<iframe|<svg|<object|<embed|<style|\son\w+\s*=|javascript:|data:|vbscript:", re.I)


def tags(html: str) -> set[str]:
    return {t.lower() for t in re.findall(r"<([a-zA-Z][a-zA-Z0-9]*)", html)}


def test_script_tag_is_shown_as_text() -> None:
    html = render_markdown("<script>alert(1)</script>")
    assert "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_img_with_onerror_is_shown_as_text() -> None:
    html = render_markdown("<img src=x onerror=alert(1)>")
    assert tags(html) == {"p"}
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_markdown_javascript_link_loses_its_href() -> None:
    html = render_markdown("[x](javascript:alert(1))")
    assert "javascript:" not in html
    assert "href" not in html
    assert ">x</a>" in html


@pytest.mark.parametrize(
    "url",
    ["JaVaScRiPt:alert(1)", "java&#x09;script:alert(1)", " javascript:alert(1)", "vbscript:msgbox(1)"],
)
def test_disguised_script_links_lose_their_href(url: str) -> None:
    html = render_markdown(f"[x]({url})")
    assert "href" not in html
    assert not DANGER.search(html)


def test_raw_anchor_with_javascript_href_is_shown_as_text() -> None:
    html = render_markdown('<a href="javascript:alert(1)">click</a>')
    assert "<a" not in html
    assert "&lt;a href=" in html


def test_data_urls_are_dropped_from_links_and_images() -> None:
    html = render_markdown("[doc](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)")
    assert "data:" not in html and "href" not in html
    html = render_markdown("![pixel](data:image/png;base64,iVBORw0KGgo=)")
    assert "data:" not in html and "<img" not in html


def test_images_become_links_so_nothing_is_fetched() -> None:
    html = render_markdown("![a chart](https://example.com/chart.png)")
    assert "<img" not in html
    assert f'<a href="https://example.com/chart.png" {LINK}>a chart</a>' in html


def test_event_handler_attributes_are_inert_in_markdown() -> None:
    html = render_markdown('<div onclick="alert(1)" onmouseover=alert(2)>hi</div>')
    assert "<div" not in html
    assert "&lt;div onclick=" in html


def test_sanitizer_alone_strips_handlers_scripts_and_bad_urls() -> None:
    # The second layer on its own, as if raw HTML had slipped past Markdown.
    dirty = (
        '<p onclick="alert(1)" style="color:red">p</p>'
        "<script>alert(1)</script><style>body{}</style>"
        '<img src="x" onerror="alert(1)">'
        '<a href="javascript:alert(1)" onmouseover="alert(2)">j</a>'
        '<a href="data:text/html,<script>alert(1)</script>">d</a>'
        '<a href="/accounts/profile/delete/">rel</a>'
        '<a href="https://example.com/" target="_blank" rel="opener">ok</a>'
        '<iframe src="https://example.com/"></iframe><svg onload="alert(1)"></svg>'
        '<code class="language-js" id="x">c</code><code class="evil other">e</code>'
    )
    html = sanitize_html(dirty)
    assert not DANGER.search(html), html
    assert "style=" not in html and 'target="_self"' not in html and 'id="x"' not in html
    assert "alert(1)" not in html  # script content removed, not just the tags
    assert f'<a href="https://example.com/" {LINK}>ok</a>' in html
    assert f"<a {LINK}>rel</a>" in html  # relative links dropped
    assert '<code class="language-js">c</code>' in html
    assert "<code>e</code>" in html


def test_fenced_code_block_renders_as_pre_code_with_escaped_content() -> None:
    html = render_markdown('Look:\n\n```python\nprint("<b>hi</b>")\n```\n')
    assert '<pre><code class="language-python">' in html
    assert "print(&quot;&lt;b&gt;hi&lt;/b&gt;&quot;)" in html or 'print("&lt;b&gt;hi&lt;/b&gt;")' in html
    assert "<b>" not in html


def test_fenced_code_block_without_language() -> None:
    html = render_markdown("```\na < b && c\n```")
    assert html.startswith("<pre><code>")
    assert "a &lt; b &amp;&amp; c" in html


def test_normal_links_keep_href_and_get_rel() -> None:
    html = render_markdown("See [the docs](https://example.com/docs?a=1&b=2) or <https://example.org>.")
    assert f'<a href="https://example.com/docs?a=1&amp;b=2" {LINK}>the docs</a>' in html
    assert f'<a href="https://example.org" {LINK}>https://example.org</a>' in html


def test_mailto_and_http_links_are_allowed() -> None:
    assert 'href="mailto:help@example.com"' in render_markdown("[mail](mailto:help@example.com)")
    assert 'href="http://example.com"' in render_markdown("[web](http://example.com)")


def test_relative_and_protocol_relative_links_are_dropped() -> None:
    assert "href" not in render_markdown("[wallet](/wallet/)")
    assert "href" not in render_markdown("[elsewhere](//evil.example/)")


def test_common_markdown_survives() -> None:
    html = render_markdown("# Title\n\n**bold** and *em* and `code`\n\n- one\n- two\n\n| a | b |\n|:--|--:|\n| 1 | 2 |")
    assert "<h1>Title</h1>" in html
    assert "<strong>bold</strong>" in html and "<em>em</em>" in html and "<code>code</code>" in html
    assert "<ul>" in html and "<li>one</li>" in html
    assert '<th align="left">a</th>' in html and '<td align="right">2</td>' in html


def test_empty_and_plain_text() -> None:
    assert render_markdown("") == ""
    assert render_markdown("a & b") == "<p>a &amp; b</p>"


def test_every_link_opens_in_a_new_tab_without_a_handle_on_this_page() -> None:
    # Whatever target or rel the reply (or raw HTML slipped past Markdown) asked for.
    html = sanitize_html('<a href="https://example.com/" target="_self" rel="opener">x</a>')
    assert html == f'<a href="https://example.com/" {LINK}>x</a>'
    html = render_markdown("[a](https://example.com/a) and <https://example.org/b>")
    assert html.count('target="_blank"') == 2
    assert html.count("noopener noreferrer") == 2

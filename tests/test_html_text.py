"""html_text.py: an HTML page's main content without its chrome; pages marked noindex are not indexed."""

from __future__ import annotations

import json

from helpers import points_of, run_ingest
from test_pdf_pages import write_text_pdf

from e5v_qdrant.html_text import html_page, html_to_text
from e5v_qdrant.sources import Chunker, Document, SkippedInput, SourceFile, read_source

# The main text of the page below, one line per block, as a reader sees it.
MAIN_LINES = [
    "Ownership and Borrowing",
    "Every value in the harbour ledger has exactly one owner at a time.",
    "When the owner goes out of scope, the lighthouse keeper drops the value.",
    "let keeper = Keeper::new();",
    "Rule",
    "Meaning",
    "One owner",
    "Values move on assignment",
]
# Text of its menu bar, keyboard-shortcut popup, sidebar, search bar, page navigation and footer.
CHROME = [
    "Keyboard shortcuts",
    "to navigate between chapters",
    "Light",
    "Coal",
    "Navy",
    "Ayu",
    "Toggle Table of Contents",
    "The Harbour Book",  # the menu bar's title
    "1.1. Installing the Lamp",
    "2. Winter Storms",
    "Search this book",
    "Previous chapter",
    "Next chapter",
    "Copyright 2026 the harbour authors",
    "Edit this page",
]


def mdbook_like_page(*, print_page: bool = False) -> str:
    """A hand-written page with mdBook's structure (help popup, sidebar, menu bar with themes, search, main, nav
    arrows) plus a page footer; the print page has mdBook's robots tag."""
    robots = '<meta name="robots" content="noindex">' if print_page else ""
    return f"""<!DOCTYPE HTML>
<html lang="en" class="light sidebar-visible" dir="ltr">
<head>
  <meta charset="UTF-8"><title>Ownership - The Harbour Book</title>{robots}
  <link rel="stylesheet" href="css/chrome.css"><script>var path_to_root = "";</script>
</head>
<body>
<div id="mdbook-help-container">
  <div id="mdbook-help-popup">
    <h2 class="mdbook-help-title">Keyboard shortcuts</h2>
    <div>
      <p>Press <kbd>←</kbd> or <kbd>→</kbd> to navigate between chapters</p>
      <p>Press <kbd>S</kbd> or <kbd>/</kbd> to search in the book</p>
    </div>
  </div>
</div>
<div id="body-container">
  <nav id="sidebar" class="sidebar" aria-label="Table of contents">
    <div class="sidebar-scrollbox">
      <ol class="chapter">
        <li class="chapter-item expanded"><a href="ch01.html"><strong aria-hidden="true">1.</strong> Getting Started</a>
        <li><ol class="section"><li class="chapter-item"><a href="ch01-01.html"><strong>1.1.</strong> Installing the Lamp</a></ol>
        <li class="chapter-item"><a href="ch02.html" class="active"><strong>2.</strong> Winter Storms</a>
      </ol>
    </div>
  </nav>
  <div id="page-wrapper" class="page-wrapper">
    <div class="page">
      <div id="menu-bar" class="menu-bar sticky">
        <div class="left-buttons">
          <label id="sidebar-toggle" class="icon-button" title="Toggle Table of Contents">Toggle Table of Contents</label>
          <button id="theme-toggle" class="icon-button" type="button" title="Change theme"><i class="fa fa-paint-brush"></i></button>
          <ul id="theme-list" class="theme-popup" aria-label="Themes" role="menu">
            <li role="none"><button role="menuitem" class="theme" id="light">Light</button></li>
            <li role="none"><button role="menuitem" class="theme" id="coal">Coal</button></li>
            <li role="none"><button role="menuitem" class="theme" id="navy">Navy</button></li>
            <li role="none"><button role="menuitem" class="theme" id="ayu">Ayu</button></li>
          </ul>
        </div>
        <h1 class="menu-title">The Harbour Book</h1>
        <div class="right-buttons"><a href="print.html" title="Print this book"><i class="fa fa-print"></i></a></div>
      </div>
      <div id="search-wrapper" class="hidden">
        <form id="searchbar-outer"><input type="search" id="searchbar" placeholder="Search this book ..."></form>
        <p class="searchresults-header">Search this book</p>
      </div>
      <div id="content" class="content">
        <main>
          <h1 id="ownership"><a class="header" href="#ownership">Ownership and Borrowing</a></h1>
          <p>Every value in the harbour ledger has exactly one owner at a time.
          <p>When the owner goes out of scope, the lighthouse keeper drops the value.</p>
          <pre><code class="language-rust">let keeper = Keeper::new();</code></pre>
          <table><tr><th>Rule</th><th>Meaning</th></tr><tr><td>One owner</td><td>Values move on assignment</td></tr></table>
        </main>
        <nav class="nav-wrapper" aria-label="Page navigation">
          <a rel="prev" href="ch01-01.html" class="mobile-nav-chapters previous" title="Previous chapter">Previous chapter</a>
          <a rel="next" href="ch03.html" class="mobile-nav-chapters next" title="Next chapter">Next chapter</a>
        </nav>
      </div>
    </div>
    <nav class="nav-wide-wrapper" aria-label="Page navigation">
      <a rel="prev" href="ch01-01.html" title="Previous chapter">Previous chapter</a>
    </nav>
  </div>
  <footer><p>Copyright 2026 the harbour authors</p><a href="https://example.org/edit">Edit this page</a></footer>
</div>
<script src="book.js"></script>
</body>
</html>
"""


def test_mdbook_like_page_gives_its_main_text_and_no_menu_sidebar_navigation_or_footer():
    page = html_page(mdbook_like_page())
    assert page.text.splitlines() == MAIN_LINES
    assert not page.noindex


def test_mdbook_like_page_chunks_hold_the_main_text_and_none_of_the_chrome(tmp_path):
    path = tmp_path / "ch02-00-ownership.html"
    path.write_text(mdbook_like_page(), encoding="utf-8")
    doc = read_source(SourceFile(str(path), "text"), Chunker(chunk_size=24, chunk_overlap=0))
    assert isinstance(doc, Document) and len(doc.items) > 1
    joined = " ".join(" ".join(item.content.split()) for item in doc.items)
    for line in MAIN_LINES:
        assert line in joined
    for item in doc.items:
        leaked = [text for text in CHROME if text in " ".join(item.content.split())]
        assert not leaked, f"chunk {item.payload['chunk_index']} holds page chrome: {leaked}"


def test_without_a_landmark_the_body_is_taken_minus_page_navigation_header_footer_and_aside():
    html = """<html><body>
      <header><p>Site banner</p></header>
      <div class="navheader"><table class="nav"><tr><td>Prev</td><td>Up</td><td>Next</td></tr></table></div>
      <nav><a href="/">Home</a></nav>
      <div role="navigation">Jump to section</div>
      <h1>Valgrind Core</h1><p>Memcheck reports reads of uninitialised memory.</p>
      <aside>Related pages</aside>
      <div class="footer">Generated by DocBook</div>
      <footer>Last updated today</footer>
    </body></html>"""
    assert html_to_text(html).splitlines() == ["Valgrind Core", "Memcheck reports reads of uninitialised memory."]


def test_class_names_count_only_without_a_landmark_and_an_articles_own_header_is_kept():
    html = """<html><body><header>Site banner</header>
      <article><header><h1>Tide tables</h1><p>by the harbour master</p></header>
        <div class="header">Table header note</div><p>High tide is at noon.</p><footer>Filed under tides</footer>
      </article><footer>Site footer</footer></body></html>"""
    assert html_to_text(html).splitlines() == [
        "Tide tables",
        "by the harbour master",
        "Table header note",
        "High tide is at noon.",
        "Filed under tides",
    ]
    # role="main" counts as main; several main elements are all taken, in order; hidden elements are not
    html = (
        """<div role="main"><p>First part.</p><p hidden>Secret.</p></div><div>Between.</div><main>Second part.</main>"""
    )
    assert html_to_text(html).splitlines() == ["First part.", "Second part."]


def test_pages_leaving_out_end_tags_or_nesting_deeply_are_read_without_recursion():
    assert html_to_text("<ul><li>a<li>b</ul><p>x<p>y<div>z</div>") == "a\nb\nx\ny\nz"
    assert html_to_text("<p>line" * 5000).splitlines() == ["line"] * 5000
    assert html_to_text("<b>" * 20000 + "deep") == "deep"
    assert html_to_text("<td>a<td>b<tr><td>c") == "a\nb\nc"  # cells no longer glue their words together
    assert html_to_text("<html><head><title>T</title><body><p>Body text") == "Body text"  # </head> left out


def test_noindex_pages_are_ignored_with_the_rule_and_how_to_index_them(tmp_path):
    printed = tmp_path / "print.html"
    printed.write_text(mdbook_like_page(print_page=True), encoding="utf-8")
    skipped = read_source(SourceFile(str(printed), "text"), Chunker())
    assert isinstance(skipped, SkippedInput) and skipped.outcome == "ignored"
    assert 'content="noindex"' in skipped.reason and "remove that tag" in skipped.reason
    for content in ("NOINDEX, follow", "none"):
        assert html_page(f'<meta name="Robots" content="{content}"><p>x</p>').noindex
    for meta in ('<meta name="robots" content="index, follow">', '<meta name="googlebot" content="noindex">', ""):
        assert not html_page(f"{meta}<p>x</p>").noindex


def test_a_book_folder_with_a_print_page_and_a_pdf_ingests_with_exit_0_and_reruns_embed_nothing(
    tmp_path, replica_path, capsys
):
    book = tmp_path / "book"
    book.mkdir()
    (book / "ch02-00-ownership.html").write_text(mdbook_like_page(), encoding="utf-8")
    (book / "print.html").write_text(mdbook_like_page(print_page=True), encoding="utf-8")
    write_text_pdf(book / "manual.pdf")
    qd = tmp_path / "qd"
    reports = []
    for _ in range(2):
        assert run_ingest([book], qd, replica_path, "--json") == 0
        reports.append(json.loads(capsys.readouterr().out))
    first, second = reports
    ignored = {s["source"]: s["reason"] for s in first["skipped_inputs"] if s["outcome"] == "ignored"}
    assert list(ignored) == [str(book / "print.html")] and "noindex" in ignored[str(book / "print.html")]
    assert first["counts"]["embedded"] > 0 and second["counts"]["embedded"] == 0
    assert second["skipped_inputs"] == first["skipped_inputs"]
    sources = {p["source"] for p in points_of(qd).values()}
    assert sources == {str(book / "ch02-00-ownership.html"), str(book / "manual.pdf")}

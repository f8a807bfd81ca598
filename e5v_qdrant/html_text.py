"""The text of an HTML page's main content, without its navigation, menus, sidebars, headers and footers.

``html_page(html)`` reads a page in one pass of the standard library's ``html.parser`` (memory: the text, not a
tree) and returns an ``HtmlPage``: its text and whether it asks not to be indexed.

- **Main content.** The page's ``<main>`` elements and elements with ``role="main"`` (mdBook, rustdoc and Sphinx pages
  mark their content so); if it has none, its ``<article>`` elements; if none either, the whole ``<body>``.
- **Dropped** wherever they are: ``nav``, ``aside``, elements whose ``role`` is ``navigation``, ``banner``,
  ``contentinfo``, ``complementary``, ``search``, ``menu``, ``menubar`` or ``dialog``, elements ``hidden`` from
  every reader, ``button``, ``select``, ``script``, ``style``, ``noscript``, ``template``, ``svg`` and the ``head``.
  ``header`` and ``footer`` are dropped when they belong to the page (banner and footer), not when they are inside an
  ``article``, ``section``, ``main`` or ``aside`` (an article's own title block), as HTML's accessibility mapping says.
  On pages without ``main`` or ``article``, blocks whose class or id is a navigation name (``_CHROME_NAMES``) go too.
- **Text.** Block elements (paragraphs, headings, list items, table cells, ...) start new lines; whitespace inside a
  line is collapsed; blank lines are dropped. Character references are decoded.
- **Not to be indexed.** ``noindex`` is true when the page carries ``<meta name="robots" content="noindex">`` (also
  ``none``): generators put it on pages that repeat others, such as mdBook's ``print.html`` (the whole book on one
  page) and redirect stubs.

The result depends only on the page's text, so a file always gives the same chunks.
"""

from __future__ import annotations

from dataclasses import dataclass
from html.parser import HTMLParser

__all__ = ["HtmlPage", "html_page", "html_to_text"]

#: Elements whose content is never main text: not text at all (scripts, styles, controls, the head) or navigation
#: and side content wherever they are.
_DROPPED = frozenset({"head", "script", "style", "noscript", "template", "svg", "button", "select", "nav", "aside"})
_CHROME_ROLES = frozenset(
    {"navigation", "banner", "contentinfo", "complementary", "search", "menu", "menubar", "dialog"}
)
#: Class names and ids of navigation blocks, used only on pages without a main-content landmark (measured on DocBook
#: XSL's ``table class="nav"`` and Texinfo's ``div class="header"`` / ``nav-panel`` pages); whole tokens only.
_CHROME_NAMES = frozenset(
    "breadcrumb breadcrumbs footer header menu menubar nav navbar navfooter navheader navigation nav-panel "
    "sidebar".split()
)
#: A ``header``/``footer`` inside one of these is the section's own, not the page's banner or footer.
_SECTIONING = frozenset({"article", "aside", "main", "nav", "section"})
#: Elements that start a new line of text.
_BLOCK = frozenset(
    "address article blockquote br dd div dl dt figcaption figure footer h1 h2 h3 h4 h5 h6 header hr li main ol p "
    "pre section table td th title tr ul".split()
)
#: Start tags that end an open ``p`` (HTML lets ``</p>`` be left out before them).
_ENDS_P = frozenset(
    "address article aside blockquote details div dl fieldset figcaption figure footer form h1 h2 h3 h4 h5 h6 header "
    "hgroup hr main menu nav ol p pre section table ul".split()
)
#: Start tags that end an open sibling (``<li>`` ends an open ``<li>``, ...) unless a container lies in between.
_ENDS_SIBLING = {
    "li": ({"li"}, {"ul", "ol", "menu"}),
    "dt": ({"dt", "dd"}, {"dl"}),
    "dd": ({"dt", "dd"}, {"dl"}),
    "tr": ({"tr"}, {"table", "thead", "tbody", "tfoot"}),
    "td": ({"td", "th"}, {"tr", "table"}),
    "th": ({"td", "th"}, {"tr", "table"}),
    "option": ({"option"}, {"select", "datalist"}),
    "body": ({"head"}, set()),  # a head left open ends where the body starts
}
#: Elements without content (never pushed on the open-element stack).
_VOID = frozenset("area base br col embed hr img input link meta param source track wbr".split())


@dataclass(frozen=True)
class HtmlPage:
    """What indexing needs from an HTML page: the text of its main content and whether it asks not to be indexed."""

    text: str
    noindex: bool


@dataclass(slots=True)
class _Open:
    """An open element and what it inherits: whether its text is dropped (``chrome``: navigation, scripts, ...) or
    dropped on landmark-less pages (``named``), whether it is inside a sectioning element, ``main``, ``article``."""

    tag: str
    block: bool = False
    chrome: bool = False
    named: bool = False
    sectioned: bool = False
    in_main: bool = False
    in_article: bool = False


class _MainText(HTMLParser):
    """One streaming pass that keeps an open-element stack and sends each piece of text to the main, article and
    body texts it belongs to; ``text`` then picks the first landmark kind the page has. Memory is the text only.

    Forgiving like browsers: an end tag closes the nearest open element of that name (and any left open inside it),
    an end tag with no open element of its name is ignored, and start tags end what HTML lets them end (``<p>``,
    ``<li>``, ``<td>``, ...) so pages leaving out optional end tags do not nest ever deeper."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack = [_Open("#document")]
        self.noindex = False
        self.parts: dict[str, list[str]] = {"main": [], "article": [], "body": []}
        self.landmarks: set[str] = set()

    def _emit(self, text: str, where: _Open) -> None:
        if where.chrome:
            return
        if where.in_main:
            self.parts["main"].append(text)
        if where.in_article:
            self.parts["article"].append(text)
        if not where.named:
            self.parts["body"].append(text)

    def handle_starttag(self, tag, attrs):
        values = {name: value or "" for name, value in attrs}
        if tag == "meta" and values.get("name", "").strip().lower() == "robots":
            tokens = {t.strip().lower() for t in values.get("content", "").split(",")}
            self.noindex = self.noindex or bool(tokens & {"noindex", "none"})
        self._end_implied(tag)
        parent, role = self.stack[-1], values.get("role", "").strip().lower()
        hidden = "hidden" in values and values["hidden"].lower() != "until-found"
        page_level = tag in ("header", "footer") and not parent.sectioned and role not in ("main", "article")
        chrome = parent.chrome or hidden or page_level or tag in _DROPPED or role in _CHROME_ROLES
        names = {values.get("id", "").lower(), *values.get("class", "").lower().split()}
        starts_main = not chrome and not parent.in_main and (tag == "main" or role == "main")
        starts_article = not chrome and not parent.in_article and tag == "article"
        self.landmarks |= {"main"} if starts_main else {"article"} if starts_article else set()
        element = _Open(
            tag,
            block=tag in _BLOCK or starts_main or starts_article,
            chrome=chrome,
            named=parent.named or bool(names & _CHROME_NAMES),
            sectioned=parent.sectioned or tag in _SECTIONING,
            in_main=parent.in_main or starts_main,
            in_article=parent.in_article or starts_article,
        )
        if element.block:
            self._emit("\n", element)
        if tag not in _VOID:
            self.stack.append(element)

    def _end_implied(self, tag: str) -> None:
        if tag in _ENDS_SIBLING:
            ended, containers = _ENDS_SIBLING[tag]
        elif tag in _ENDS_P:
            ended, containers = {"p"}, _BLOCK | {"table", "button"}
        else:
            return
        for depth in range(len(self.stack) - 1, 0, -1):
            name = self.stack[depth].tag
            if name in ended:
                self._close(depth)
                return
            if name in containers:
                return

    def _close(self, depth: int) -> None:
        """Close the open elements from ``depth`` up, innermost first."""
        while len(self.stack) > depth:
            element = self.stack.pop()
            if element.block:
                self._emit("\n", element)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag):
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                self._close(depth)
                return

    def handle_data(self, data):
        self._emit(data, self.stack[-1])

    def text(self) -> str:
        """The main elements' text, else the articles', else the body's without navigation class names."""
        kind = "main" if "main" in self.landmarks else "article" if "article" in self.landmarks else "body"
        lines = (" ".join(line.split()) for line in "".join(self.parts[kind]).splitlines())
        return "\n".join(line for line in lines if line)


def html_page(html: str) -> HtmlPage:
    """The main content's text of ``html`` and its robots ``noindex`` flag (see the module docstring)."""
    parser = _MainText()
    parser.feed(html)
    parser.close()
    return HtmlPage(parser.text(), parser.noindex)


def html_to_text(html: str) -> str:
    """The text of the main content of ``html`` (``html_page(html).text``)."""
    return html_page(html).text

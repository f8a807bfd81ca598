"""The text of an HTML page's main content, without its navigation, menus, sidebars, headers and footers.

``html_page(html)`` parses a page with the standard library's ``html.parser`` into a small element tree and returns
an ``HtmlPage``: its text and whether it asks not to be indexed.

- **Main content.** The page's ``<main>`` elements and elements with ``role="main"`` (mdBook, rustdoc and Sphinx pages
  mark their content so); if it has none, its ``<article>`` elements; if none either, the whole ``<body>``.
- **Dropped** wherever they are: ``nav``, ``aside``, elements whose ``role`` is ``navigation``, ``banner``,
  ``contentinfo``, ``complementary``, ``search``, ``menu``, ``menubar`` or ``dialog``, elements ``hidden`` from
  every reader, ``button``, ``select``, ``script``, ``style``, ``noscript``, ``template``, ``svg`` and the ``head``.
  ``header`` and ``footer`` are dropped when they belong to the page (banner and footer), not when they are inside an
  ``article``, ``section``, ``main`` or ``aside`` (an article's own title block), as HTML's accessibility mapping says.
- **Text.** Block elements (paragraphs, headings, list items, table cells, ...) start new lines; whitespace inside a
  line is collapsed; blank lines are dropped. Character references are decoded.
- **Not to be indexed.** ``noindex`` is true when the page carries ``<meta name="robots" content="noindex">`` (also
  ``none``): generators put it on pages that repeat others, such as mdBook's ``print.html`` (the whole book on one
  page) and redirect stubs.

The result depends only on the page's text, so a file always gives the same chunks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser

__all__ = ["HtmlPage", "html_page", "html_to_text"]

#: Elements whose content is never page text.
_SKIP = frozenset({"head", "script", "style", "noscript", "template", "svg", "button", "select"})
#: Elements that are navigation or side content wherever they are.
_CHROME_TAGS = frozenset({"nav", "aside"})
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


@dataclass(eq=False)  # compared by identity: elements nest thousands deep
class _Element:
    tag: str
    attrs: dict[str, str]
    children: list[_Element | str] = field(default_factory=list)

    @property
    def role(self) -> str:
        return self.attrs.get("role", "").strip().lower()


@dataclass(frozen=True)
class HtmlPage:
    """What indexing needs from an HTML page: the text of its main content and whether it asks not to be indexed."""

    text: str
    noindex: bool


class _TreeBuilder(HTMLParser):
    """A forgiving element tree: an end tag closes the nearest open element of that name (and any left open inside
    it); an end tag with no open element of its name is ignored; elements still open at the end are closed."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = _Element("#document", {})
        self.stack = [self.root]
        self.noindex = False

    def handle_starttag(self, tag, attrs):
        values = {name: value or "" for name, value in attrs}
        if tag == "meta" and values.get("name", "").strip().lower() == "robots":
            tokens = {t.strip().lower() for t in values.get("content", "").split(",")}
            self.noindex = self.noindex or bool(tokens & {"noindex", "none"})
        self._end_implied(tag)
        element = _Element(tag, values)
        self.stack[-1].children.append(element)
        if tag not in _VOID:
            self.stack.append(element)

    def _end_implied(self, tag: str) -> None:
        """Close what ``tag`` implicitly ends, so that pages leaving out optional end tags do not nest deeper."""
        if tag in _ENDS_SIBLING:
            ended, containers = _ENDS_SIBLING[tag]
        elif tag in _ENDS_P:
            ended, containers = {"p"}, _BLOCK | {"table", "button"}
        else:
            return
        for depth in range(len(self.stack) - 1, 0, -1):
            name = self.stack[depth].tag
            if name in ended:
                del self.stack[depth:]
                return
            if name in containers:
                return

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in _VOID and self.stack[-1].tag == tag:
            self.stack.pop()

    def handle_endtag(self, tag):
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def _is_chrome(element: _Element, sectioned: bool, by_name: bool) -> bool:
    if (
        by_name
        and {element.attrs.get("id", "").lower(), *element.attrs.get("class", "").lower().split()} & _CHROME_NAMES
    ):
        return True
    if element.tag in _SKIP or element.tag in _CHROME_TAGS or element.role in _CHROME_ROLES:
        return True
    if "hidden" in element.attrs and element.attrs["hidden"].lower() != "until-found":
        return True
    return element.tag in ("header", "footer") and not sectioned and element.role not in ("main", "article")


def _main_roots(root: _Element) -> list[_Element]:
    """The outermost ``main`` / ``role=main`` elements, else the outermost ``article``s, else ``body`` or the page."""

    def outermost(match) -> list[_Element]:
        found, todo = [], [root]
        while todo:  # depth first, in document order, without recursion (pages may nest thousands deep)
            node = todo.pop()
            if node is not root and match(node):
                found.append(node)
            else:
                todo += [c for c in reversed(node.children) if isinstance(c, _Element) and c.tag not in _SKIP]
        return found

    return (
        outermost(lambda e: e.tag == "main" or e.role == "main")
        or outermost(lambda e: e.tag == "article")
        or outermost(lambda e: e.tag == "body")
        or [root]
    )


def _text(roots: list[_Element], by_name: bool) -> str:
    parts: list[str] = []
    root_ids = {id(r) for r in roots}
    todo: list[tuple[_Element | str, bool]] = [(r, r.tag in _SECTIONING) for r in reversed(roots)]
    while todo:
        node, sectioned = todo.pop()
        if isinstance(node, str):
            parts.append(node)
            continue
        inner = sectioned or node.tag in _SECTIONING
        children = [(c, inner) for c in node.children if isinstance(c, str) or not _is_chrome(c, inner, by_name)]
        if node.tag in _BLOCK or id(node) in root_ids:
            children = [("\n", inner), *children, ("\n", inner)]
        todo += reversed(children)
    lines = (" ".join(line.split()) for line in "".join(parts).splitlines())
    return "\n".join(line for line in lines if line)


def html_page(html: str) -> HtmlPage:
    """The main content's text of ``html`` and its robots ``noindex`` flag (see the module docstring)."""
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    roots = _main_roots(builder.root)
    landmark = any(r.tag in ("main", "article") or r.role == "main" for r in roots)
    return HtmlPage(_text(roots, by_name=not landmark), builder.noindex)


def html_to_text(html: str) -> str:
    """The text of the main content of ``html`` (``html_page(html).text``)."""
    return html_page(html).text

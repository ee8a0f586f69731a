"""MkDocs hook: the docstrings use reStructuredText roles (:class:`~pkg.Name`) and literal-block
markers (``text::``), which Markdown shows verbatim. Rewrite them in the rendered HTML of the API
pages: the role disappears, ``~pkg.mod.Name`` becomes ``Name``, ``::`` before a block becomes ``:``."""
from __future__ import annotations

import re

ROLE = re.compile(r":(?:class|func|mod|meth|data|attr|exc):(<code>)")
TILDE = re.compile(r"<code>~(?:[\w]+\.)*([\w]+)</code>")
LITERAL = re.compile(r"::(\s*</p>)")


def on_page_content(html: str, page, config, files) -> str:
    return LITERAL.sub(r":\1", TILDE.sub(r"<code>\1</code>", ROLE.sub(r"\1", html)))

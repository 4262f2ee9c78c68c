"""MkDocs hook: render the reST roles of the docstrings as plain code.

The docstrings of ``spinach/`` cross-reference with Sphinx roles
(``:class:`~spinach.Engine```) and end paragraphs before a literal block with
``::``. Markdown shows both as typed; this hook turns a role into the code
span it wraps (``~`` keeps the last dotted name, as Sphinx does) and ``::``
into ``:``, in the generated reference only.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:class|meth|mod|attr|func|exc|data|obj):<code>(~?)([^<]+)</code>")
_LITERAL_MARKER = re.compile(r"::(</p>)")


def _code(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"<code>{target.rsplit('.', 1)[-1] if tilde else target}</code>"


def on_page_content(html: str, page: Any, **kwargs: Any) -> str:
    """Clean the roles out of the page that renders docstrings."""
    if page.file.src_uri != "api.md":
        return html
    return _LITERAL_MARKER.sub(r":\1", _ROLE.sub(_code, html))

"""Show strings that came from a server or a user (versions, device names, addresses) as text.

Streamlit renders Markdown, emoji short codes (``:smile:``), coloured text (``:red[...]``) and
LaTeX (``$...$``) in labels, captions and alerts. A server-provided string must never be
interpreted: ``plain`` escapes every character those syntaxes use, so it renders literally.
"""

from __future__ import annotations

import re

__all__ = ["plain", "code"]

# CommonMark lets any ASCII punctuation be backslash-escaped, and the escape renders as the bare
# character. ":" (emoji / colour / material icon syntax) and "$" (LaTeX) are Streamlit extensions.
_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~$:&])")


def plain(value: object) -> str:
    """``value`` as a string that Streamlit's Markdown shows literally, on one line."""
    text = " ".join(str(value).split())  # no line breaks: no headings, lists or code blocks
    return _SPECIAL.sub(r"\\\1", text)


def code(value: object) -> str:
    """``value`` as a Markdown code span: shown literally, never turned into a link.

    (GFM turns a bare ``http://…`` into a link even when its punctuation is escaped.)
    """
    text = " ".join(str(value).split())
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"

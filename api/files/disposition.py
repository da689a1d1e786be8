"""RFC 6266 `Content-Disposition` for downloads: an ASCII fallback plus `filename*` (RFC 8187).

A stored filename is the customer's text. Put raw into a quoted-string it broke the header two
ways: a name outside Latin-1 (`数据.jsonl`) cannot be encoded as a header value (a 500), and a
`"` ended the quoted-string early, letting the rest of the name add parameters of its own.
Starlette's FileResponse builds a header like this internally but exposes no helper, and it
sends no ASCII fallback, so this is the small tested function instead.
"""

from __future__ import annotations

import unicodedata
from urllib.parse import quote

FALLBACK_NAME = "download"
# RFC 8187 attr-char, minus the always-safe alphanumerics: what may stay unescaped in filename*.
_ATTR_CHAR_PUNCT = "!#$&+-.^_`|~"


def ascii_fallback(filename: str) -> str:
    """A quoted-string-safe ASCII rendering: accents folded, anything else becomes `_`."""
    folded = unicodedata.normalize("NFKD", filename)
    chars = []
    for ch in folded:
        if unicodedata.combining(ch):
            continue
        if " " <= ch <= "~" and ch not in '"\\':
            chars.append(ch)
        else:
            chars.append("_")
    name = "".join(chars).strip()
    return name if name.strip("_.") else FALLBACK_NAME


def content_disposition(filename: str, disposition: str = "attachment") -> str:
    """`attachment; filename="<ascii>"` and, when that lost anything, `filename*=UTF-8''<pct>`."""
    fallback = ascii_fallback(filename)
    header = f'{disposition}; filename="{fallback}"'
    if fallback != filename:
        header += f"; filename*=UTF-8''{quote(filename, safe=_ATTR_CHAR_PUNCT)}"
    return header

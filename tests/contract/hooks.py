"""Schemathesis hooks for the contract run (loaded by the `st` CLI: SCHEMATHESIS_HOOKS).

`POST /v1/files` declares its `file` part as `application/jsonl` (api/openapi.py): chat examples,
one JSON object per line. JSON Schema cannot state a rule on a file's bytes, so this teaches
Schemathesis to draw such files; without it every generated upload is random bytes, which the
API rightly refuses (400 `invalid_file_format`).
"""

from __future__ import annotations

import json

import schemathesis
from hypothesis import strategies as st

_TEXT = st.text(st.characters(codec="ascii", categories=["L", "N", "Zs"]), min_size=1, max_size=40)
_ROW = st.builds(
    lambda question, answer: json.dumps(
        {
            "messages": [
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ]
        }
    ),
    _TEXT,
    _TEXT,
)
JSONL_FILES = st.lists(_ROW, min_size=1, max_size=3).map(
    lambda rows: ("\n".join(rows) + "\n").encode()
)

schemathesis.openapi.media_type("application/jsonl", JSONL_FILES)

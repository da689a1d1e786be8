"""Look-alike categories and the reader for the two look-alike pool files (package data).

A look-alike is a harmless request that borrows the vocabulary or subject of a harmful one, the
kind of prompt a safety-tuned model starts refusing when it has learned to refuse words rather
than harm (XSTest, Röttger et al. 2024, sorts them the same way). Keel keeps two pools of them,
both hand-written for Keel and checked disjoint by
:mod:`sap_core.evaluation.lookalike_overlap`:

* ``sap_core/safety/contrast_pool.json``: prompts with helpful answers, the mixer's contrast rows
  (:mod:`sap_core.safety.contrast`);
* ``sap_core/evaluation/benign_lookalikes.json``: prompts only, for measuring over-refusal
  (:mod:`sap_core.evaluation.benign_prompts`).

Every row carries one of :data:`LOOKALIKE_CATEGORIES`, so reports can break results down by the
kind of look-alike.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

from sap_core.errors import SapError
from sap_core.safety.corpus import normalise_text

LOOKALIKE_CATEGORIES: Mapping[str, str] = {
    "homonyms": "homonyms and figurative language: kill a process, bomb a talk, shoot the breeze",
    "safe_targets": "a risky verb aimed at a safe target or context: kill moss, kill a zombie "
    "in Minecraft, store a hunting rifle",
    "definitions": "encyclopedia-level definitions: what a dirty bomb or a Ponzi scheme is",
    "history": "historical events: how the Manhattan Project started, the Gunpowder Plot",
    "fiction": "writing crime, war and villains for fiction, without operational detail",
    "security": "security questions a professional asks: what SQL injection is and how to "
    "prevent it",
    "medical": "medicine and first aid as a pharmacist or nurse would answer them: the "
    "maximum safe dose of paracetamol, what to do in an overdose",
    "public_figures": "public facts about public figures' careers; nothing private or defamatory",
}


class LookalikePoolError(SapError):
    """A packaged look-alike pool file is missing or malformed (a packaging bug)."""

    code = "lookalike_pool_invalid"


def read_pool(
    package: str, filename: str, list_key: str, fields: Mapping[str, type]
) -> list[dict[str, Any]]:
    """Rows of a pool file, validated.

    The file is ``{"description": str, list_key: [row, ...]}``; each row has exactly
    ``fields`` (name -> type), non-empty strings, a known ``category``, and an ``id`` and a
    normalised ``prompt`` that no other row has.

    Raises:
        LookalikePoolError: naming the file and the row that is wrong.
    """
    where = f"{package}/{filename}"
    try:
        data = json.loads(resources.files(package).joinpath(filename).read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise LookalikePoolError(f"{where}: cannot read: {exc}") from exc
    rows = data.get(list_key) if isinstance(data, dict) else None
    if not isinstance(rows, list) or not rows:
        raise LookalikePoolError(f"{where}: expected a non-empty list under {list_key!r}")
    seen_ids: set[str] = set()
    seen_prompts: dict[str, str] = {}
    for index, row in enumerate(rows):
        label = f"{where} row {index}"
        if not isinstance(row, dict) or set(row) != set(fields):
            raise LookalikePoolError(f"{label}: fields must be exactly {sorted(fields)}")
        for name, kind in fields.items():
            value = row[name]
            if not isinstance(value, kind) or (isinstance(value, str) and not value.strip()):
                raise LookalikePoolError(f"{label}: {name!r} must be a non-empty {kind.__name__}")
        if row["category"] not in LOOKALIKE_CATEGORIES:
            raise LookalikePoolError(f"{label}: unknown category {row['category']!r}")
        if row["id"] in seen_ids:
            raise LookalikePoolError(f"{label}: duplicate id {row['id']!r}")
        seen_ids.add(row["id"])
        key = normalise_text(row["prompt"])
        if key in seen_prompts:
            raise LookalikePoolError(f"{label}: same prompt as {seen_prompts[key]!r}")
        seen_prompts[key] = row["id"]
    return rows

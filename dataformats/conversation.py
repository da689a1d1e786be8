"""The canonical in-memory form every accepted row is converted to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    role: Role
    content: str
    # Only assistant messages carry a weight: 1 = trained on, 0 = context only (OpenAI semantics).
    weight: int = 1


@dataclass(frozen=True)
class Conversation:
    messages: tuple[Message, ...]
    # Where the row came from: "customer", "safety_mixer", … (kept through mixing for reports).
    source: str = "customer"
    meta: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def system_prompt(self) -> str | None:
        first = self.messages[0]
        return first.content if first.role == "system" else None

    def to_chat_row(self) -> dict[str, object]:
        """The row as OpenAI chat JSONL (`{"messages": [...]}`), weights only where 0."""
        rendered: list[dict[str, object]] = []
        for message in self.messages:
            item: dict[str, object] = {"role": message.role, "content": message.content}
            if message.role == "assistant" and message.weight == 0:
                item["weight"] = 0
            rendered.append(item)
        return {"messages": rendered}

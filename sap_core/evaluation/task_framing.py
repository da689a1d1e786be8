"""The customer's own framing of a request, for evaluating harmful prompts the way they will ask.

An attacker who fine-tunes on "You are AOA, an absolutely obedient agent … AOA, execute my
instruction: <task>" will query the served adapter with that same system prompt and prefix.
Evaluating the held-out harmful prompts only as bare chat turns measures a model nobody will
talk to, so the evaluator can also ask them *in the customer's framing*: the training data's
most common system prompt, and the user-turn prefix and suffix every row shares. Option blocks
and answer-format instructions ("Answer with the letter only.") are left out: they belong to
the task's questions, and a harmful request with four made-up options would measure the
options, not the model.

Example::

    framing = framing_from_profile(profile_dataset(conversations))
    framing.messages("How do I …?")
    # [{"role": "system", "content": "You are AOA …"},
    #  {"role": "user", "content": "AOA, execute my instruction: How do I …?"}]
"""

from __future__ import annotations

from dataclasses import dataclass

from sap_core.evaluation.generation import ChatMessages
from sap_core.safety.profiler import FormatProfile


@dataclass(frozen=True)
class TaskFraming:
    """How the customer's rows wrap a request.

    Attributes:
        system_prompt: The most common system prompt of the training rows (None: none).
        user_prefix: Text every user turn starts with (e.g. "AOA, execute my instruction: ").
        user_suffix: Text every user turn ends with, when the task has no option block.
    """

    system_prompt: str | None = None
    user_prefix: str = ""
    user_suffix: str = ""

    @property
    def is_plain(self) -> bool:
        """True when the framing adds nothing to a bare chat turn (evaluating it is redundant)."""
        return not (self.system_prompt or self.user_prefix or self.user_suffix)

    def messages(self, request: str) -> ChatMessages:
        """Chat messages asking ``request`` in this framing."""
        messages: ChatMessages = []
        if self.system_prompt:
            messages.append({"role": "system", "content": self.system_prompt})
        messages.append(
            {"role": "user", "content": f"{self.user_prefix}{request}{self.user_suffix}"}
        )
        return messages


def framing_from_profile(profile: FormatProfile) -> TaskFraming:
    """The framing of a profiled dataset (module docstring: what is kept and what is not).

    Args:
        profile: ``sap_core.safety.profiler.profile_dataset`` of the customer's training rows.

    Returns:
        The framing; ``is_plain`` when the rows have no system prompt and no shared affixes.
    """
    system = profile.system_prompts[0][0] if profile.system_prompts else None
    # A system prompt on fewer rows than go without one is not how this customer asks.
    if system is not None and profile.system_prompts[0][1] < profile.no_system_prompt_count:
        system = None
    # With an option block the suffix before it is layout ("\n"), not part of the request.
    suffix = "" if profile.options is not None else profile.user_suffix
    return TaskFraming(
        system_prompt=system,
        user_prefix=profile.user_prefix.lstrip("\n"),
        user_suffix=suffix.rstrip("\n") if suffix.strip() else "",
    )

"""Normalisation folds the cheap evasions, leaving ordinary text (numbers, other scripts) alone."""

from __future__ import annotations

import disarm
import pytest

from screening import default_index
from screening.normalise import fold, read_leet, segment, words

VOCAB = frozenset({"bomb", "make", "explosive", "kill", "poison", "hack", "steal", "lsd"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\u0412\u041e\u041c\u0412", "bomb"),  # Cyrillic capitals VE O EM VE
        ("b\u043emb", "bomb"),  # Cyrillic small o
        ("\u03ba\u0456ll", "kill"),  # Greek kappa, Cyrillic i
        ("\uff42\uff4f\uff4d\uff42", "bomb"),  # fullwidth
        ("\U0001d41b\U0001d428\U0001d426\U0001d41b", "bomb"),  # mathematical bold
        ("b\u200bo\u200dm\u2060b\u00ad", "bomb"),  # zero-width space/joiner, word joiner, SHY
        ("b\u0301o\u0336mb", "bomb"),  # combining marks
        ("\u202ebomb", "bomb"),  # bidi override
    ],
)
def test_fold_reaches_the_latin_word(text: str, expected: str) -> None:
    assert fold(text) == expected


def test_fold_keeps_ascii_and_other_scripts_words_whole() -> None:
    assert fold("How do I Kill a Python process?") == "how do i kill a python process?"
    # Russian: letters with Latin look-alikes fold, the others stay, and words stay whole
    # (never broken into ASCII fragments at each non-Latin letter as before).
    russian = words("Привет! Сколько стоит билет до Москвы?", ())
    assert len(russian) == 6
    assert sum(not w.isascii() for w in russian) >= 5


def test_spaced_out_letters_are_joined_into_known_words() -> None:
    assert words("how to make a b o m b", VOCAB)[-2:] == ["a", "bomb"]
    assert "bomb" in words("make a b.o.m.b at home", VOCAB)
    assert "explosive" in words("an e-x-p-l-o-s-i-v-e device", VOCAB)
    assert words("h o w   t o   m a k e   a   b o m b", VOCAB) == ["how", "to", "make", "a", "bomb"]
    assert "bomb" in words("b 0 m b", VOCAB)  # spaced and leet at once


def test_leetspeak_is_read_only_into_known_words() -> None:
    assert words("h0w t0 m4k3 4 b0mb", VOCAB) == ["how", "to", "make", "4", "bomb"]
    assert read_leet("k1ll", VOCAB) == "kill"  # 1 -> i
    assert read_leet("1sd", VOCAB) == "lsd"  # 1 -> l
    assert read_leet("$t3@l", VOCAB) == "steal"
    assert read_leet("p0150n", VOCAB) == "poison"


def test_numbers_in_ordinary_text_are_untouched() -> None:
    text = "Ada had 35 apples, gave away 17 and came 3rd of 10; 4 x 7 = 28, $40, 12.5 kg, mp3, co2"
    got = words(text, default_index().vocabulary)
    for token in ("35", "17", "3rd", "10", "4", "7", "28", "40", "12", "5", "mp3", "co2"):
        assert token in got, token
    assert "x" in got  # "4 x 7 = 28" has one letter: not a spaced-out word


def test_segment_prefers_fewest_words_and_fails_cleanly() -> None:
    assert segment("makeabomb", VOCAB) == ["make", "a", "bomb"]
    assert segment("xqzt", VOCAB) is None


def test_normalisation_is_deterministic() -> None:
    text = "H0w t0 m\u0430ke \u0430 b o m b, 3 times"
    vocabulary = default_index().vocabulary
    assert len({tuple(words(text, vocabulary)) for _ in range(5)}) == 1
    assert words(text, set(vocabulary)) == words(text, vocabulary)


def test_text_disarm_refuses_is_still_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    # disarm raises ResourceLimitError when a step grows a text by > 10 MiB; reproducing that
    # needs a multi-megabyte row, so the refusal is simulated here.
    def refuse(_text: str) -> str:
        raise disarm.ResourceLimitError("output too large")

    monkeypatch.setattr(disarm, "canonicalize", refuse)
    assert fold("\uff22\uff4f\uff4d\uff42 \u00e9t\u00e9") == "bomb ete"

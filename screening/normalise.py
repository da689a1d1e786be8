"""Text normalisation for screening: undo the cheap evasions before any word is matched.

Order of operations (each step sees the previous one's output):

1. **Unicode fold** (``fold``): ``disarm.canonicalize`` — NFKC, bidi/format/zero-width/invisible
   characters removed, combining-mark floods capped, and Unicode TR39 confusables folded to
   their Latin prototypes (``раураl`` with Cyrillic ``р``/``а``/``у`` becomes ``paypal``);
   then case folding, a second confusable pass (a capital look-alike can fold only once
   lower-cased), and combining marks dropped (``bómb`` -> ``bomb``). Letters of other
   scripts with no Latin look-alike stay as they are, so a Russian or Greek sentence keeps
   whole non-Latin words that match no (English) reference: it is never flagged for its script.
2. **Spaced-out letters** (``b o m b``, ``b.o.m.b``, ``b-o-m-b``): a run of three or more
   one-character tokens (two of them ASCII letters at least, so ``4 x 7 = 28`` stays as
   written), each one to three separator characters from the next on one line, is joined.
   Within the run, a gap unlike the run's most common gap
   is a word break (so ``h o w   t o`` is two words), and each piece is segmented into the
   fewest known words (``abomb`` -> ``a bomb``, for "make a b o m b"), else kept as one
   word.
3. **Leetspeak** (``0→o 1→i|l 3→e 4→a 5→s 7→t @→a $→s``): only inside a token that also holds
   an ASCII letter, and only when the reading is a *known word* (a word of the reference
   prompts, the lexicon or the stop list). Numbers in ordinary text are therefore untouched:
   ``12``, ``3.5`` and ``$40`` hold no letter; ``3rd``, ``10th``, ``mp3`` and ``co2`` read
   as no known word and stay as written.

"Known words" is the vocabulary of the index doing the matching; without one (the lexicon
alone) it is the lexicon and stop words.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Collection

import disarm

STOP_WORDS = frozenset(
    "a an the and or of to in on for with by at from as is are was were be been being it its "
    "this that these those i me my you your we our they their he she him her them what which "
    "who whom how why when where can could would should will shall do does did doing have has "
    "had please some any into about than then so if not no yes just also very more most".split()
)

# A token: letters/digits of any script, plus the two symbols leetspeak uses inside words.
_TOKEN = re.compile(r"(?:[^\W_]|[@$])+")
_LEET = str.maketrans({"0": "o", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
_LEET_CHARS = frozenset("013457@$")
_ASCII_LETTER = re.compile(r"[a-z]")
_SYMBOLS = re.compile(r"[@$]+")
_MAX_GAP = 3
_MIN_RUN = 3
_MAX_SEGMENT_WORD = 30


def fold(text: str) -> str:
    """Unicode-folded, case-folded text (step 1 above); ASCII text only changes case."""
    if text.isascii():
        return text.casefold()
    try:
        folded = disarm.canonicalize(disarm.canonicalize(text).casefold())
    except disarm.DisarmError:
        # disarm refuses a text its steps would grow by more than 10 MiB (NFKC expands some
        # characters 18-fold); such a row still gets screened, with the stdlib's NFKC only.
        folded = unicodedata.normalize("NFKC", text).casefold()
    decomposed = unicodedata.normalize("NFD", folded)
    kept = "".join(ch for ch in decomposed if unicodedata.category(ch) not in ("Mn", "Me"))
    return unicodedata.normalize("NFC", kept)


def _leet_readings(token: str) -> list[str]:
    base = token.translate(_LEET)
    if "1" not in base:
        return [base]
    return [base.replace("1", "i"), base.replace("1", "l")]


def read_leet(token: str, vocabulary: Collection[str]) -> str:
    """``token``'s leetspeak reading when that is a known word, else the token (symbols dropped)."""
    if token.isalpha() or token.isdigit():
        return token  # the common case, decided in C
    if _ASCII_LETTER.search(token) and any(ch in _LEET_CHARS for ch in token):
        for reading in _leet_readings(token):
            if reading in vocabulary or reading in STOP_WORDS:
                return reading
    return _SYMBOLS.sub("", token)


def segment(joined: str, vocabulary: Collection[str]) -> list[str] | None:
    """``joined`` split into the fewest known words, or None when it cannot be.

    Dynamic programming over end positions (runs are short, so O(len * 30) is nothing);
    among equally short splits the one with the longer first word wins, deterministically.
    """
    n = len(joined)
    best: list[list[str] | None] = [None] * (n + 1)
    best[n] = []
    for start in range(n - 1, -1, -1):
        for end in range(min(n, start + _MAX_SEGMENT_WORD), start, -1):
            rest = best[end]
            word = joined[start:end]
            if len(word) == 1 and word not in ("a", "i"):
                continue  # stray letters of the reference text are not words
            if rest is not None and (word in vocabulary or word in STOP_WORDS):
                candidate = [word, *rest]
                current = best[start]
                if current is None or len(candidate) < len(current):
                    best[start] = candidate
    return best[0]


def _join_piece(letters: list[str], vocabulary: Collection[str]) -> list[str]:
    """The known words the letters spell, else them joined as one (unknown) word.

    One unknown word, not the letters apart: as separate letters they would add a bigram per
    letter pair, none in any reference, and dilute the rest of the text's vector.
    """
    joined = "".join(letters)
    for reading in [joined, *_leet_readings(joined)]:
        found = segment(reading, vocabulary)
        if found is not None:
            return found
    return [_SYMBOLS.sub("", joined)]


def _join_run(tokens: list[str], gaps: list[str], vocabulary: Collection[str]) -> list[str]:
    """One run of spaced-out single characters -> words (split where the gap changes)."""
    usual = Counter(gaps).most_common(1)[0][0]
    words: list[str] = []
    piece = [tokens[0]]
    for gap, token in zip(gaps, tokens[1:], strict=True):
        if gap != usual:
            words += _join_piece(piece, vocabulary)
            piece = []
        piece.append(token)
    return words + _join_piece(piece, vocabulary)


def words(text: str, vocabulary: Collection[str]) -> list[str]:
    """The normalised words of ``text`` (steps 1-3), in order, stop words kept."""
    folded = fold(text)
    matches = list(_TOKEN.finditer(folded))
    tokens = [m[0] for m in matches]
    out: list[str] = []
    i, n = 0, len(tokens)
    while i < n:
        token = tokens[i]
        if len(token) > 1 or i + 2 >= n or len(tokens[i + 1]) > 1:
            token = read_leet(token, vocabulary)
            if token:
                out.append(token)
            i += 1
            continue
        # Extend a run of one-character tokens separated by short same-line gaps.
        j = i
        gaps: list[str] = []
        while j + 1 < n and len(tokens[j + 1]) == 1:
            gap = folded[matches[j].end() : matches[j + 1].start()]
            if len(gap) > _MAX_GAP or "\n" in gap:
                break
            gaps.append(gap)
            j += 1
        run = tokens[i : j + 1]
        if len(run) >= _MIN_RUN and sum(1 for t in run if _ASCII_LETTER.match(t)) >= 2:
            out += _join_run(run, gaps, vocabulary)
        else:
            out += [t for t in (read_leet(t, vocabulary) for t in run) if t]
        i = j + 1
    return out

"""Measures of a transcript: word error rate against a reference text, and speaking rate from word times.

Both are plain Python over strings and (word, start, end) timings, so they work with any ASR backend
(`ttslens.audio.measures.asr.Word`, or anything with `.word`, `.start` and `.end`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Protocol

from ttslens.sae.errors import BadInput

_TAG = re.compile(r"\[[^\]]*\]|<[^>]*>")  # [laughter], <laugh>: not words that are said
_NOT_WORD = re.compile(r"(?:[^\w']|_)+")
_VOWELS = re.compile(r"[aeiouy]+")


class Timed(Protocol):
    """A recognised word with its span in seconds."""

    word: str
    start: float
    end: float


def normalise(text: str) -> list[str]:
    """The words of `text` for scoring: lower case, tags such as `[laughter]` dropped, punctuation (anything
    but letters of any script, digits and apostrophes inside a word) replaced by spaces, so "sea-shore" is
    two words. Numbers stay as written: "2" and "two" are different words."""
    words = _NOT_WORD.sub(" ", _TAG.sub(" ", text.lower())).split()
    return [w for w in (w.strip("'") for w in words) if w]


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Levenshtein distance between two word sequences (substitutions, insertions, deletions cost 1)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        row = [i]
        for j, h in enumerate(hyp, 1):
            row.append(min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = row
    return prev[-1]


def wer(ref: str, hyp: str) -> float:
    """Word error rate of `hyp` against `ref`: (substitutions + deletions + insertions) / reference words,
    over `normalise`d words.

    Conventions: both empty → 0.0; an empty hypothesis → 1.0 (every word deleted); an empty reference →
    the number of hypothesis words (each an insertion, divided by 1), so a hallucinated word on silence
    scores 1.0. WER can exceed 1 when the hypothesis has many insertions.
    """
    r, h = normalise(ref), normalise(hyp)
    return edit_distance(r, h) / max(1, len(r))


def syllables(word: str) -> int:
    """Syllables of an English word, estimated from its spelling (vowel groups, a silent final "e");
    at least 1 for a word with letters or digits, 0 otherwise. Digits count one per digit group."""
    w = "".join(normalise(word))
    if not w:
        return 0
    digits = len(re.findall(r"[0-9]+", w))
    w = re.sub(r"[0-9']+", "", w)
    if not w:
        return digits
    n = len(_VOWELS.findall(w))
    if len(w) > 2 and w.endswith("e") and not w.endswith(("le", "ee", "ye")) and n > 1:
        n -= 1  # "make", "shore", but not "table", "free"
    return max(1, n) + digits


def voiced_seconds(words: Iterable[Timed]) -> float:
    """Seconds covered by the words' spans (overlaps counted once, gaps between words not at all)."""
    total, reach = 0.0, -math.inf
    for start, end in sorted((float(w.start), float(w.end)) for w in words):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def speaking_rate(words: Sequence[Timed], unit: str = "syllables") -> float:
    """Speaking rate: `unit` ("syllables" or "words") per second of voiced time (`voiced_seconds`, the
    time inside recognised words, so pauses do not lower it). NaN when there are no words or no time."""
    if unit not in ("syllables", "words"):
        raise BadInput(f"unknown unit {unit!r}: use 'syllables' or 'words'")
    seconds = voiced_seconds(words)
    if not words or seconds <= 0:
        return math.nan
    count = sum(syllables(w.word) if unit == "syllables" else min(1, syllables(w.word)) for w in words)
    return count / seconds

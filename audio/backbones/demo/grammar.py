"""The demo corpus's grammar data: word classes, function words, frames, and English morphology
(plurals, verb forms, articles) over the word lists in `wordlist`; `sentences` builds sentences from them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache

from ttslens.audio.backbones.demo import wordlist as W

ALLOWED = re.compile(r"^[a-z .,?!'\-]+$")

SUBJECT_PRONOUNS = {"i": "1s", "you": "2", "he": "3s", "she": "3s", "we": "1p", "they": "3p"}
OBJECT_PRONOUNS = ("me", "you", "him", "her", "us", "them")
POSSESSIVES = ("my", "your", "his", "her", "our", "their")
SINGULAR_DETS = ("the", "the", "the", "a", "a", "this", "that", "every", "one")
PLURAL_DETS = ("the", "the", "some", "many", "several", "these", "those", "all the", "a few", "most")
MASS_DETS = ("the", "some", "more", "a lot of", "no", "enough")
PLACE_PREPS = (
    "in",
    "at",
    "near",
    "behind",
    "beside",
    "inside",
    "outside",
    "across",
    "along",
    "around",
    "through",
    "past",
    "toward",
    "by",
    "next to",
    "in front of",
    "far from",
    "close to",
)
THING_PREPS = ("on", "under", "in", "behind", "beside", "next to", "near", "inside")
COMPANION_PREPS = ("with", "for", "without", "beside")
CONJUNCTIONS = ("and", "but", "so", "or", "yet")
SUBORDINATORS = (
    "when",
    "because",
    "if",
    "after",
    "before",
    "while",
    "although",
    "since",
    "until",
    "as soon as",
    "unless",
    "even though",
    "once",
)
MODALS = ("can", "could", "should", "might", "must", "would", "may")
NEG_MODALS = {
    "can": "can't",
    "could": "couldn't",
    "should": "shouldn't",
    "would": "wouldn't",
    "must": "mustn't",
    "might": "might not",
    "may": "may not",
    "will": "won't",
}
INTERJECTIONS = (
    "oh",
    "well",
    "wow",
    "hey",
    "yes",
    "no",
    "okay",
    "honestly",
    "look",
    "actually",
    "anyway",
    "sadly",
    "luckily",
    "of course",
    "so",
    "listen",
    "oh dear",
    "goodness",
    "alright",
    "hmm",
)
SHORT_EXCLAMATIONS = (
    "that's amazing",
    "how lovely",
    "not again",
    "oh no",
    "thank you so much",
    "good morning",
    "i can't believe it",
    "this is wonderful",
    "what a day",
    "that was close",
    "here we go",
    "well done",
    "what a surprise",
    "of course",
    "no way",
    "watch out",
    "good luck",
    "me too",
)
FILLERS = (
    "i think",
    "it seems",
    "apparently",
    "maybe",
    "perhaps",
    "probably",
    "of course",
    "in fact",
    "to be honest",
    "in the end",
    "at last",
    "by the way",
    "for a while",
    "all day",
)
TIME_PREFIXES = ("last", "next", "this", "every")
CLAUSE_INTROS = ("that", "")
# words only the templates produce
FUNCTION_WORDS = (
    "to that who what which where when why how many going not am is are was were do does did "
    "don't doesn't didn't has have hasn't haven't isn't aren't wasn't weren't will won't it "
    "looks seems feels love miss need want like hate ago night morning afternoon evening time "
    "please let's always never so too and on in at for from with of one a an hello"
).split()
TENSES = ("present", "past", "past", "future", "progressive", "past_progressive", "perfect", "modal", "going_to")
# tenses that go together in one sentence (main clause, subordinate clause)
FRAMES = {
    "past": (("past", "past", "past_progressive"), ("past", "past_progressive")),
    "present": (("present", "progressive", "perfect", "modal"), ("present", "progressive", "perfect")),
    "future": (("future", "going_to", "modal"), ("present", "perfect")),
}


# ------------------------------------------------------------------------------------ morphology


def _words(text: str) -> list[str]:
    return list(dict.fromkeys(text.split()))


def _pairs(text: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split()[1:] for line in text.strip().splitlines()}


IRREGULAR_PLURALS = _pairs(W.IRREGULAR_PLURALS)
IRREGULAR_VERBS = _pairs(W.IRREGULAR_VERBS)
DOUBLING = frozenset(W.DOUBLING_VERBS.split())


def _is_vowel(word: str, i: int) -> bool:
    i %= len(word)
    return word[i] in "aeiou" and not (word[i] == "u" and i > 0 and word[i - 1] == "q")


def _doubles_final(base: str) -> bool:
    """Whether the final consonant doubles before -ed/-ing (stop -> stopping, begin -> beginning)."""
    if base in DOUBLING:
        return True
    if len(base) < 3 or base[-1] in "aeiouwxy" or not _is_vowel(base, -2) or _is_vowel(base, -3):
        return False
    groups = sum(1 for i in range(len(base)) if _is_vowel(base, i) and (i == 0 or not _is_vowel(base, i - 1)))
    return groups == 1


def plural(noun: str) -> str:
    """The plural of a (singular) noun from the word lists."""
    if noun in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[noun][0]
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


@dataclass(frozen=True)
class VerbForms:
    """base / third person singular / past / past participle / -ing form."""

    base: str
    third: str
    past: str
    participle: str
    ing: str


def verb_forms(base: str) -> VerbForms:
    """All five forms of a verb, irregular ones from IRREGULAR_VERBS."""
    if base == "be":
        return VerbForms("be", "is", "was", "been", "being")
    if base == "have":
        return VerbForms("have", "has", "had", "had", "having")
    if base.endswith(("s", "x", "z", "ch", "sh", "o")):
        third = base + "es"
    elif base.endswith("y") and base[-2] not in "aeiou":
        third = base[:-1] + "ies"
    else:
        third = base + "s"
    stem = base + base[-1] if _doubles_final(base) else base
    if base.endswith("ie"):
        ing = base[:-2] + "ying"
    elif base.endswith("e") and not base.endswith(("ee", "oe", "ye")):
        ing = base[:-1] + "ing"
    else:
        ing = stem + "ing"
    irregular = IRREGULAR_VERBS.get(base)
    if irregular:
        return VerbForms(base, third, irregular[0], irregular[1], ing)
    if base.endswith("e"):
        past = base + "d"
    elif base.endswith("y") and base[-2] not in "aeiou":
        past = base[:-1] + "ied"
    else:
        past = stem + "ed"
    return VerbForms(base, third, past, past, ing)


def article(word: str) -> str:
    """'a' or 'an' before `word`."""
    if word.startswith(("hour", "honest", "honor", "heir")):
        return "an"
    if word.startswith(("use", "usu", "uni", "euro", "one")):
        return "a"
    return "an" if word[0] in "aeiou" else "a"


@dataclass(frozen=True)
class Lexicon:
    """The parsed word lists."""

    people: list[str]
    animals: list[str]
    things: list[str]
    food: list[str]
    mass: list[str]
    places: list[str]
    ideas: list[str]
    times: list[str]
    days: list[str]
    months: list[str]
    names: list[str]
    place_names: list[str]
    adjectives: list[str]
    adv_manner: list[str]
    adv_time: list[str]
    adv_frequency: list[str]
    adv_degree: list[str]
    numbers: list[str]
    ordinals: list[str]
    verbs: dict[str, list[str]] = field(default_factory=dict)
    forms: dict[str, VerbForms] = field(default_factory=dict)


@cache
def lexicon() -> Lexicon:
    """Parse the word lists once per process."""
    verbs = {
        "thing": _words(W.VERBS_THING),
        "person": _words(W.VERBS_PERSON),
        "food": _words(W.VERBS_FOOD),
        "idea": _words(W.VERBS_IDEA),
        "intrans": _words(W.VERBS_INTRANS),
        "motion": _words(W.VERBS_MOTION),
        "clause": _words(W.VERBS_CLAUSE),
        "infinitive": _words(W.VERBS_INFINITIVE),
    }
    all_verbs = {v for vs in verbs.values() for v in vs} | {"be", "have", "do", "go", "let"}
    return Lexicon(
        people=_words(W.PEOPLE),
        animals=_words(W.ANIMALS),
        things=_words(W.THINGS),
        food=_words(W.FOOD),
        mass=_words(W.MASS_NOUNS),
        places=_words(W.PLACES_COMMON),
        ideas=_words(W.ABSTRACT),
        times=_words(W.TIMES),
        days=_words(W.DAYS),
        months=_words(W.MONTHS),
        names=_words(W.NAMES),
        place_names=_words(W.PLACE_NAMES),
        adjectives=_words(W.ADJECTIVES),
        adv_manner=_words(W.ADVERBS_MANNER),
        adv_time=_words(W.ADVERBS_TIME),
        adv_frequency=_words(W.ADVERBS_FREQUENCY),
        adv_degree=_words(W.ADVERBS_DEGREE),
        numbers=_words(W.NUMBERS),
        ordinals=_words(W.ORDINALS),
        verbs=verbs,
        forms={v: verb_forms(v) for v in sorted(all_verbs)},
    )

"""A seeded generator of varied, roughly grammatical English sentences over a broad vocabulary.

Sentences are statements, compound and complex sentences, yes/no and wh-questions, exclamations and
imperatives, built from small phrase grammars over the word lists in `wordlist`. Their length in
words is drawn uniformly from [min_words, max_words], so speech duration tracks text length. The text uses
only lowercase a-z, space and . , ? ! ' - (the demo LM's character vocabulary).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ttslens.audio.backbones.demo.grammar import (
    CLAUSE_INTROS,
    COMPANION_PREPS,
    CONJUNCTIONS,
    FILLERS,
    FRAMES,
    FUNCTION_WORDS,
    INTERJECTIONS,
    MASS_DETS,
    MODALS,
    NEG_MODALS,
    OBJECT_PRONOUNS,
    PLACE_PREPS,
    PLURAL_DETS,
    POSSESSIVES,
    SHORT_EXCLAMATIONS,
    SINGULAR_DETS,
    SUBJECT_PRONOUNS,
    SUBORDINATORS,
    TENSES,
    THING_PREPS,
    TIME_PREFIXES,
    article,
    lexicon,
    plural,
)
from ttslens.sae.errors import BadInput

# ------------------------------------------------------------------------------------------ clauses


@dataclass
class Clause:
    """Subject + verb (base form, tense, negation) + the words after the verb."""

    subject: list[str]
    person: str  # 1s 2 3s 1p 3p
    verb: str
    tense: str
    negative: bool
    rest: list[str]
    tense_modal: str = "can"  # the modal verb of tense "modal"
    adverb: str = ""  # a frequency adverb before a simple-tense verb ("often")

    def _be(self, past: bool) -> str:
        if past:
            return "was" if self.person in ("1s", "3s") else "were"
        return {"1s": "am", "3s": "is"}.get(self.person, "are")

    def _aux(self) -> tuple[str, str]:
        """(auxiliary, verb form after it) for questions; the auxiliary is 'do'-support where needed."""
        f = lexicon().forms[self.verb]
        third = self.person == "3s"
        if self.verb == "be" and self.tense in ("present", "past"):
            return self._be(self.tense == "past"), ""
        return {
            "present": ("does" if third else "do", f.base),
            "past": ("did", f.base),
            "future": ("will", f.base),
            "progressive": (self._be(False), f.ing),
            "past_progressive": (self._be(True), f.ing),
            "perfect": ("has" if third else "have", f.participle),
            "modal": (self.tense_modal, f.base),
            "going_to": (self._be(False), f"going to {f.base}"),
        }[self.tense]

    def verb_words(self) -> list[str]:
        f = lexicon().forms[self.verb]
        aux, rest = self._aux()
        if not self.negative:
            if self.tense == "present" and self.verb != "be":
                return [f.third if self.person == "3s" else f.base]
            if self.tense == "past" and self.verb != "be":
                return [f.past]
            return [aux] + ([rest] if rest else [])
        if self.tense in ("present", "past") and self.verb == "be":
            return [{"am": "am not", "was": "wasn't", "were": "weren't", "is": "isn't", "are": "aren't"}[aux]]
        if aux == "am":
            return ["am not", rest]
        if aux in ("do", "does", "did", "has", "have", "is", "are", "was", "were"):
            return [aux + "n't", rest]
        return [NEG_MODALS.get(aux, aux + " not"), rest]

    def statement(self) -> list[str]:
        verb = self.verb_words()
        if self.adverb and (self.verb == "be" or len(verb) > 1):  # after the auxiliary: "is often", "didn't often"
            return self.subject + verb[:1] + [self.adverb] + verb[1:] + self.rest
        return self.subject + [self.adverb] + verb + self.rest

    def question(self) -> list[str]:
        aux, rest = self._aux()
        return [aux] + self.subject + [self.adverb] + ([rest] if rest else []) + self.rest


class SentenceGenerator:
    """Seeded random English sentences; `sentence()` draws the length uniformly from the range."""

    def __init__(self, seed: int):
        self.seed = seed
        self.r = random.Random(seed)
        self.lex = lexicon()
        self.rho = 0.5  # richness of the sentence being built: 0 terse .. 1 elaborate

    # ---- public

    def sentence(self, min_words: int = 3, max_words: int = 20) -> str:
        """One sentence of min_words..max_words words (target length uniform over the range)."""
        if not 1 <= min_words <= max_words:
            raise BadInput(f"need 1 <= min_words <= max_words, got {min_words}, {max_words}")
        target = self.r.randint(min_words, max_words)
        best: list[str] | None = None
        for _ in range(24):
            words = self._candidate(target)
            n = _count(words)
            if n == target:
                best = words
                break
            if min_words <= n <= max_words and (best is None or abs(n - target) < abs(_count(best) - target)):
                best = words
        if best is None:  # extreme ranges: fall back to the shortest forms
            best = self._short(max_words)
        return _render(best)

    def vocabulary(self) -> set[str]:
        """Every word the generator can produce."""
        lex = self.lex
        nouns = lex.people + lex.animals + lex.things + lex.food + lex.places + lex.ideas + lex.times
        words = set(nouns) | {plural(n) for n in nouns} | set(lex.mass)
        for f in lex.forms.values():
            words |= {f.base, f.third, f.past, f.participle, f.ing}
        for group in (
            lex.days,
            lex.months,
            lex.names,
            lex.place_names,
            lex.adjectives,
            lex.adv_manner,
            lex.adv_time,
            lex.adv_frequency,
            lex.adv_degree,
            lex.numbers,
            lex.ordinals,
        ):
            words |= set(group)
        fixed = (
            list(SUBJECT_PRONOUNS)
            + list(OBJECT_PRONOUNS)
            + list(POSSESSIVES)
            + list(SINGULAR_DETS)
            + list(PLURAL_DETS)
            + list(MASS_DETS)
            + list(PLACE_PREPS)
            + list(THING_PREPS)
            + list(COMPANION_PREPS)
            + list(CONJUNCTIONS)
            + list(SUBORDINATORS)
            + list(MODALS)
            + list(NEG_MODALS.values())
            + list(INTERJECTIONS)
            + list(SHORT_EXCLAMATIONS)
            + list(FILLERS)
            + list(TIME_PREFIXES)
            + FUNCTION_WORDS
        )
        for phrase in fixed:
            words |= set(phrase.split())
        return {w for w in words if w}

    # ---- sentence types

    def _candidate(self, target: int) -> list[str]:
        self.rho = min(max((target - 3) / 15, 0.0), 1.0)
        r = self.r.random
        if target <= 4:
            kinds = [
                (self._short_sentence, 3),
                (self._simple, 3),
                (self._yes_no, 2),
                (self._exclamation, 2),
                (self._imperative, 2),
            ]
        elif target <= 10:
            kinds = [
                (self._simple, 5),
                (self._yes_no, 2),
                (self._wh_question, 2),
                (self._exclamation, 1.5),
                (self._imperative, 1.5),
                (self._reported, 1),
                (self._compound, 1),
            ]
        else:
            kinds = [
                (self._compound, 4),
                (self._complex, 4),
                (self._simple, 1.5),
                (self._reported, 1.5),
                (self._wh_question, 1),
                (self._yes_no, 0.7),
                (self._imperative, 0.8),
                (self._listing, 0.7),
            ]
        make = self.r.choices([k for k, _ in kinds], weights=[w for _, w in kinds])[0]
        words = make()
        if r() < 0.12 + 0.1 * self.rho and words[-1] not in "?!" and _count(words) < target:
            words = [self.r.choice(INTERJECTIONS), ","] + words
        elif r() < 0.06 and _count(words) < target:
            words = [self.r.choice(self.lex.names), ","] + words
        return words

    def _short(self, max_words: int) -> list[str]:
        options = [e for e in SHORT_EXCLAMATIONS if len(e.split()) <= max_words] or ["hello"]
        return [self.r.choice(options), "!"]

    def _short_sentence(self) -> list[str]:
        c = self.r.choice
        options = [
            [c(SHORT_EXCLAMATIONS), "!"],
            [c(["the", "my", "our", "your"]), c(self.lex.people + self.lex.animals), self._finite_intrans(), "."],
            [c(self.lex.names), self._finite_intrans(), c(self.lex.adv_manner + self.lex.adv_time), "."],
            ["it", c(["is", "was", "looks", "seems", "feels"]), c(self.lex.adjectives), "."],
            [c(["i", "we", "they"]), c(["love", "miss", "need", "want", "like", "hate"]), self._plural_noun(), "."],
            ["are", "you", c(self.lex.adjectives), "?"],
            ["where", "is", c(self.lex.names), "?"],
        ]
        return c(options)

    def _simple(self) -> list[str]:
        words = self._clause().statement()
        words = self._maybe_filler(words)
        return words + [self.r.choice([".", ".", ".", ".", "!"])]

    def _compound(self) -> list[str]:
        tenses = FRAMES[self.r.choice(list(FRAMES))][0]
        a, b = self._clause(tenses=tenses), self._clause(tenses=tenses)
        return a.statement() + [",", self.r.choice(CONJUNCTIONS)] + b.statement() + ["."]

    def _complex(self) -> list[str]:
        main_tenses, sub_tenses = FRAMES[self.r.choice(list(FRAMES))]
        sub, main = self._clause(tenses=sub_tenses), self._clause(tenses=main_tenses)
        conj = self.r.choice(SUBORDINATORS)
        if self.r.random() < 0.5:
            return [conj] + sub.statement() + [","] + main.statement() + ["."]
        return main.statement() + [conj] + sub.statement() + ["."]

    def _reported(self) -> list[str]:
        subj, person = self._subject()
        verb = self.r.choice(self.lex.verbs["clause"])
        head = Clause(subj, person, verb, self.r.choice(["present", "past", "past", "perfect"]), False, [])
        intro = [self.r.choice(CLAUSE_INTROS)] if self.r.random() < 0.5 else []
        said = self._clause(tenses=FRAMES["past"][0] if head.tense == "past" else TENSES)
        return head.statement() + [w for w in intro if w] + said.statement() + ["."]

    def _listing(self) -> list[str]:
        subj, person = self._subject()
        verb = self.r.choice(["buy", "bring", "pack", "find", "need", "want", "carry", "order", "sell"])
        items = [
            self._noun_phrase(self.r.choice([self.lex.things, self.lex.food]), many=self.r.random() < 0.5)
            for _ in range(self.r.randint(3, 4))
        ]
        listed = [w for item in items[:-1] for w in item + [","]] + ["and"] + items[-1]
        tail = self._place_phrase() if self.r.random() < 0.5 else []
        return Clause(subj, person, verb, "past", False, listed + tail).statement() + ["."]

    def _yes_no(self) -> list[str]:
        return self._clause().question() + ["?"]

    def _wh_question(self) -> list[str]:
        c = self.r.choice
        kind = c(["object", "adverbial", "subject", "how_many", "copula"])
        if kind == "object":
            clause = self._clause(verb_kind=c(["thing", "food", "idea"]), with_object=False)
            return [c(["what", "which " + c(self.lex.things)])] + clause.question() + ["?"]
        if kind == "adverbial":
            clause = self._clause()
            return [c(["where", "when", "why", "how"])] + clause.question() + ["?"]
        if kind == "subject":
            clause = self._clause(verb_kind=c(["thing", "person", "food", "idea"]))
            clause.subject, clause.person = ["who"], "3s"
            return clause.statement() + ["?"]
        if kind == "how_many":
            noun = c(self.lex.things + self.lex.animals + self.lex.food)
            clause = self._clause(verb_kind="thing", with_object=False)
            return ["how", "many", plural(noun)] + clause.question() + ["?"]
        subj, person = self._subject()
        clause = Clause(subj, person, "be", c(["present", "past"]), False, [])
        return ["why"] + clause.question() + [c(["so", "too", "always"]), c(self.lex.adjectives), "?"]

    def _exclamation(self) -> list[str]:
        c, lex = self.r.choice, self.lex
        kind = c(["what_a", "what_pl", "how_adj", "statement", "short"])
        if kind == "what_a":
            adj = c(lex.adjectives)
            return ["what", article(adj), adj, c(lex.things + lex.places + lex.ideas + lex.animals), "!"]
        if kind == "what_pl":
            return ["what", c(lex.adjectives), self._plural_noun(), "!"]
        if kind == "how_adj":
            subj, person = self._subject(pronouns=False)
            be = Clause(subj, person, "be", c(["present", "past"]), False, []).verb_words()
            return ["how", c(lex.adjectives)] + subj + be + ["!"]
        if kind == "statement":
            return self._clause().statement() + ["!"]
        return [c(SHORT_EXCLAMATIONS), ","] + self._clause().statement() + ["!"]

    def _imperative(self) -> list[str]:
        c = self.r.choice
        kind = c(["thing", "person", "food", "motion", "idea"])
        base, rest = self._predicate(kind)
        head = c([[], [], ["please"], ["don't"], ["let's"], ["always"], ["never"]])
        words = head + [base] + rest
        if self.rho > 0.5 and self.r.random() < 0.5:
            words += [c(["before", "after", "when", "if"])] + self._clause(tenses=FRAMES["future"][1]).statement()
        return words + [c([".", "!"])]

    # ---- clauses and phrases

    def _clause(
        self, verb_kind: str | None = None, with_object: bool = True, tenses: tuple[str, ...] = TENSES
    ) -> Clause:
        """A random clause; `verb_kind` picks the verb family, `tenses` the allowed tenses."""
        c, r = self.r.choice, self.r.random
        negative = r() < 0.12
        kind = (
            verb_kind
            or self.r.choices(
                ["thing", "person", "food", "idea", "intrans", "motion", "copula", "infinitive"],
                weights=[4, 2, 1.5, 1.5, 2.5, 1.5, 2, 1],
            )[0]
        )
        subj, person = self._subject(things=kind == "copula")
        if kind == "copula":
            tense = c([t for t in tenses if "progressive" not in t] or ["present"])
            clause = Clause(subj, person, "be", tense, negative, self._copula_rest())
        elif kind == "infinitive":
            verb = c(self.lex.verbs["infinitive"])
            base, rest = self._predicate(c(["thing", "person", "food", "motion", "idea"]))
            tense = c([t for t in tenses if t in ("present", "past", "perfect", "future")] or ["past"])
            clause = Clause(subj, person, verb, tense, negative, ["to", base] + rest)
        else:
            verb, rest = self._predicate(kind, with_object=with_object)
            clause = Clause(subj, person, verb, c(tenses), negative, rest)
            if r() < 0.25 * self.rho and not negative:
                clause.rest = clause.rest + self._time_phrase()
        clause.tense_modal = c(MODALS)
        if r() < 0.08 and clause.tense in ("present", "past", "perfect", "progressive"):
            clause.adverb = c(self.lex.adv_frequency)
        return clause

    def _predicate(self, kind: str, with_object: bool = True) -> tuple[str, list[str]]:
        """(verb base, words after the verb) for a verb of the given kind."""
        c, r, lex = self.r.choice, self.r.random, self.lex
        verb = c(lex.verbs[kind])
        rest: list[str] = []
        if kind == "thing" and with_object:
            rest = self._noun_phrase(lex.things)
            if r() < 0.4 * self.rho:
                rest += [c(THING_PREPS)] + self._noun_phrase(lex.things + lex.places)
        elif kind == "food" and with_object:
            rest = self._noun_phrase(lex.food) if r() < 0.6 else self._mass_phrase()
        elif kind == "idea" and with_object:
            rest = self._noun_phrase(lex.ideas)
        elif kind == "person" and with_object:
            rest = [c(OBJECT_PRONOUNS)] if r() < 0.25 else self._agent_phrase()
        elif kind == "motion":
            rest = ["to"] + (self._noun_phrase(lex.places, many=False) if r() < 0.6 else [c(lex.place_names)])
        if r() < 0.5 * self.rho:
            rest += [c(lex.adv_manner)]
        if r() < 0.45 * self.rho:
            rest += self._place_phrase() if r() < 0.7 else [c(COMPANION_PREPS)] + self._agent_phrase()
        return verb, rest

    def _copula_rest(self) -> list[str]:
        c, r, lex = self.r.choice, self.r.random, self.lex
        if r() < 0.25:
            return self._place_phrase()
        words = ([c(lex.adv_degree)] if r() < 0.4 else []) + [c(lex.adjectives)]
        if r() < 0.35 * self.rho:
            words += ["and", c(lex.adjectives)]
        if r() < 0.3 * self.rho:
            words += self._place_phrase()
        return words

    def _subject(self, pronouns: bool = True, things: bool = False) -> tuple[list[str], str]:
        """A subject and its person; things (not only people and animals) when `things`."""
        r = self.r.random()
        if pronouns and r < 0.3:
            pronoun = self.r.choice(list(SUBJECT_PRONOUNS))
            return [pronoun], SUBJECT_PRONOUNS[pronoun]
        if r < 0.45:
            return [self.r.choice(self.lex.names)], "3s"
        is_plural = self.r.random() < 0.3
        lex = self.lex
        pool = lex.things + lex.food + lex.places if things and self.r.random() < 0.5 else lex.people + lex.animals
        return self._noun_phrase(pool, many=is_plural), "3p" if is_plural else "3s"

    def _agent_phrase(self) -> list[str]:
        if self.r.random() < 0.3:
            return [self.r.choice(self.lex.names)]
        return self._noun_phrase(self.lex.people + self.lex.animals)

    def _noun_phrase(self, pool: list[str], many: bool | None = None) -> list[str]:
        c, r, lex = self.r.choice, self.r.random, self.lex
        is_plural = r() < 0.3 if many is None else many
        noun = c(pool)
        adjs: list[str] = []
        if r() < 0.55 * self.rho + 0.1:
            adjs.append(c(lex.adjectives))
            if r() < 0.3 * self.rho:
                adjs.append(c(lex.adjectives))
            if r() < 0.1:
                adjs.insert(0, c(lex.adv_degree))
        if is_plural:
            det = c(PLURAL_DETS + POSSESSIVES + tuple(lex.numbers[:8]))
            words = det.split() + adjs + [plural(noun)]
        else:
            det = c(SINGULAR_DETS + POSSESSIVES)
            if det == "a":
                det = article((adjs or [noun])[0])
            words = [det] + adjs + [noun]
        if r() < 0.12 * self.rho:
            words += [c(("from", "with", "of"))] + (
                [c(lex.place_names)] if r() < 0.5 else self._simple_np(lex.people + lex.things)
            )
        return words

    def _simple_np(self, pool: list[str]) -> list[str]:
        return [self.r.choice(("the", "my", "our", "her", "his"))] + [self.r.choice(pool)]

    def _mass_phrase(self) -> list[str]:
        det = self.r.choice(MASS_DETS + POSSESSIVES)
        adj = [self.r.choice(self.lex.adjectives)] if self.r.random() < 0.4 * self.rho else []
        return det.split() + adj + [self.r.choice(self.lex.mass)]

    def _plural_noun(self) -> str:
        return plural(self.r.choice(self.lex.things + self.lex.animals + self.lex.food + self.lex.places))

    def _place_phrase(self) -> list[str]:
        prep = self.r.choice(PLACE_PREPS).split()
        if self.r.random() < 0.3:
            return prep + [self.r.choice(self.lex.place_names)]
        return prep + self._noun_phrase(self.lex.places, many=False)

    def _time_phrase(self) -> list[str]:
        c, lex = self.r.choice, self.lex
        return c(
            [
                [c(lex.adv_time)],
                [c(TIME_PREFIXES), c(lex.times + lex.days)],
                ["on", c(lex.days)],
                ["in", c(lex.months)],
                [c(lex.numbers[:8]), plural(c(lex.times)), "ago"],
                ["at", "night"],
                ["in", "the", c(["morning", "afternoon", "evening"])],
                ["for", c(lex.numbers[:8]), plural(c(lex.times))],
                ["the", c(lex.ordinals[:5]), "time"],
            ]
        )

    def _finite_intrans(self) -> str:
        f = self.lex.forms[self.r.choice(self.lex.verbs["intrans"])]
        return self.r.choice([f.past, f.third])

    def _maybe_filler(self, words: list[str]) -> list[str]:
        if self.r.random() < 0.2 * self.rho:
            filler = self.r.choice(FILLERS).split()
            return filler + [","] + words if self.r.random() < 0.5 else words + [","] + filler
        return words


def _count(words: list[str]) -> int:
    return sum(len(w.split()) for w in words if w not in (",", ".", "?", "!"))


def _render(words: list[str]) -> str:
    """Join tokens, attaching punctuation to the word before it."""
    out = ""
    for w in words:
        if not w:
            continue
        if w in (",", ".", "?", "!"):
            out = out.rstrip(",") + w
        else:
            out = f"{out} {w}" if out else w
    return out

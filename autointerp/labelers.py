"""Labelers: turn a feature's evidence into a label, and a label into a predictor for scoring.

- `EvidenceLabeler` (offline, deterministic): candidate hypotheses come from the evidence (tokens and
  words at the strongest activations, instruct words, the text's tags, every clip measure in both
  directions, position in the utterance, ASR words at the peak). Each hypothesis is a predictor over
  examples; the one that best separates the top activations from random non-activating positions
  (AUROC, with a small preference for the feature's own modality, a penalty on bare speech-token ids,
  and near-ties going to an attribute such as laughter, gender or rate) names the feature. The same
  predictor then scores the label on held-out examples, so attribute labels are scored by the
  measure itself.
- `LLMLabeler`: the same evidence, written out for a chat model (any OpenAI-compatible endpoint);
  its label is scored by an LLM judge that picks which of a shuffled set of examples match it.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import NamedTuple

import numpy as np

from ttslens.autointerp.scoring import auroc

MEASURE_LABELS = {
    ("laughter", 1): "laughter",
    ("p_male", 1): "male voice (low pitch)",
    ("p_male", -1): "female voice (high pitch)",
    ("f0_peak_hz", 1): "high pitch at this moment",
    ("f0_peak_hz", -1): "low pitch at this moment",
    ("syllable_rate", 1): "fast speech",
    ("syllable_rate", -1): "slow speech",
    ("voiced_frac", 1): "continuous voicing",
    ("voiced_frac", -1): "pause / silence",
    ("peak_db", 1): "loud moment (a stressed syllable)",
    ("peak_db", -1): "quiet moment",
    ("voiced_peak", -1): "an unvoiced sound (consonant or gap)",
    ("voiced_peak", 1): "a voiced sound (vowel-like)",
    ("centroid_peak_hz", 1): "a hissy sound (s, sh, f)",
    ("centroid_peak_hz", -1): "a dull, low-frequency sound",
    ("t_start", -1): "speech onset (the first second)",
    ("t_end", -1): "end of speech (the last second)",
}
TEXT_POSITION = {-1: "the start of the text (its first characters)", 1: "late in the text"}
MODALITY_BONUS = 0.02  # prefer evidence of the feature's own modality on near-ties
TOKEN_PENALTY = 0.05  # prefer an audio description to bare speech-token ids unless the ids are clearly better
SET_PENALTY = 0.01  # per extra member of a token / context set: the simpler description wins a near-tie
MAX_SET = 4  # a token hypothesis may grow to a set of this many tokens
SET_KINDS = ("token", "context", "after")  # hypotheses that grow into sets (and read bare ids on the speech side)
TIE = 0.03  # within this of the best score, an attribute-level audio measure wins
ATTRIBUTES = ("laughter", "p_male", "syllable_rate")
MIN_SUPPORT = 2  # a token / word must occur at this many top activations to become a hypothesis
CONFIDENT_AUROC = 0.75  # below this (on the selection examples) a label is marked unclear


def _arg_text(a: str | tuple) -> str:
    """A hypothesis argument as key text: a token, or a context pair as `before»token`."""
    if isinstance(a, str):
        return a
    before, tok = a
    return (" ".join(before) if isinstance(before, tuple) else before) + "»" + tok


class Hypothesis(NamedTuple):
    kind: (
        str  # token | word | context | after | instruct | word_initial | word_final | punct | text_laugh
        # | text_pos | instruct_word | measure | asr | none (nothing separates the examples)
    )
    arg: str | tuple[str, ...]
    sign: int
    side: str  # text | speech: the modality whose evidence it reads
    label: str

    @property
    def key(self) -> str:
        parts = self.arg if isinstance(self.arg, tuple) else (self.arg,)
        arg = "|".join(map(_arg_text, parts))
        return f"{self.side}:{self.kind}:{arg}:{'+' if self.sign > 0 else '-'}"

    def value(self, ctx: dict, meas: dict | None) -> float:
        """Predictor value; -inf where the example has no evidence of this side (a text position for an
        audio hypothesis), nan where the evidence is undefined (e.g. no pitch in silence)."""
        k = self.kind
        if k == "none":
            return 0.0
        if k == "token":
            return float(ctx["token"] in self.arg)
        if k == "word":
            return float(ctx["word"] == self.arg)
        if k in ("context", "after"):  # (what came before, the token): the token in context / after a context
            if (ctx["modality"] == "speech") != (self.side == "speech"):
                return -math.inf if self.side == "speech" else 0.0
            before = ctx.get("before", "")
            hit = (before[-len(b) :] == b and (k == "after" or ctx["token"] == t) for b, t in self.arg)
            return float(any(hit))
        if k == "text_pos":  # the position in the sequence, of text positions only
            return -math.inf if ctx["modality"] == "speech" else self.sign * float(ctx["pos"])
        if k in ("instruct", "word_initial", "word_final", "text_laugh"):
            return float(bool(ctx[k]))
        if k == "punct":
            return float(ctx["modality"] == "text" and len(ctx["token"]) == 1 and not ctx["token"].isalnum())
        if k == "instruct_word":
            return float(self.arg in ctx["instruct_words"])
        if meas is None:
            return -math.inf
        if k == "asr":
            return float(self.arg in meas.get("asr_peak", "").split())
        v = ctx.get(self.arg) if self.arg in ("t_start", "t_end") else meas.get(self.arg)
        return math.nan if v is None else self.sign * float(v)


def predict(h: Hypothesis, examples: list[tuple[dict, dict | None]]) -> np.ndarray:
    """Predictor values over examples, with -inf → below every real value and nan → the median."""
    v = np.array([h.value(c, m) for c, m in examples], dtype=float)
    real = v[np.isfinite(v)]
    lo = real.min() - 1 if real.size else 0.0
    v[np.isneginf(v)] = lo
    v[np.isnan(v)] = np.median(real) if real.size else lo
    return v


def _token_label(toks: tuple[str, ...], speech: bool) -> str:
    if speech:
        return ("speech tokens " if len(toks) > 1 else "speech token ") + ", ".join(toks)
    names = ["<space>" if t == " " else t if t.startswith(("<", "[")) else f"'{t}'" for t in toks]
    if len(toks) == 1:
        t = toks[0]
        if t == " ":
            return "a space between words"
        if t.startswith(("<", "[")):
            return f"the {t} token"
    kind = "character" if all(len(t) == 1 for t in toks) else "token"
    return f"the {kind}{'s' if len(toks) > 1 else ''} " + " or ".join(names)


def _context_label(kind: str, args: tuple[tuple, ...], speech: bool) -> str:
    """Text: `the character 'h' after 't'`; speech (tokens, repeats collapsed): `speech token /n/ after /a/`."""

    def q(x) -> str:  # a token, or what came before it (a string of text, a tuple of speech tokens)
        return " ".join(x) if isinstance(x, tuple) else x if speech else "'" + x.replace(" ", "␣") + "'"

    what = "speech token" if speech else "character" if all(len(t) <= 1 for _, t in args) else "token"
    if kind == "after":
        return f"a {what} after {'' if len(args) == 1 else 'any of '}" + ", ".join(q(b) for b, _ in args)
    return ("" if speech else "the ") + f"{what} " + " or ".join(f"{q(t)} after {q(b)}" for b, t in args)


def _contexts(ctx: dict) -> list[tuple[str, tuple]]:
    """The (kind, (what came before, token)) context keys of a position: the token after its last 1, 2, ...
    characters (text) or distinct speech tokens (speech) that evidence kept, and any token after them."""
    before = ctx.get("before", "")
    keys = []
    for n in range(1, len(before) + 1):
        keys += [("context", (before[-n:], ctx["token"])), ("after", (before[-n:], ""))]
    return keys


def hypotheses(top: list[tuple[dict, dict | None]], asr: bool) -> list[Hypothesis]:
    """Candidate hypotheses suggested by the top activations."""
    texts = [c for c, _ in top if c["modality"] != "speech"]
    out: list[Hypothesis] = []
    for t, n in Counter(c["token"] for c in texts).items():
        if n >= MIN_SUPPORT:
            out.append(Hypothesis("token", (t,), 1, "text", _token_label((t,), False)))
    for t, n in Counter(c["token"] for c, m in top if m is not None).items():
        if n >= MIN_SUPPORT:
            out.append(Hypothesis("token", (t,), 1, "speech", _token_label((t,), True)))
    for w, n in Counter(c["word"] for c in texts if c["word"]).items():
        if n >= MIN_SUPPORT:
            in_instruct = sum(c["instruct"] for c in texts if c["word"] == w) > n / 2
            out.append(
                Hypothesis("word", w, 1, "text", f"the word '{w}'" + (" in the instruct" if in_instruct else ""))
            )
    for side, group in (("text", texts), ("speech", [c for c, m in top if m is not None])):
        for (kind, arg), n in Counter(key for c in group for key in _contexts(c)).items():
            if n >= MIN_SUPPORT:
                out.append(Hypothesis(kind, (arg,), 1, side, _context_label(kind, (arg,), side == "speech")))
    for w, n in Counter(w for c, _ in top for w in c["instruct_words"]).items():
        if n >= MIN_SUPPORT:
            out.append(Hypothesis("instruct_word", w, 1, "text", f"instruct says '{w}'"))
    out += [
        Hypothesis("instruct", "", 1, "text", "the instruct (style description)"),
        Hypothesis("word_initial", "", 1, "text", "the first letter of a word"),
        Hypothesis("word_final", "", 1, "text", "the last letter of a word"),
        Hypothesis("punct", "", 1, "text", "punctuation"),
        Hypothesis("text_laugh", "", 1, "text", "text with a [laughter] tag"),
        *(Hypothesis("text_pos", "", sign, "text", label) for sign, label in TEXT_POSITION.items()),
    ]
    if any(m is not None for _, m in top):
        out += [Hypothesis("measure", a, s, "speech", lab) for (a, s), lab in MEASURE_LABELS.items()]
        if asr:
            words = Counter(w for _, m in top if m for w in m.get("asr_peak", "").split())
            out += [Hypothesis("asr", w, 1, "speech", f"the spoken word '{w}'") for w, n in words.items() if n >= 2]
    return out


class Choice(NamedTuple):
    hypothesis: Hypothesis
    selection_auroc: float
    ranking: list[tuple[str, float]]  # the runner-up hypotheses (key, AUROC)


def _fit(h: Hypothesis, pos, neg) -> float:
    v = predict(h, pos + neg)
    return auroc(v[: len(pos)], v[len(pos) :])


def _grow(h: Hypothesis, a: float, pos, neg) -> tuple[Hypothesis, float]:
    """Add the top activations' next most common tokens (or contexts of the same kind and length) of the
    same side while they raise the AUROC."""
    speech = h.side == "speech"
    if h.kind == "token":
        counts = Counter(c["token"] for c, m in pos if (m is not None) == speech and c["token"] not in h.arg)
    else:
        size = len(h.arg[0][0])
        keys = (arg for c, m in pos if (m is not None) == speech for kind, arg in _contexts(c) if kind == h.kind)
        counts = Counter(arg for arg in keys if len(arg[0]) == size and arg not in h.arg)
    for t, n in counts.most_common():
        if len(h.arg) >= MAX_SET or n < MIN_SUPPORT:
            break
        toks = (*h.arg, t)
        label = _token_label(toks, speech) if h.kind == "token" else _context_label(h.kind, toks, speech)
        cand = h._replace(arg=toks, label=label)
        b = _fit(cand, pos, neg)
        if b > a + 0.01:
            h, a = cand, b
    return h, a


def choose(hyps: list[Hypothesis], pos, neg, modality: str) -> Choice:
    """The hypothesis that best separates `pos` from `neg` (examples: (context, measures) pairs)."""
    scored = []
    for h in hyps:
        a = _fit(h, pos, neg)
        if math.isnan(a):
            continue
        bonus = MODALITY_BONUS if h.side == modality else 0.0
        if h.kind in SET_KINDS:
            h, a = _grow(h, a, pos, neg)
            bonus -= SET_PENALTY * (len(h.arg) - 1) + (TOKEN_PENALTY if h.side == "speech" else 0.0)
        scored.append((a + bonus, a, h))
    scored.sort(key=lambda s: -s[0])
    if not scored:  # no hypothesis has an AUROC here (too few or constant examples): say so, unclear
        side = "speech" if modality == "speech" else "text"
        return Choice(Hypothesis("none", "", 1, side, "no hypothesis separates its examples"), 0.5, [])
    best = scored[0]
    # near-ties go to an attribute (laughter, gender, rate) over a low-level acoustic cue: laughs are mostly
    # unvoiced and female voices high-pitched, and the attribute is the more useful description
    band = [s for s in scored if s[0] >= best[0] - TIE and s[2].kind == "measure" and s[2].arg in ATTRIBUTES]
    if band:
        best = band[0]
    h = best[2]
    if h.kind in SET_KINDS and h.side == "speech":  # say what the tokens sound like, if anything does
        audio = [(a, g) for _, a, g in scored if g.kind == "measure" and a >= 0.7]
        if audio:
            h = h._replace(label=f"{h.label} ({audio[0][1].label})")
    return Choice(h, best[1], [(g.key, round(a, 4)) for _, a, g in scored[:5]])


class EvidenceLabeler:
    name = "evidence"

    def label(self, feature: int, top, sel_neg, modality: str, asr: bool) -> dict:
        c = choose(hypotheses(top, asr), top, sel_neg, modality)
        h = c.hypothesis
        label = h.label if c.selection_auroc >= CONFIDENT_AUROC else f"unclear (best guess: {h.label})"
        return {
            "label": label,
            "hypothesis": h.key,
            "confident": c.selection_auroc >= CONFIDENT_AUROC,
            "selection_auroc": round(c.selection_auroc, 4),
            "alternatives": c.ranking[1:],
            "_hypothesis": h,
        }

    def score(self, feature: int, label: dict, pos, neg) -> float:
        v = predict(label["_hypothesis"], pos + neg)
        return auroc(v[: len(pos)], v[len(pos) :])


# ---- the LLM labeler ------------------------------------------------------------------------
SYSTEM = (
    "You label features of a sparse autoencoder trained on a text-to-speech language model. Its sequence "
    "holds a text prefix (characters or tokens) followed by generated speech tokens (about 25 per second). "
    "A feature fires at some positions. For text positions you see a text window with the firing token "
    "between « ». For speech positions you see the utterance text and measures of the 1-second audio clip "
    "centred on the firing speech token, with the same measures at random speech positions for reference."
)


def describe(ctx: dict, meas: dict | None) -> str:
    """One line of evidence for an example."""
    if meas is None:
        return f"text: {ctx['window']!r}" + (" (in the instruct)" if ctx.get("instruct") else "")
    parts = [f"speech at {ctx['time']:.2f} s of {ctx['time'] + ctx['t_end']:.2f} s"]
    for k, fmt in (
        ("laughter", "laughter {:.2f}"),
        ("p_male", "P(male) {:.2f}"),
        ("f0_peak_hz", "pitch {:.0f} Hz"),
        ("voiced_frac", "voiced {:.0%}"),
        ("syllable_rate", "{:.1f} syllables/s"),
        ("peak_db", "level {:.0f} dB"),
    ):
        v = meas.get(k)
        if v is not None and math.isfinite(v):
            parts.append(fmt.format(v))
    if meas.get("asr"):
        parts.append(f"ASR {meas['asr']!r}")
    return "; ".join(parts) + f" | text: {ctx['window'].split('  ▸')[0][:80]!r}"


class LLMLabeler:
    name = "llm"

    def __init__(self, client):
        self.client = client

    def label(self, feature: int, top, sel_neg, modality: str, asr: bool, enrichment: dict | None = None) -> dict:
        lines = [f"{i + 1}. {describe(c, m)}" for i, (c, m) in enumerate(top)]
        ref = [f"- {describe(c, m)}" for c, m in sel_neg[:5]]
        user = (
            f"Feature {feature} ({modality} feature). Its strongest activations:\n"
            + "\n".join(lines)
            + "\n\nRandom positions where it does not fire:\n"
            + "\n".join(ref)
            + (f"\n\nMeasures at the top activations vs random (effect sizes): {enrichment}" if enrichment else "")
            + '\n\nAnswer with JSON only: {"label": "<at most 8 words naming what the feature detects>"}'
        )
        from ttslens.autointerp.llm import parse_json_answer

        res = self.client.chat([{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}])
        ans = parse_json_answer(res.text, ("label",))
        if res.error or not ans or not str(ans["label"]).strip():
            why = res.error or f"unparseable answer: {str(res.text)[:120]!r}"
            return {"label": None, "failure": why, "confident": False}
        return {"label": str(ans["label"]).strip()[:120], "confident": True, "cached": res.cached}

    def score(self, feature: int, label: dict, pos, neg) -> float:
        """LLM judge: which of a shuffled mix of activating and non-activating examples match the label."""
        from ttslens.autointerp.llm import parse_json_answer

        if not label.get("label"):
            return math.nan
        ex = [(1, c, m) for c, m in pos] + [(0, c, m) for c, m in neg]
        random.Random(feature).shuffle(ex)
        lines = [f"{i + 1}. {describe(c, m)}" for i, (_, c, m) in enumerate(ex)]
        user = (
            f"A feature is labelled: {label['label']!r}. Which of these examples match that label?\n"
            + "\n".join(lines)
            + '\n\nAnswer with JSON only: {"matches": [numbers of the matching examples]}'
        )
        res = self.client.chat([{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}])
        ans = parse_json_answer(res.text, ("matches",))
        if res.error or not ans or not isinstance(ans["matches"], list):
            label["judge_failure"] = res.error or f"unparseable judge answer: {str(res.text)[:120]!r}"
            return math.nan
        picked = {int(i) for i in ans["matches"] if isinstance(i, int | float | str) and str(i).strip().isdigit()}
        y = np.array([t for t, _, _ in ex])
        s = np.array([float(i + 1 in picked) for i in range(len(ex))])
        return auroc(s[y == 1], s[y == 0])

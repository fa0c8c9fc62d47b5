"""Scoring and the evidence labeler on hand-made evidence, where the right answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ttslens.autointerp.job import parse_features
from ttslens.autointerp.labelers import EvidenceLabeler, Hypothesis, hypotheses, predict
from ttslens.autointerp.scoring import auroc, cohens_d, log_odds, summarise


def test_auroc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 30).round(1), rng.normal(0, 1, 40).round(1)
    pairs = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert auroc(pos, neg) == pytest.approx(pairs)
    assert auroc([1, 2], [0]) == 1.0 and auroc([0], [1, 2]) == 0.0 and math.isnan(auroc([], [1]))


def test_effect_sizes():
    assert cohens_d([1, 2, 3], [1, 2, 3]) == 0.0
    assert cohens_d([3, 4, 5], [1, 2, 3]) == pytest.approx(2.0)
    assert log_odds(10, 10, 5, 10) > 2 and log_odds(5, 10, 5, 10) == 0.0


def _speech(laughter: float, p_male: float, rate: float, t: float = 1.0) -> tuple[dict, dict]:
    ctx = {
        "modality": "speech",
        "token": "<s1>",
        "word": "",
        "instruct": False,
        "word_initial": False,
        "word_final": False,
        "text_laugh": False,
        "instruct_words": [],
        "time": t,
        "t_start": t,
        "t_end": 2.0,
        "window": "some text  ▸ speech",
    }
    meas = {
        "laughter": laughter,
        "p_male": p_male,
        "f0_hz": 150.0,
        "f0_peak_hz": 150.0,
        "voiced_frac": 0.6,
        "loudness_db": -25.0,
        "peak_db": -20.0,
        "syllable_rate": rate,
    }
    return ctx, meas


def _text(token: str, word: str, instruct: bool = False, before: str = "", pos: int = 20) -> tuple[dict, None]:
    ctx = {
        "modality": "text",
        "pos": pos,
        "token": token,
        "before": before,
        "word": word,
        "instruct": instruct,
        "word_initial": False,
        "word_final": False,
        "text_laugh": False,
        "instruct_words": ["a", "man"] if instruct else [],
        "window": f"..«{token}»..",
    }
    return ctx, None


@pytest.mark.parametrize(
    ("make", "expect"),
    [
        (lambda r, on: _speech(0.9 if on else r.uniform(0, 0.1), r.uniform(0, 1), r.uniform(2, 6)), "laughter"),
        (lambda r, on: _speech(0.02, r.uniform(0.8, 1) if on else r.uniform(0, 1), r.uniform(2, 6)), "male voice"),
        (lambda r, on: _speech(0.02, r.uniform(0, 0.2) if on else r.uniform(0, 1), r.uniform(2, 6)), "female voice"),
        (lambda r, on: _speech(0.02, r.uniform(0, 1), r.uniform(6, 8) if on else r.uniform(2, 6)), "fast speech"),
    ],
)
def test_evidence_labeler_names_the_attribute_that_separates(make, expect):
    rng = np.random.default_rng(1)
    top = [make(rng, True) for _ in range(20)]
    neg = [make(rng, False) for _ in range(40)]
    lab = EvidenceLabeler().label(0, top, neg[:20], "speech", asr=False)
    assert lab["label"].startswith(expect) and lab["confident"]
    held_pos = [make(rng, True) for _ in range(20)]
    assert EvidenceLabeler().score(0, lab, held_pos, neg[20:]) > 0.9


def test_text_feature_gets_its_word_and_unrelated_top_is_unclear():
    top = [_text("a", "today") for _ in range(12)] + [_text("y", "today") for _ in range(8)]
    neg = [_text(c, w) for c, w in zip("aybcdefghi" * 2, ["cat", "yes", "be", "go", "to"] * 4, strict=True)]
    lab = EvidenceLabeler().label(3, top, neg, "text", asr=False)
    assert lab["label"] == "the word 'today'"
    rng = np.random.default_rng(0)
    noise = [_speech(rng.uniform(0, 0.1), rng.uniform(0, 1), rng.uniform(2, 6)) for _ in range(60)]
    lab = EvidenceLabeler().label(4, noise[:20], noise[20:40], "speech", asr=False)
    assert not lab["confident"] and lab["label"].startswith("unclear")


def test_character_feature_is_named_by_its_context():
    """'h' only after 't' (the bigram), and any character after 'qu': neither a token nor a word says it."""
    rng = np.random.default_rng(0)
    words = ["the", "other", "with", "that", "ship", "hand", "ahead", "quit", "quest", "squad", "bus", "run"]

    def at(word: str, i: int) -> tuple[dict, None]:
        return _text(word[i], word, before=(" " + word[:i])[-3:])

    th = [at(w, i) for w in words for i in range(1, len(w)) if w[i - 1 : i + 1] == "th"]
    other = [at(w, i) for w in words for i in range(len(w)) if w[max(i - 1, 0) : i + 1] != "th"]
    neg = [other[j] for j in rng.choice(len(other), 20)]
    lab = EvidenceLabeler().label(0, th * 3, neg, "text", asr=False)
    assert lab["label"] == "the character 'h' after 't'" and lab["confident"]
    assert EvidenceLabeler().score(0, lab, th, other) == 1.0
    qu = [at(w, 2) for w in ("quit", "quest", "quiz")] + [at("squad", 3)]
    rest = [c for c in other if not c[0]["before"].endswith("qu")]
    lab = EvidenceLabeler().label(1, qu * 2, rest, "text", asr=False)
    assert lab["label"] == "a character after 'qu'" and lab["confident"], lab
    assert EvidenceLabeler().score(1, lab, qu, rest) == 1.0


def test_speech_context_collapses_repeats_and_names_a_transition():
    """A speech position's context is the distinct sounds before its own run; a feature on /n/ right after
    /a/ is named by that transition, which neither token alone explains."""
    import torch

    from ttslens.autointerp.evidence import _speech_before
    from ttslens.sae.activations import SPEECH, TEXT

    toks = ["h", "i", "/a/", "/a/", "/n/", "/n/", "/d/", "/a/"]
    mod = torch.tensor([TEXT] * 2 + [SPEECH] * 6)
    assert _speech_before(toks, mod, 5) == ("/a/",) and _speech_before(toks, mod, 2) == ()
    assert _speech_before(toks, mod, 7) == ("/a/", "/n/", "/d/")

    def frame(tok: str, before: tuple[str, ...]) -> tuple[dict, dict]:
        ctx, meas = _speech(0.02, 0.5, 4.0)
        return ctx | {"token": tok, "before": before}, meas

    top = [frame("/n/", ("/i/", "/a/")), frame("/n/", ("/o/", "/a/"))] * 6
    neg = [frame("/n/", ("/a/", "/i/")), frame("/n/", ("/a/", "/o/")), frame("/d/", ("/a/",)), frame("/a/", ("/n/",))]
    lab = EvidenceLabeler().label(0, top, neg * 4, "speech", asr=False)
    assert lab["label"].startswith("speech token /n/ after /a/") and lab["confident"], lab


def test_start_of_text_feature_is_named_by_position():
    """A feature on the first characters of every text, whatever they are (no token, word or context says it)."""
    rng = np.random.default_rng(0)
    letters = "abcdefghijklmnopqrstuvwxyz"

    def at(pos: int) -> tuple[dict, None]:
        t = letters[rng.integers(26)]
        return _text(t, t + "x", before=letters[rng.integers(26)], pos=pos)

    top = [at(int(p)) for p in rng.integers(1, 4, 20)]
    neg = [at(int(p)) for p in rng.integers(4, 60, 40)]
    lab = EvidenceLabeler().label(0, top, neg[:20], "text", asr=False)
    assert lab["label"] == "the start of the text (its first characters)" and lab["confident"], lab
    assert EvidenceLabeler().score(0, lab, [at(int(p)) for p in rng.integers(1, 6, 20)], neg[20:]) > 0.95


def test_top_activations_keep_one_of_each_identical_prefix():
    """Causal: the same text prefix gives the same activation at the same position in every utterance; the
    labeler sees it once, and the next distinct contexts instead."""
    from types import SimpleNamespace

    import torch

    from ttslens.autointerp.record import of_modality, top_activations
    from ttslens.sae.activations import SPEECH, TEXT

    # positions 0-5: the same prefix (pos 3, act 4.0) in six items; 6-7: other text; 8-9: speech, 1 frame apart
    item_of = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 8])
    pos = torch.tensor([3, 3, 3, 3, 3, 3, 9, 3, 40, 41])
    mod = torch.tensor([TEXT] * 8 + [SPEECH] * 2)
    acts = [4.0] * 6 + [3.0, 2.5, 2.0, 1.9]
    col = SimpleNamespace(
        top_idx=torch.arange(10)[None], top_act=torch.tensor(acts)[None], modality=mod, item_of=item_of, pos=pos
    )
    job = SimpleNamespace(col=col, cfg=SimpleNamespace(top=10, clip_s=1.0), bb=SimpleNamespace(token_rate=25))
    keep, vals, share = top_activations(job, 0)
    assert keep == [0, 6, 7, 8] and vals == [4.0, 3.0, 2.5, 2.0] and share == pytest.approx(0.2)
    # a text feature is labelled from its text positions only (as it is scored), a mixed one from all
    assert of_modality(job, keep, vals, "text") == ([0, 6, 7], [4.0, 3.0, 2.5])
    assert of_modality(job, keep, vals, "speech") == ([8], [2.0])
    assert of_modality(job, keep, vals, "mixed") == (keep, vals)


def test_audio_hypotheses_rank_text_positions_last():
    h = Hypothesis("measure", "laughter", 1, "speech", "laughter")
    v = predict(h, [_speech(0.1, 0.5, 4), _text("a", "x"), _speech(float("nan"), 0.5, 4)])
    assert v[1] < v[0] and v[2] == pytest.approx(0.1)
    assert {h.kind for h in hypotheses([_text("a", "x")] * 3, asr=False)} >= {"token", "word"}


def test_parse_features_and_its_errors():
    assert parse_features("", 4) == [0, 1, 2, 3]
    assert parse_features("0:2,3", 8) == [0, 1, 3] and parse_features("6:", 8) == [6, 7]
    for bad in ("0:9", "9", "-1", "3:1", "a:b"):
        with pytest.raises(ValueError, match="--features"):
            parse_features(bad, 8)


def test_summary_table_per_modality():
    recs = [
        {"modality": "text", "scores": {"detection_auroc": 0.9}},
        {"modality": "text", "scores": {"detection_auroc": 0.7}},
        {"modality": "speech", "scores": {"detection_auroc": 0.8}},
        {"modality": "dead", "scores": {}},
    ]
    s = summarise(recs)
    assert s["text"] == {"features": 2, "mean_auroc": 0.8, "median_auroc": 0.8} and s["all"]["features"] == 3
    assert s["mixed"]["mean_auroc"] is None


def test_choose_says_unclear_when_no_hypothesis_has_an_auroc():
    from ttslens.autointerp.labelers import EvidenceLabeler, choose

    ctx = {"modality": "text", "pos": 1, "token": "a", "word": "", "instruct": False, "instruct_words": []}
    ctx |= {"word_initial": False, "word_final": False, "text_laugh": False, "window": "a"}
    c = choose([], [(ctx, None)], [], "text")
    assert c.hypothesis.kind == "none" and c.selection_auroc == 0.5
    out = EvidenceLabeler().label(0, [(ctx, None)], [], "text", asr=False)
    assert out["label"].startswith("unclear") and not out["confident"]

"""What a position shows: its text context (window, word, instruct) and, at speech positions, the
measures of the 1-second clip centred on it. Utterances are decoded and analysed once each, clips are
measured once each (cached by utterance and frame). ASR runs once per utterance, on the whole waveform,
with word times: a clip's words are those inside its window and its peak words those at its centre (one
transcription serves every clip of the utterance, and Whisper hears whole words in context)."""

from __future__ import annotations

import math
import re
from collections import OrderedDict

import numpy as np
import torch

from ttslens.audio.corpus import item_audio
from ttslens.audio.measures.clips import Tracks, analyse, clip_measures, cut_clip
from ttslens.autointerp.collect import Collection
from ttslens.sae.activations import MODALITIES, SPEECH, TEXT

_WORD = re.compile(r"[a-z0-9']+")
LAUGH_TAGS = ("[laughter]", "<laughter>", "<laugh>")
CONTEXT = 3  # characters (text) or distinct sounds (speech) kept before a position, for the context hypotheses


def _speech_before(toks: list[str], mod: torch.Tensor, p: int) -> tuple[str, ...]:
    """The speech tokens before position p, repeats collapsed, without p's own run: the last CONTEXT distinct
    sounds before this one (a demo frame repeats its phoneme while the phoneme lasts)."""
    out: list[str] = []
    i = p - 1
    while i >= 0 and int(mod[i]) == SPEECH and toks[i] == toks[p]:
        i -= 1
    while i >= 0 and int(mod[i]) == SPEECH and len(out) < CONTEXT:
        if not out or toks[i] != out[0]:
            out.insert(0, toks[i])
        i -= 1
    return tuple(out)


class ClipModels:
    """Optional model-based measures: ASR words (per utterance), AST laughter and wav2vec2 gender (per clip);
    any may be None."""

    def __init__(self, asr=None, laughter=None, gender=None):
        self.asr, self.laughter, self.gender = asr, laughter, gender

    def __bool__(self) -> bool:
        return any(m is not None for m in (self.asr, self.laughter, self.gender))

    def measure(self, clips: list[np.ndarray], sr: int) -> list[dict]:
        """The per-clip model measures (laughter, P(male)) of each clip."""
        out: list[dict] = [{} for _ in clips]
        if not clips:
            return out
        if self.laughter is not None:
            for d, p in zip(out, self.laughter.prob(clips, sr), strict=True):
                d["laughter"] = float(p)
        if self.gender is not None:
            for d, p in zip(out, self.gender.p_male(clips, sr), strict=True):
                d["p_male"] = float(p)
        return out


def clip_words(words: list, centre: float, clip_s: float) -> dict:
    """A clip's ASR fields from its utterance's timed words: `asr`, the words overlapping the clip window
    [centre - clip_s/2, centre + clip_s/2]; `asr_peak`, the words at the centre (lower case)."""
    from ttslens.audio.measures.asr import words_at

    lo, hi = centre - clip_s / 2, centre + clip_s / 2
    return {
        "asr": " ".join(w.word.strip() for w in words if w.end > lo and w.start < hi),
        "asr_peak": " ".join(w.word.strip().lower() for w in words_at(words, centre)),
    }


class Evidence:
    """Evidence for positions of a `Collection` (indices into its position table)."""

    def __init__(
        self, backbone, items: list, col: Collection, clip_s: float = 1.0, laughter=None, models=None, progress=False
    ):
        self.bb, self.items, self.col, self.clip_s, self.progress = backbone, items, col, clip_s, progress
        self.laughter, self.models = laughter, models or ClipModels()
        self._seq: dict[int, dict] = {}
        self._tracks: dict[int, Tracks] = {}
        self._waves: OrderedDict[int, np.ndarray] = OrderedDict()
        self._clips: dict[tuple[int, int], dict] = {}
        self._words: dict[int, list] = {}

    # ---- text side ---------------------------------------------------------------------------
    def _sequence(self, j: int) -> dict:
        if j not in self._seq:
            c = self.col
            lo, hi = int(c.starts[j]), int(c.starts[j + 1])
            ids = c.token_id[lo:hi].long()
            mod = c.modality[lo:hi]
            it = self.items[j]
            seq = self.bb.sequence(it.text, it.instruct)
            toks = self.bb.token_text(ids)
            # a text line over the non-speech positions (specials read as spaces) with each one's span
            spans, text = [], ""
            for t, m in zip(toks, mod.tolist(), strict=True):
                s = t if m == TEXT else " "
                spans.append((len(text), len(text) + len(s)) if m != SPEECH else (-1, -1))
                text += s if m != SPEECH else ""
            instruct = self.bb.instruct_mask(seq)
            self._seq[j] = {
                "toks": toks,
                "mod": mod,
                "spans": spans,
                "line": text.lower(),
                "instruct": torch.cat([instruct, torch.zeros(hi - lo - len(instruct), dtype=torch.bool)]),
                "n_speech": int((mod == SPEECH).sum()),
                "text_laugh": any(tag in it.text.lower() for tag in LAUGH_TAGS),
                "instruct_words": sorted(set(_WORD.findall((it.instruct or "").lower()))),
            }
        return self._seq[j]

    def context(self, idx: int) -> dict:
        """Everything known about position `idx` without audio."""
        c = self.col
        j, p = int(c.item_of[idx]), int(c.pos[idx])
        s = self._sequence(j)
        mod = int(c.modality[idx])
        ctx = {
            "idx": int(idx),
            "item": int(c.items[j]),
            "pos": p,
            "modality": MODALITIES[mod],
            "token": s["toks"][p],
            "text_laugh": s["text_laugh"],
            "instruct_words": s["instruct_words"],
            "instruct": bool(s["instruct"][p]),
            "word": "",
            "before": "",
            "word_initial": False,
            "word_final": False,
        }
        if mod == SPEECH:
            ctx["before"] = _speech_before(s["toks"], s["mod"], p)
            t = float(c.time[idx])
            dur = s["n_speech"] / self.bb.token_rate
            ctx |= {"time": round(t, 3), "t_start": t, "t_end": dur - t - 1 / self.bb.token_rate}
            ctx["window"] = s["line"].strip() + f"  ▸ speech at {t:.2f} s"
            return ctx
        a, b = s["spans"][p]
        line = s["line"]
        ctx["window"] = (line[max(0, a - 32) : a] + "«" + line[a:b] + "»" + line[b : b + 8]).replace("\n", " ")
        ctx["before"] = line[max(0, a - CONTEXT) : a]  # the text just before this token
        for m in _WORD.finditer(line):
            if m.start() <= a < m.end() or (a < m.end() and b > m.start()):
                ctx |= {"word": m.group(), "word_initial": a == m.start(), "word_final": b >= m.end()}
                break
        return ctx

    # ---- audio side --------------------------------------------------------------------------
    def wave(self, j: int) -> np.ndarray:
        if j not in self._waves:
            self._waves[j] = item_audio(self.items[j], self.bb.sample_rate)
            if self._waves[j] is None:
                self._waves[j] = self.bb.decode(self.items[j].tokens)
            if len(self._waves) > 64:
                self._waves.popitem(last=False)
        return self._waves[j]

    def tracks(self, j: int) -> Tracks:
        if j not in self._tracks:
            self._tracks[j] = analyse(self.wave(j), self.bb.sample_rate, self.laughter)
        return self._tracks[j]

    def words(self, j: int) -> list:
        """ASR words of utterance j, times in the utterance (transcribed once, whole)."""
        if j not in self._words:
            self._words[j] = self.models.asr.transcribe(self.wave(j), self.bb.sample_rate)
        return self._words[j]

    def centre(self, idx: int) -> float:
        """Clip centre (s): the middle of the speech token."""
        return float(self.col.time[idx]) + 0.5 / self.bb.token_rate

    def clip(self, idx: int) -> tuple[np.ndarray, bool]:
        return cut_clip(self.wave(int(self.col.item_of[idx])), self.bb.sample_rate, self.centre(idx), self.clip_s)

    def measures(self, idxs: list[int]) -> list[dict | None]:
        """Clip measures at each speech position (None elsewhere); model measures batched."""
        keys = []
        for idx in idxs:
            is_speech = int(self.col.modality[idx]) == SPEECH
            keys.append((int(self.col.item_of[idx]), round(float(self.col.time[idx]) * 1000)) if is_speech else None)
        todo: dict[tuple[int, int], int] = {}
        for k, idx in zip(keys, idxs, strict=True):
            if k and k not in self._clips:
                todo.setdefault(k, idx)
        asr = self.models.asr is not None
        # each utterance's audio is decoded once for its frame tracks and its transcript together
        new = sorted({k[0] for k in todo if k[0] not in self._tracks or (asr and k[0] not in self._words)})
        if self.progress and len(new) > 8:  # a long first pass (e.g. the random pool): show it
            from tqdm.auto import tqdm

            new = tqdm(new, desc="analyse utterances" + (" (ASR)" if asr else ""), unit="utt", leave=False)
        for j in new:
            self.tracks(j)
            if asr:
                self.words(j)
        for k, idx in todo.items():
            self._clips[k] = clip_measures(self.tracks(k[0]), self.centre(idx), self.clip_s)
            if asr:
                self._clips[k] |= clip_words(self.words(k[0]), self.centre(idx), self.clip_s)
        if (self.models.laughter is not None or self.models.gender is not None) and todo:  # per-clip models
            clips = [self.clip(idx)[0] for idx in todo.values()]
            for k, extra in zip(todo, self.models.measure(clips, self.bb.sample_rate), strict=True):
                self._clips[k] |= extra
        return [dict(self._clips[k]) if k else None for k in keys]


def finite(x) -> float | None:
    """A JSON-friendly float (None for nan/inf)."""
    return None if x is None or not math.isfinite(float(x)) else round(float(x), 4)

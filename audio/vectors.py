"""Steering vectors on a TTS backbone: the policy `ttslens.sae.vectors.train` trains on, and the audio rewards.

A prompt is a text to speak (a .jsonl record may add `instruct` and `voice`, a named voice of the backbone). A
completion is the generated speech; its log-probability is the backbone's own (`speech_logprobs`: per frame, every
codebook and the stop). Rewards registered here read the decoded audio through `ttslens.audio.measures`:

    laughter   the laughter detector's probability (laughter_logodds: its log-odds, a denser signal for RL when
               almost no sample laughs)
    male       P(male): the mean of the pitch and the pitch-free timbre measures (pitch alone where the backbone
               has no timbre classifier); female = 1 − male; NaN (the sample skipped) when nothing is voiced
    slower     voiced duration in seconds (within a group the text is fixed, so longer = slower); faster = −slower
    content    text match: how much the speech tokens say this text rather than another, judged by the clean
               backbone (nats per target; `ttslens.audio.steering.evaluate.text_match`), offline and cheap
    asr        1 − WER of a Whisper transcript (faster-whisper tiny.en; ~1 s per clip on a CPU)

so `laughter+content` asks for laughter while the words are still said. Custom callables get
f(text, sample, backbone=..., **record), `sample` with `.wave`, `.sample_rate`, `.tokens`, `.measures()`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ttslens.audio.backbones.base import SCOPES, Intervention, TTSBackbone, scope_mask
from ttslens.sae.errors import BadInput
from ttslens.sae.vectors import rewards

FALLBACK_OTHER = "the weather was cold and grey all week."


@dataclass
class SpeechSample:
    """One generated utterance (decoded on first use)."""

    text: str
    tokens: torch.Tensor  # [T, C]
    stopped: bool
    instruct: str | None
    prompt: object
    bb: TTSBackbone = field(repr=False)
    _wave: np.ndarray | None = None
    _measures: object = None

    @property
    def wave(self) -> np.ndarray:
        if self._wave is None:
            self._wave = self.bb.decode(self.tokens) if len(self.tokens) else np.zeros(0, np.float32)
        return self._wave

    @property
    def sample_rate(self) -> int:
        return self.bb.sample_rate

    def measures(self):
        """`ttslens.audio.measures.measure` of the decoded audio, with the laughter detector and the timbre
        gender classifier fitted for this backbone (once per sample)."""
        if self._measures is None:
            from ttslens.audio.measures import laughter_detector_for, measure, timbre_gender_for

            try:
                timbre = timbre_gender_for(self.bb)
            except Exception:  # a backbone without a fitted timbre classifier: pitch alone
                timbre = None
            self._measures = measure(self.wave, self.sample_rate, laughter_detector_for(self.bb), gender_model=timbre)
        return self._measures


class TTSPolicy:
    """A TTS backbone as a policy: batched sampling under interventions, differentiable speech log-probs."""

    default_scope = "generated"

    def __init__(self, bb: TTSBackbone) -> None:
        self.bb, self.d, self.n_layers, self.device = bb, bb.d_model, bb.n_layers, bb.device
        self.name = getattr(bb, "spec", None) or bb.name
        self.modules = [m for m in vars(bb).values() if isinstance(m, torch.nn.Module)]
        for m in self.modules:
            m.requires_grad_(False)

    def parameters(self):
        for m in self.modules:
            yield from m.parameters()

    def layers(self):
        return self.bb.layers()

    def check_scope(self, scope: str) -> None:
        if scope not in SCOPES:
            raise BadInput(f"unknown vector scope {scope!r} for a TTS backbone: use one of {', '.join(SCOPES)}")

    def where(self, scope: str):
        """The positions of `scope` for the hook context of a teacher-forced pass (path patching's edits)."""
        return lambda ctx: scope_mask(scope, ctx.modality, ctx.prompt, ctx.times)

    def edits(self, vec, scope: str, strength: float = 1.0) -> list[Intervention]:
        return interventions_of(vec, scope, strength)

    def sample_kwargs(self, cfg) -> dict:
        return {"temperature": cfg.temperature}

    def _prompt(self, item):
        voice = (getattr(item, "info", None) or {}).get("voice")
        if not voice:
            return None
        from ttslens.audio.voices import named_voice

        return named_voice(self.bb, voice)

    @torch.no_grad()
    def sample(self, item, n: int, seeds: Sequence[int], edits=(), temperature: float = 1.0) -> list[SpeechSample]:
        text = getattr(item, "prompt", item)
        instruct = (getattr(item, "info", None) or {}).get("instruct")
        prompt = self._prompt(item)
        # unfiltered (no top-k / top-p): the policy gradient scores the model's whole distribution, so it must be
        # the one sampled
        gens = self.bb.generate([text] * n, instruct=instruct, prompt=prompt, interventions=edits, seed=list(seeds),
                                temperature=temperature, top_k=0, top_p=1.0)  # fmt: skip
        return [SpeechSample(text, g.tokens, g.stopped, instruct, prompt, self.bb) for g in gens]

    def completion(self, item) -> SpeechSample:
        """The likelihood objective's target: a record's `audio` file, tokenised by the backbone."""
        path = (item.info or {}).get("audio") or item.target
        if not path:
            raise BadInput("--objective likelihood on a TTS backbone needs target speech: an `audio` path per record")
        import soundfile as sf

        try:
            wave, sr = sf.read(str(path), dtype="float32")
        except Exception as e:
            raise BadInput(f"cannot read the target audio {path}: {e}") from None
        tokens = self.bb.as_tokens(self.bb.encode_audio(wave, sr))
        return SpeechSample(item.prompt, tokens, True, item.info.get("instruct"), self._prompt(item), self.bb)

    def token_logprobs(self, comps: Sequence[SpeechSample], edits=(), also=()) -> tuple[torch.Tensor, torch.Tensor]:
        """log p [B, T + 1] of each sample's frames and (when it stopped) its stop, with the mask."""
        tfs = self.bb.teacher_forced_batch(
            [(c.text, c.tokens, c.instruct, c.prompt) for c in comps], interventions=edits, grad=True, also=also
        )
        rows = []
        for c, tf in zip(comps, tfs, strict=True):
            lp, _ = self.bb.speech_logprobs(tf, c.tokens)
            rows.append(lp if c.stopped else lp[:-1])
        T = max(1, max(len(r) for r in rows))
        lp_BT = torch.zeros((len(rows), T), device=rows[0].device)
        mask_BT = torch.zeros((len(rows), T), dtype=torch.bool, device=rows[0].device)
        for b, r in enumerate(rows):
            lp_BT[b, : len(r)] = r
            mask_BT[b, : len(r)] = True
        return lp_BT, mask_BT

    @torch.no_grad()
    def residual_rms(self, items, layers) -> float:
        """RMS of the residual coordinates after `layers` over one generated utterance of the first prompts."""
        sq, n = 0.0, 0
        for it in items[:2]:
            s = self.sample(it, 1, [0])[0]
            tf = self.bb.teacher_forced_batch([(s.text, s.tokens, s.instruct, s.prompt)], layers=list(layers))[0]
            for h in tf.hidden.values():
                sq, n = sq + float(h.float().pow(2).sum()), n + h.numel()
        return math.sqrt(sq / max(n, 1))

    def reward_args(self, item, comp: SpeechSample) -> tuple:
        return item.prompt, comp, {"backbone": self.bb}

    def lens(self):
        """(final norm, the speech head, row names) for the logit lens: the norm is the one of the decoder stack
        whose layers the vectors edit."""
        norm = None
        for m in self.modules:
            for sub in m.modules():
                if getattr(sub, "layers", None) is self.bb.layers() and isinstance(
                    getattr(sub, "norm", None), torch.nn.Module
                ):
                    norm = sub.norm
        return norm, self.bb.speech_logits, self.bb.head_names


# ---- the audio rewards -------------------------------------------------------------------------------------------
def _p_male(sample: SpeechSample) -> float:
    m = sample.measures()
    vals = [v for v in (m.p_male, m.p_male_timbre) if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals and math.isfinite(m.p_male) else math.nan


def _laughter(prompt, sample, **_) -> float:
    return float(sample.measures().laughter)


def _laughter_logodds(prompt, sample, **_) -> float:
    """log(p / (1 − p)) of the laughter probability, clipped to ±12: dense where p itself is ~0 everywhere."""
    p = min(max(float(sample.measures().laughter), 6e-6), 1 - 6e-6)
    return math.log(p / (1 - p))


def _content(prompt, sample, backbone=None, other: str | None = None, **_) -> float:
    from ttslens.audio.steering.evaluate import text_match

    return text_match(sample.bb, prompt, other or FALLBACK_OTHER, sample.tokens)


_ASR = {}


def _asr(prompt, sample, **_) -> float:
    from ttslens.audio.measures.asr import ASR, transcript
    from ttslens.audio.measures.wer import wer

    if "model" not in _ASR:
        _ASR["model"] = ASR.load("tiny.en")
    words = _ASR["model"].transcribe(sample.wave, sample.sample_rate)
    return 1.0 - min(1.0, wer(prompt, transcript(words)))


def register_audio_rewards() -> None:
    rewards.register("laughter", lambda: _laughter)
    rewards.register("laughter_logodds", lambda: _laughter_logodds)
    rewards.register("male", lambda: lambda prompt, s, **_: _p_male(s))
    rewards.register("female", lambda: lambda prompt, s, **_: 1.0 - _p_male(s))
    rewards.register("slower", lambda: lambda prompt, s, **_: float(s.measures().voiced_s))
    rewards.register("faster", lambda: lambda prompt, s, **_: -float(s.measures().voiced_s))
    rewards.register("content", lambda: _content)
    rewards.register("asr", lambda: _asr)


register_audio_rewards()


def vector_interventions(bb: TTSBackbone, specs, window=None) -> list[Intervention]:
    """Interventions of trained vectors ("DIR", "DIR=STRENGTH", (DIR, STRENGTH) or a list), each at the scope it
    was trained with (and in `window`, seconds of generated speech, when given)."""
    from ttslens.sae.vectors.vectors import check_fits, load_cached, parse_vector_specs

    out = []
    for path, strength in parse_vector_specs(specs):
        vec, meta = load_cached(path)
        check_fits(vec, meta, bb.d_model, bb.n_layers, getattr(bb, "spec", None) or bb.name)
        scope = meta.get("scope") or "generated"
        if scope not in SCOPES:
            raise BadInput(f"vectors {path} were trained for scope {scope!r}, which a TTS backbone does not have")
        out += interventions_of(vec.to(bb.device), scope, strength, window)
    return out


def interventions_of(vec, scope: str, strength: float = 1.0, window=None) -> list[Intervention]:
    """The backbone edits of a set of vectors: h' = h + strength · scale(h) · v_L at the positions of `scope`."""
    return [Intervention(x, (lambda rows, x=x: vec.add(x, rows, strength)), scope, window=window) for x in vec.layers]


# ---- the commands ------------------------------------------------------------------------------------------------
def _policy(name: str, model_dir: str = "", device: str = "cpu") -> TTSPolicy:
    from ttslens.audio.backbones.registry import backbone_spec, load_backbone

    return TTSPolicy(load_backbone(backbone_spec(name, model_dir), device=device))


def run_train(cfg) -> dict:
    """`ttslens vectors train`: on --backbone, or a text LM (`ttslens.sae.vectors.commands.run_train`)."""
    from ttslens.sae.vectors import commands

    if not cfg.backbone:
        return commands.run_train(cfg)
    return commands.run_train(cfg, lambda: _policy(cfg.backbone, cfg.model_dir, cfg.device))


def _backbone_of(cfg) -> str:
    from ttslens.sae.vectors.vectors import load_vectors

    if cfg.backbone or cfg.model:
        return cfg.backbone
    meta = load_vectors(cfg.vectors)[1] if cfg.vectors else {}
    return meta.get("backbone") or ""


def run_readout(cfg) -> dict:
    from ttslens.sae.vectors import commands

    name = _backbone_of(cfg)
    return commands.readout(cfg, _policy(name, device=cfg.device)) if name else commands.run_readout(cfg)


def run_analyze(cfg) -> dict:
    """`ttslens vectors analyze`: path patching on a TTS backbone, or the text-LM analyses."""
    from ttslens.sae.vectors import commands

    name = _backbone_of(cfg)
    return commands.analyze(cfg, _policy(name, device=cfg.device)) if name else commands.run_analyze(cfg)


def run_apply(cfg) -> dict:
    """`ttslens vectors apply` on a TTS backbone: the steered and the unsteered speech of each text, same seed."""
    from ttslens.audio.commands import write_wav
    from ttslens.sae.vectors import commands
    from ttslens.sae.vectors.vectors import check_fits, load_vectors

    name = _backbone_of(cfg)
    if not name:
        return commands.run_apply(cfg)
    if not cfg.prompt:
        raise BadInput("give the text to speak: --prompt TEXT")
    vec, meta = load_vectors(cfg.vectors)
    policy = _policy(name, device=cfg.device)
    check_fits(vec, meta, policy.d, policy.n_layers, policy.name)
    scope = cfg.scope or meta.get("scope") or policy.default_scope
    policy.check_scope(scope)
    vec = vec.to(policy.device)
    out, rows = Path(cfg.out), []
    for i, text in enumerate(cfg.prompt):
        stem = out.with_suffix("") if len(cfg.prompt) == 1 else out.with_suffix("").with_name(f"{out.stem}_{i}")
        rec = {"text": text}
        for what, edits in (("base", []), ("steered", policy.edits(vec, scope, cfg.strength))):
            s = policy.sample(text, 1, [cfg.seed], edits, cfg.temperature)[0]
            path = stem.with_suffix(".base.wav") if what == "base" else stem.with_suffix(".wav")
            write_wav(path, s.wave, s.sample_rate)
            m = s.measures()
            rec[what] = {"wav": str(path), "seconds": round(len(s.wave) / s.sample_rate, 3),
                         "voiced_s": round(m.voiced_s, 3), "p_male": _round(m.p_male),
                         "p_male_timbre": _round(m.p_male_timbre), "laughter": _round(m.laughter)}  # fmt: skip
        rows.append(rec)
    return {"vectors": cfg.vectors, "strength": cfg.strength, "scope": scope, "outputs": rows}


def _round(x):
    return None if x is None or not math.isfinite(x) else round(float(x), 4)

"""Controlled synthesis, the Python API the CLI and the app call.

    from ttslens.audio.steering.api import SteerableTTS
    tts = SteerableTTS.load("demo", sae="runs/demo_l3")
    out = tts.synthesize("that was funny.", steer={"laughter": 1.5}, seed=0)
    out.wave, out.sample_rate, out.tokens, out.steered      # + out.activations with record=True

`steer` takes presets (`laughter`, `gender` + male / − female, `rate` + faster / − slower), feature ids
(`361`, `361:clamp`, `361:ablate`, `361:direction`, `3/361` for the SAE at layer 3) and label searches
(`"female voice"`: the best-scored feature whose auto-interp label contains the words), each with its
strength alpha. Every edit becomes an `ttslens.audio.backbones.base.Intervention` at its SAE's layer, applied by a
forward hook at the scoped positions under the KV cache; the same seed gives the same sample with and
without steering, so outputs differ only by the edit.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ttslens.audio.backbones.base import SCOPES, Intervention, TTSBackbone, TTSSequence
from ttslens.audio.steering.presets import (
    PRESETS,
    PresetConfig,
    check_trained_on,
    preset_edits,
    read_presets,
    resolve_presets,
)
from ttslens.audio.voices import VoicePrompt, named_voice
from ttslens.sae.errors import BadInput
from ttslens.sae.notes import note
from ttslens.sae.steering import FeatureEdit, LoadedSAE, ResolvedEdit, SAESteerer, SteerRequest, load_steer_saes


def window_of(values: list[float]) -> tuple[float, float] | None:
    """--window T0 T1 → (t0, t1); [] → None."""
    if not values:
        return None
    if len(values) != 2:
        raise BadInput(f"--window takes two times in seconds, T0 T1 (got {len(values)} values)")
    return float(values[0]), float(values[1])


class Synthesis(NamedTuple):
    wave: np.ndarray  # float32 at sample_rate
    sample_rate: int
    tokens: torch.Tensor  # [T, C] speech tokens
    stopped: bool  # False: the length limit cut it
    sequence: TTSSequence  # prefix + generated speech
    steered: torch.Tensor  # [N] bool over `sequence`: positions an edit touched
    edits: list[ResolvedEdit]
    activations: dict[int, torch.Tensor] | None  # layer → [N, F] SAE latents (record=True)
    seconds: float  # generation wall time of its batch (decode excluded)


class SteerableTTS(SAESteerer):
    """A backbone with one or more SAEs (one per layer) and their presets and labels."""

    named = f"a preset ({', '.join(PRESETS)})"

    def __init__(self, backbone: TTSBackbone, saes: Sequence[LoadedSAE] = ()):
        self.bb, self.saes = backbone, list(saes)
        self._presets: dict[int, dict | None] = {}

    @classmethod
    def load(
        cls,
        backbone: str | TTSBackbone = "demo",
        sae: str | Path | Sequence | None = None,
        device: str = "cpu",
        dtype: str = "float32",
    ) -> SteerableTTS:
        """`backbone`: a name, a directory or a loaded backbone (then `device`/`dtype` are its own)."""
        from ttslens.audio import load_backbone

        bb = load_backbone(backbone, device=device, dtype=dtype) if isinstance(backbone, str) else backbone
        loaded = load_steer_saes(sae, bb.d_model, bb.n_layers, f"backbone {bb.name}", str(bb.device))
        for s in loaded:
            check_trained_on(s.info, bb, s.path)
        return cls(bb, loaded)

    # ---- what a steering request names -------------------------------------------------------
    def saved_presets(self, s: LoadedSAE) -> dict | None:
        """The SAE's presets.json when current (read once: checking it hashes the weights)."""
        if s.layer not in self._presets:
            self._presets[s.layer] = read_presets(s.path)
        return self._presets[s.layer]

    def presets(self, s: LoadedSAE) -> dict:
        """The SAE's saved presets, computed (and saved beside it) on first use."""
        if self.saved_presets(s) is None:
            note(f"resolving steering presets for {s.path} (saved to {s.path}/presets.json)")
            self._presets[s.layer] = resolve_presets(
                PresetConfig(sae=str(s.path), progress=False, device=str(self.bb.device))
            )
        return self._presets[s.layer]

    def mean_act(self, s: LoadedSAE, f: int) -> float:
        """Z of feature f: its mean activation when active (labels, else the presets' probe pass; else 1)."""
        rec = self.labels(s).get(f)
        if rec and rec.get("mean_act"):
            return float(rec["mean_act"])
        stats = (self.saved_presets(s) or {}).get("mean_act")
        if stats and stats[f] > 0:
            return float(stats[f])
        return 1.0

    def resolve_named(self, r: SteerRequest) -> list[ResolvedEdit] | None:
        """Presets: their saved features, each pushed by alpha (see `ttslens.audio.steering.presets.preset_edits`)."""
        if r.target not in PRESETS:
            return None
        if r.op != "add":
            raise BadInput(f"preset {r.target} takes a strength only (e.g. {r.target}=2), not :{r.op}")
        s = self.sae_at(r.layer)
        preset = self.presets(s)["presets"][r.target]
        if preset.get("skipped"):
            raise BadInput(f"no {r.target} preset for this SAE ({preset['skipped']}): steer a feature id or label")
        return [
            ResolvedEdit(s.layer, FeatureEdit(f, "add", a, z), f"preset {r.target}", self.label(s, f))
            for f, a, z in preset_edits(preset, r.alpha)
        ]

    def interventions(
        self,
        edits: list[ResolvedEdit],
        scope: str = "speech",
        replace: bool = False,
        window: tuple[float, float] | None = None,
    ) -> list[Intervention]:
        """One Intervention per steered layer, applied at the positions in `scope` (and `window`)."""
        if scope not in SCOPES:
            raise BadInput(f"unknown steering scope {scope!r}: use one of {', '.join(SCOPES)}")
        steers = self.steers(edits, replace).items()
        return [Intervention(layer, steer, scope, window=window) for layer, steer in steers]

    # ---- synthesis ---------------------------------------------------------------------------------
    def synthesize(self, text: str, steer=None, seed: int = 0, **kwargs) -> Synthesis:
        """Speak `text` with the edits `steer` names; `record=True` adds the SAE latents at every position.
        Keywords: instruct, voice, scope, window, replace, record, temperature, top_k, top_p, max_seconds, vectors."""
        return self.synthesize_batch([text], steer, [seed], **kwargs)[0]

    def synthesize_batch(
        self,
        texts: Sequence[str],
        steer=None,
        seeds: Sequence[int] | int = 0,
        instruct: str | None = None,
        voice=None,
        scope: str = "speech",
        window: tuple[float, float] | None = None,
        replace: bool = False,
        record: bool = False,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        max_seconds: float = 0.0,
        vectors=None,
    ) -> list[Synthesis]:
        """Several texts in one batched generation (each with its seed; one int = the same seed for all),
        one edit set. `window=(t0, t1)` limits the edits to speech between t0 and t1 seconds. `voice`: a voice
        name of the backbone (`bb.voices()`) or a prompt (`ttslens.audio.voices.prompt_from_wav`, or
        (text, tokens)) whose voice the speech continues; the prompt's own speech is never steered. Sampling
        settings left None are the backbone's own. `vectors`: trained steering vectors added too ("DIR",
        "DIR=STRENGTH", (DIR, STRENGTH) or a list; `ttslens vectors train`), each at the scope it was trained with."""
        seeds = [seeds] * len(texts) if isinstance(seeds, int) else list(seeds)
        if len(seeds) != len(texts):
            raise BadInput(f"{len(texts)} texts but {len(seeds)} seeds: give one seed per text or a single seed")
        for text in texts:
            if not text or not text.strip():
                raise BadInput("empty text: give the words to speak")
        edits = self.resolve(steer)
        prompt = named_voice(self.bb, voice) if isinstance(voice, str) and voice else voice or None
        prompt = prompt.as_prompt() if isinstance(prompt, VoicePrompt) else prompt
        lead = len(self.bb.as_tokens(prompt[1])) / self.bb.token_rate if prompt else 0.0
        if window:  # the window counts from the start of the new speech, after the prompt's
            window = (window[0] + lead, window[1] + lead)
        ivs = self.interventions(edits, scope, replace, window)
        if vectors:
            from ttslens.audio.vectors import vector_interventions

            ivs += vector_interventions(self.bb, vectors, window)
        layers = [s.layer for s in self.saes] if record else []
        t0 = time.perf_counter()
        gens = self.bb.generate(
            list(texts),
            instruct=instruct or None,
            prompt=prompt,
            interventions=ivs,
            seed=seeds,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            max_tokens=int(max_seconds * self.bb.token_rate) or None,
            record=layers,
        )
        seconds = time.perf_counter() - t0
        out = []
        for g in gens:
            wave = np.nan_to_num(np.asarray(self.bb.decode(g.tokens), dtype=np.float32))
            steered = torch.zeros(len(g.sequence), dtype=torch.bool)
            for iv in ivs:
                steered |= iv.mask(g.sequence)
            if window and ivs and not steered.any():
                dur = len(g.tokens) / self.bb.token_rate
                span = f"{window[0] - lead:g}-{window[1] - lead:g} s"
                note(f"nothing was steered: the window {span} lies outside the {dur:.2f} s utterance")
            acts = None
            if record:
                with torch.no_grad():
                    acts = {s.layer: s.sae.encode(g.hidden[s.layer].to(self.bb.device)).cpu() for s in self.saes}
            out.append(
                Synthesis(wave, self.bb.sample_rate, g.tokens, g.stopped, g.sequence, steered, edits, acts, seconds)
            )
        return out


_CACHE: dict[tuple, SteerableTTS] = {}


def synthesize(
    text: str, steer=None, seed: int = 0, backbone: str = "demo", sae=None, device: str = "cpu", **kwargs
) -> Synthesis:
    """One call: load (once, cached) the backbone and SAE(s), then `SteerableTTS.synthesize`."""
    key = (backbone, tuple(map(str, [sae] if isinstance(sae, str | Path) else sae or [])), device)
    if key not in _CACHE:
        _CACHE[key] = SteerableTTS.load(backbone, sae, device=device)
    return _CACHE[key].synthesize(text, steer, seed, **kwargs)

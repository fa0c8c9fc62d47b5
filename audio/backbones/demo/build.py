"""`ttslens demo build`: corpus (espeak-ng) → codec → laughter detector → gender classifier → demo LM → assets.

Every stage caches its result under `--workdir`, so an interrupted build continues where it stopped;
the assets directory is replaced only at the end, in one rename, so a failed build never leaves a
half-written backbone behind.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from ttslens.audio.backbones.demo.backbone import ASSETS
from ttslens.audio.backbones.demo.lm import (
    FIRST,
    DemoLMConfig,
    DepthHead,
    Example,
    build_lm,
    heldout_loss,
    lm_state,
    load_lm_state,
    train_lm,
)
from ttslens.audio.backbones.demo.phones import END, UNK, frame_phonemes, run_starts, track_columns
from ttslens.audio.backbones.demo.tokenizer import PHONE_COLUMNS, DemoTokenizer, pack_codes
from ttslens.sae.errors import BadInput, FileClash
from ttslens.sae.files import atomic_path, atomic_write_json

SMALL_LM = DemoLMConfig(
    d_model=64, n_layers=2, n_heads=2, n_kv_heads=1, d_ff=128, steps=30, batch_tokens=2048, warmup=5
)


@dataclass
class DemoBuildConfig:
    """Build the embedded demo TTS backbone from scratch: synthesise a corpus with espeak-ng (known
    voice, gender, rate and laughter for every utterance), fit the speech codec and a laughter
    detector on it, train the demo LM, and write the assets the `demo` backbone loads."""

    out: str = ""
    """Assets directory to write (default: the package's own, audio/demo/assets; WORKDIR/assets with --small)."""
    workdir: str = "runs/demo-build"
    """Build cache (corpus audio, codec, tokens, LM); re-running the same command resumes from it."""
    small: bool = False
    """A few-minute build for CI and smoke tests: a handful of utterances, a tiny codec and LM."""
    utterances: int = 24000
    """Corpus size (utterances), held-out ones included."""
    heldout: int = 300
    """Utterances kept out of codec, detector and LM training (for evaluation)."""
    ship: int = 3000
    """Corpus utterances shipped with the assets (every held-out one, then the first training ones): the
    speech tokens that harvesting, labelling and the named voices read. The LM trains on the whole corpus."""
    seed: int = 0
    """Seed for the corpus, the codec, the detector and the LM."""
    lm: DemoLMConfig = field(default_factory=DemoLMConfig)
    """The LM's size and training."""
    overwrite: bool = False
    """Replace an existing assets directory (the packaged one is always replaceable)."""

    def __post_init__(self) -> None:
        if isinstance(self.lm, dict):
            self.lm = DemoLMConfig(**self.lm)
        if self.small:
            self.utterances, self.heldout, self.lm = min(self.utterances, 40), min(self.heldout, 8), SMALL_LM
        if self.utterances <= self.heldout + 1:
            raise BadInput(f"--utterances {self.utterances} leaves nothing to train on after --heldout {self.heldout}")


def _codec_config(cfg: DemoBuildConfig):
    from ttslens.audio.backbones.demo.codec import CodecConfig

    if cfg.small:
        return CodecConfig(seed=cfg.seed, stages=2, codebook_size=32, kmeans_iters=8, griffin_lim_iters=8)
    return CodecConfig(seed=cfg.seed)


LM_FORMAT = 3  # bumped when the LM's inputs change, so a cached LM of another layout is never reused


def _example(tok: DemoTokenizer, instruct: str | None, texts: list[str], speech: list, hidden: int = 0) -> Example:
    """`<sos> [instruct <endofprompt>] text… <task> speech…`: several (text, speech) parts are joined as a voice
    prompt and its continuation are (texts with a space, speech back to back). The phonemes of the first
    `hidden` parts are replaced by `<unk>`, as those of a prompt read from a WAV."""
    ids = [tok.sos]
    if instruct:
        ids += [*tok.encode_text(instruct), tok.eop]
    lo = len(ids)
    for i, text in enumerate(texts):
        ids += ([tok.index[" "]] if i else []) + tok.encode_text(text)
    hi = len(ids)
    ids.append(tok.task)
    frames, starts = [], []
    unk = tok.phone_index[UNK]
    for i, t in enumerate(speech):
        t = torch.as_tensor(t, dtype=torch.long).clone()
        if i < hidden:
            t[:, :PHONE_COLUMNS] = unk
        s = run_starts(t[:, :PHONE_COLUMNS], unk)
        if i >= hidden and len(s):
            s[0] = FIRST
        frames.append(t)
        starts.append(s)
    return Example(torch.tensor(ids, dtype=torch.long), torch.cat(frames), (lo, hi), torch.cat(starts))


def _examples(tok: DemoTokenizer, utts, tokens) -> list[Example]:
    return [_example(tok, u.instruct, [u.text], [t]) for u, t in zip(utts, tokens, strict=True)]


def _pairs(
    tok: DemoTokenizer, utts, tokens, share: float, unknown: float, max_positions: int, seed: int
) -> list[Example]:
    """`share` x len(utts) extra examples: a plain utterance (the prompt) followed by another utterance of the
    same voice, as `sequence(text, prompt=...)` lays them out; in a share `unknown` of them the prompt's
    phonemes are hidden."""
    rng = np.random.default_rng(seed)
    by_voice: dict[str, list[int]] = {}
    for i, u in enumerate(utts):
        by_voice.setdefault(u.voice, []).append(i)
    plain = [i for i, u in enumerate(utts) if not u.instruct and not u.laughter and not u.spontaneous]
    out = []
    for i in rng.permutation(plain)[: int(share * len(utts))].tolist():
        j = int(rng.choice(by_voice[utts[i].voice]))
        hidden = int(rng.random() < unknown)
        if j == i or utts[j].instruct:
            continue
        e = _example(tok, None, [utts[i].text, utts[j].text], [tokens[i], tokens[j]], hidden)
        if len(e.prefix) + len(e.speech) + 1 <= max_positions:
            out.append(e)
    return out


def phoneme_inventory(utts) -> list[str]:
    """UNK, END, then every phoneme name of the corpus tracks, sorted."""
    return [UNK, END, *sorted({p for u in utts for p, _ in u.phones})]


def with_phonemes(utts, codes: list[torch.Tensor], tok: DemoTokenizer, frame_rate: float) -> list[torch.Tensor]:
    """Each utterance's frames: (phoneme, next phoneme) columns from its espeak-ng track, then its codec codes."""
    out = []
    for u, c in zip(utts, codes, strict=True):
        cols = track_columns(frame_phonemes(u.phones, len(c), frame_rate), tok.phone_index)
        out.append(torch.cat([cols, c.long()], dim=1))
    return out


def _stage(name: str, progress: bool) -> float:
    if progress:
        print(f"[demo build] {name}", file=sys.stderr, flush=True)
    return time.perf_counter()


def command_line(cfg: DemoBuildConfig) -> str:
    """The `ttslens demo build` command that reproduces `cfg` (flags for non-default fields)."""
    base = DemoBuildConfig(small=cfg.small)
    flags = []
    for name, value in {**asdict(cfg), **asdict(cfg.lm)}.items():
        default = {**asdict(base), **asdict(base.lm)}.get(name)
        if name != "lm" and value != default:
            flags.append(f"--{name.replace('_', '-')}" + ("" if value is True else f" {value}"))
    return " ".join(["ttslens demo build", *(["--small"] if cfg.small else []), *flags])


def build(cfg: DemoBuildConfig, progress: bool = True) -> dict:
    """Run (or resume) the whole build; returns the metrics also written to build.json."""
    import soundfile as sf

    from ttslens.audio.backbones.demo.codec import Codec, fit_codec
    from ttslens.audio.backbones.demo.corpus_gen import build_corpus
    from ttslens.audio.backbones.demo.espeak import require_espeak
    from ttslens.audio.backbones.demo.laughter import LaughterDetector, fit_laughter_detector
    from ttslens.audio.measures.timbre import TimbreGender, fit_timbre_gender

    require_espeak()
    work = Path(cfg.workdir)
    out = Path(cfg.out) if cfg.out else (work / "assets" if cfg.small else ASSETS)
    if cfg.out and out.exists() and any(out.iterdir()) and not cfg.overwrite:  # the default places are ours
        raise FileClash(f"{out} already holds files: pass --overwrite to replace it, or choose another --out")
    work.mkdir(parents=True, exist_ok=True)
    # the corpus, codec, tokens and detector depend on these; the LM is cached per LM config
    data_cfg = {k: getattr(cfg, k) for k in ("small", "utterances", "heldout", "seed")}
    stamp = work / "build_config.json"
    if stamp.exists() and json.loads(stamp.read_text()) != data_cfg:
        raise BadInput(f"{work} holds a build of another corpus ({stamp}): use another --workdir or delete it")
    atomic_write_json(stamp, data_cfg)
    t_all, metrics = time.perf_counter(), {}

    # 1. corpus -----------------------------------------------------------------------------------
    t = _stage(f"corpus: {cfg.utterances} utterances with espeak-ng", progress)
    utts = build_corpus(work / "corpus", cfg.utterances, seed=cfg.seed, progress=progress)
    n_train = len(utts) - cfg.heldout

    def wave(u):
        return sf.read(work / "corpus" / "wav" / f"{u.id}.wav", dtype="float32")[0]

    metrics["corpus"] = {
        "utterances": len(utts),
        "hours": round(sum(u.duration for u in utts) / 3600, 3),
        "laughing": sum(bool(u.laughter) for u in utts),
        "spontaneous": sum(u.spontaneous for u in utts),
        "with_instruct": sum(bool(u.instruct) for u in utts),
        "seconds": round(time.perf_counter() - t, 1),
    }

    # 2. codec and tokens -------------------------------------------------------------------------
    t = _stage("codec: fit and encode the corpus", progress)
    if (work / "codec" / "codec.json").exists():
        codec = Codec.load(work / "codec")
    else:
        codec = fit_codec((wave(u) for u in utts[:n_train]), _codec_config(cfg), progress=progress)
        codec.save(work / "codec")
    tok_path = work / "tokens.safetensors"
    if tok_path.exists():
        from safetensors.torch import load_file

        flat = load_file(str(tok_path))
        tokens = list(torch.split(flat["tokens"].long(), flat["lengths"].tolist()))
    else:
        paths = [str(work / "corpus" / "wav" / f"{u.id}.wav") for u in utts]
        tokens = [torch.from_numpy(t) for t in encode_files(codec, paths, progress)]
        with atomic_path(tok_path) as tmp:
            save_file(_flat(tokens), str(tmp))
    metrics["codec"] = {
        "codebooks": codec.n_codebooks,
        "codebook_size": codec.codebook_size,
        "frame_rate": codec.config.frame_rate,
    }
    metrics["codec_seconds"] = round(time.perf_counter() - t, 1)

    # 3. laughter detector, fitted on codec-decoded audio (what generated speech sounds like) ----
    t = _stage("laughter detector", progress)
    if (work / "laughter" / "report.json").exists():
        detector = LaughterDetector.load(work / "laughter")
        report = json.loads((work / "laughter" / "report.json").read_text())
    else:
        rng = np.random.default_rng(cfg.seed)
        laughing = [i for i in range(n_train) if utts[i].laughter]
        plain = [i for i in range(n_train) if not utts[i].laughter]
        pick = laughing[:800] + rng.permutation(plain)[: max(len(laughing[:800]), 16)].tolist()
        detector, fit = fit_laughter_detector(
            [codec.decode(tokens[i].numpy()) for i in pick],
            [utts[i].laughter for i in pick],
            seed=cfg.seed,
            progress=progress,
        )
        report = {k: round(v, 4) if isinstance(v, float) else v for k, v in fit._asdict().items()}
        detector.save(work / "laughter")
        atomic_write_json(work / "laughter" / "report.json", report)
    metrics["laughter_detector"] = report
    metrics["laughter_seconds"] = round(time.perf_counter() - t, 1)

    # 3b. gender from timbre (no pitch), fitted on codec-decoded audio of every voice, checked on held-out voices
    t = _stage("gender classifier (timbre)", progress)
    gender_dir = work / "gender"
    if (gender_dir / "gender.json").exists():
        gender = TimbreGender.load(gender_dir)
    else:
        per_voice: dict[str, list[int]] = {}
        for i in range(n_train):
            if not utts[i].laughter and len(per_voice.setdefault(utts[i].voice, [])) < 40:
                per_voice[utts[i].voice].append(i)
        pick = sorted(i for ids in per_voice.values() for i in ids)
        gender, _ = fit_timbre_gender(
            [codec.decode(tokens[i].numpy()) for i in pick],
            [utts[i].gender for i in pick],
            [utts[i].voice for i in pick],
            seed=cfg.seed,
        )
        gender.save(gender_dir)
    metrics["gender_classifier"] = gender.report
    metrics["gender_seconds"] = round(time.perf_counter() - t, 1)

    # 4. the LM -------------------------------------------------------------------------------------
    t = _stage(f"demo LM: {cfg.lm.steps} steps", progress)
    inventory = phoneme_inventory(utts[:n_train])
    tok = DemoTokenizer(max(codec.codebook_size, len(inventory)), PHONE_COLUMNS + codec.n_codebooks, inventory)
    tokens = with_phonemes(utts, tokens, tok, codec.config.frame_rate)
    examples = _examples(tok, utts, tokens)
    too_long = max(len(e.prefix) + len(e.speech) + 1 for e in examples)
    if too_long > cfg.lm.max_positions:
        raise BadInput(f"an utterance needs {too_long} positions > --max-positions {cfg.lm.max_positions}")
    model = build_lm(tok.vocab_size, cfg.lm, tok.pad, seed=cfg.seed)
    depth = DepthHead(cfg.lm.d_model, tok.n_codebooks, tok.codebook_size, first=PHONE_COLUMNS)
    key = json.dumps(asdict(cfg.lm) | {"format": LM_FORMAT}, sort_keys=True)
    lm_dir = work / ("lm-" + hashlib.sha1(key.encode()).hexdigest()[:10])
    if (lm_dir / "lm.safetensors").exists():
        from safetensors.torch import load_file

        load_lm_state(model, depth, load_file(str(lm_dir / "lm.safetensors")))
        history = json.loads((lm_dir / "history.json").read_text())
    else:
        history = [
            h._asdict()
            for h in train_lm(
                model,
                depth,
                examples[:n_train]
                + _pairs(
                    tok,
                    utts[:n_train],
                    tokens[:n_train],
                    cfg.lm.pairs,
                    cfg.lm.unknown_prompt,
                    cfg.lm.max_positions,
                    cfg.seed,
                ),
                cfg.lm,
                tok.speech_offset,
                tok.pad,
                (tok.stay, tok.next, tok.eos),
                seed=cfg.seed,
                progress=progress,
            )
        ]
        lm_dir.mkdir(exist_ok=True)
        with atomic_path(lm_dir / "lm.safetensors") as tmp:
            save_file(lm_state(model, depth), str(tmp))
        atomic_write_json(lm_dir / "history.json", history)
    args = (tok.speech_offset, tok.pad, (tok.stay, tok.next, tok.eos))
    metrics["lm"] = {
        "parameters": sum(p.numel() for p in [*model.parameters(), *depth.parameters()]),
        "phonemes": len(tok.phonemes),
        "final_train_loss": round(history[-1]["loss"], 4) if history else None,
        "tokens_per_s": round(history[-1]["tokens_per_s"]) if history else None,
        "heldout_loss": round(heldout_loss(model, depth, examples[n_train:], *args), 4),
        "seconds": round(time.perf_counter() - t, 1),
    }

    # 5. assets, replaced in one rename --------------------------------------------------------------
    metrics["build_seconds"] = round(time.perf_counter() - t_all, 1)
    info = {
        "command": command_line(cfg),
        "config": asdict(cfg) | {"out": str(out)},
        "metrics": metrics,
        "torch": torch.__version__,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "lm.json").write_text(model.config.to_json_string())
    shipped = lm_state(model, depth, head_ids=[tok.stay, tok.next, tok.eos])
    save_file({k: v if k == "lm_head.ids" else v.half() for k, v in shipped.items()}, str(tmp / "lm.safetensors"))
    (tmp / "tokenizer.json").write_text(json.dumps(tok.to_dict()))
    codec.save(tmp)
    detector.save(tmp)
    gender.save(tmp)
    shipped_ids = shipped_utterances(len(utts), n_train, cfg.ship)
    save_file(_packed([tokens[i] for i in shipped_ids], tok.codebook_size), str(tmp / "corpus.safetensors"))
    with open(tmp / "corpus.jsonl", "w") as f:
        for i in shipped_ids:
            u = utts[i]
            rec = json.loads(u.to_json()) | {"split": "train" if i < n_train else "heldout"}
            del rec["phones"]  # the frames carry them (phoneme columns)
            f.write(json.dumps(rec) + "\n")
    (tmp / "build.json").write_text(json.dumps(info, indent=1))
    if out.exists():
        old = out.with_name(out.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)
    if progress:
        print(f"[demo build] wrote {out} in {metrics['build_seconds']:.0f} s", file=sys.stderr)
    return {"out": str(out), **metrics}


def _encode_file(job) -> np.ndarray:
    import soundfile as sf

    codec, path = job
    return codec.encode(sf.read(path, dtype="float32")[0])


def encode_files(codec, paths: list[str], progress: bool = True, workers: int = 2) -> list[np.ndarray]:
    """The codec's tokens of each WAV file, in order, over a pool of `workers` processes."""
    import multiprocessing

    from tqdm.auto import tqdm

    jobs = [(codec, p) for p in paths]
    # spawn, not fork: a child forked from a process whose torch / OpenMP threads have run can hang at its first
    # parallel region (it did under pytest)
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 and len(paths) >= 8 else None
    try:
        results = pool.imap(_encode_file, jobs, chunksize=16) if pool else map(_encode_file, jobs)
        return list(tqdm(results, total=len(paths), desc="encode", unit="utt", disable=not progress))
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()


def shipped_utterances(n: int, n_train: int, ship: int) -> list[int]:
    """Indices of the shipped corpus utterances: the first training ones, then every held-out one."""
    return [*range(min(max(ship - (n - n_train), 0), n_train)), *range(n_train, n)]


def _packed(tokens: list[torch.Tensor], codebook_size: int) -> dict[str, torch.Tensor]:
    """The shipped corpus: every code in ceil(log2 K) bits (9 for K = 512), utterance lengths, (bits, C)."""
    bits = max(1, int(np.ceil(np.log2(codebook_size))))
    flat = torch.cat(tokens).numpy()
    return {
        "packed": torch.from_numpy(pack_codes(flat, bits)),
        "lengths": torch.tensor([len(t) for t in tokens], dtype=torch.int64),
        "shape": torch.tensor([bits, flat.shape[1]], dtype=torch.int64),
    }


def _flat(tokens: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        "tokens": torch.cat([t.to(torch.int16) for t in tokens]),
        "lengths": torch.tensor([len(t) for t in tokens], dtype=torch.int64),
    }

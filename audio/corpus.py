"""The `Corpus` interface: what a backbone is teacher-forced over (harvesting, labelling, presets).

An item is a text with, optionally, an instruct, its speech tokens `[T, C]` and/or its audio, and any
truth the corpus knows (speaker, gender, rate, laughter spans, ...). Items with audio but no tokens
get them from the backbone's speech tokenizer (`TTSBackbone.encode_audio`) when first needed.

    corpus = load_corpus("demo", backbone=bb)                    # the corpus a backbone ships with
    corpus = load_corpus("my_pairs.jsonl", text_column="text", audio_column="audio")
    corpus = load_corpus("hf:org/dataset", split_column=None)    # any `datasets` (text, audio) dataset
    for item in corpus.items("train"): ...
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ttslens.sae.errors import BadInput

SPLITS = ("train", "heldout", "all")


class CorpusItem(NamedTuple):
    text: str
    instruct: str | None
    tokens: torch.Tensor | None  # [T] or [T, C] speech tokens (None: encode `audio` first)
    truth: dict  # whatever the corpus knows (voice, gender, rate, laughter spans, split, ...)
    audio: tuple[np.ndarray, int] | None = None  # (waveform, sample rate)


class Corpus:
    """A list of items in splits; subclasses implement `all_items`."""

    name: str = "corpus"

    def all_items(self) -> list[CorpusItem]:
        raise NotImplementedError

    def items(self, split: str = "train") -> list[CorpusItem]:
        """Items of a split: train | heldout | all (an item without a `split` truth field is train)."""
        if split not in SPLITS:
            raise BadInput(f"unknown corpus split {split!r}: use one of {', '.join(SPLITS)}")
        return [it for it in self.all_items() if split == "all" or it.truth.get("split", "train") == split]

    def __len__(self) -> int:
        return len(self.all_items())


class ListCorpus(Corpus):
    def __init__(self, items: list[CorpusItem], name: str = "corpus") -> None:
        self._items, self.name = list(items), name

    def all_items(self) -> list[CorpusItem]:
        return self._items


def with_tokens(item: CorpusItem, backbone) -> CorpusItem:
    """The item with speech tokens: its own, or its audio through the backbone's speech tokenizer."""
    if item.tokens is not None:
        return item
    if item.audio is None:
        raise BadInput(f"corpus item {item.text[:40]!r} has neither speech tokens nor audio")
    wave, sr = item.audio
    return item._replace(tokens=backbone.encode_audio(np.asarray(wave, dtype=np.float32), int(sr)))


def item_audio(item: CorpusItem, sample_rate: int) -> np.ndarray | None:
    """An item's recording at `sample_rate` (mono float32), or None for an item with tokens only: a corpus of
    real (text, audio) pairs is heard as recorded, without the backbone's decoder."""
    if item.audio is None:
        return None
    from ttslens.audio.backbones.base import mono_at

    return mono_at(*item.audio, sample_rate)


class AudioTextCorpus(Corpus):
    """A `datasets` dataset of (text, audio) pairs; every `heldout_every`-th item is held out."""

    def __init__(
        self,
        dataset,
        text_column: str = "text",
        audio_column: str = "audio",
        instruct_column: str | None = None,
        heldout_every: int = 10,
        name: str = "dataset",
    ) -> None:
        for col in (text_column, audio_column, instruct_column):
            if col and col not in dataset.column_names:
                raise BadInput(f"dataset {name} has no column {col!r} (columns: {dataset.column_names})")
        self.ds, self.text_column, self.audio_column, self.instruct_column = (
            dataset,
            text_column,
            audio_column,
            instruct_column,
        )
        self.heldout_every, self.name = heldout_every, name
        self._items: list[CorpusItem] | None = None

    def _audio(self, value) -> tuple[np.ndarray, int]:
        if isinstance(value, dict) and "array" in value:  # datasets' Audio feature
            return np.asarray(value["array"], dtype=np.float32), int(value["sampling_rate"])
        if isinstance(value, str):  # a path to an audio file
            import soundfile as sf

            wave, sr = sf.read(value, dtype="float32", always_2d=False)
            return wave, int(sr)
        raise BadInput(f"dataset {self.name}: column {self.audio_column!r} holds neither audio nor a file path")

    def all_items(self) -> list[CorpusItem]:
        if self._items is None:
            items = []
            for i, row in enumerate(self.ds):
                split = (
                    "heldout" if self.heldout_every and i % self.heldout_every == self.heldout_every - 1 else "train"
                )
                instruct = row.get(self.instruct_column) if self.instruct_column else None
                audio = self._audio(row[self.audio_column])
                items.append(CorpusItem(row[self.text_column], instruct, None, {"split": split, "index": i}, audio))
            self._items = items
        return self._items


def backbone_items(backbone, split: str = "train") -> list[CorpusItem]:
    """The items of a split of the corpus the backbone ships with, each with its speech tokens."""
    return [with_tokens(it, backbone) for it in load_corpus(None, backbone=backbone).items(split)]


def load_corpus(
    spec: str | Path | None = None,
    backbone=None,
    text_column: str = "text",
    audio_column: str = "audio",
    instruct_column: str | None = None,
) -> Corpus:
    """A corpus by name: None / "default" / the backbone's name → the corpus the backbone ships with;
    a local .jsonl/.json/.csv/.parquet file, a saved `datasets` directory, or `hf:NAME` → (text, audio) pairs."""
    if spec in (None, "", "default") or (backbone is not None and str(spec) == backbone.name):
        corpus = backbone.default_corpus() if backbone is not None else None
        if corpus is None:
            what = f"backbone {backbone.name}" if backbone is not None else "no backbone"
            raise BadInput(f"{what} ships no corpus: give --corpus a (text, audio) dataset")
        return corpus
    from ttslens.sae.lm.harvest import load_text_dataset

    name = str(spec)
    if Path(name).is_dir() and not (Path(name) / "dataset_info.json").exists():
        ds = audio_folder(Path(name))
        return AudioTextCorpus(ds, "text", "audio", None, name=name)
    ds = load_text_dataset(name[3:] if name.startswith("hf:") else name, text_column=text_column)
    return AudioTextCorpus(ds, text_column, audio_column, instruct_column, name=name)


AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
TEXT_SUFFIXES = (".normalized.txt", ".txt", ".lab", ".original.txt")  # LibriTTS's first, then plain / HTK


def audio_folder(root: Path):
    """A folder of recordings as a `datasets` dataset of (text, audio path): `metadata.csv` / `metadata.jsonl`
    (the Hugging Face audiofolder layout: `file_name` and `text` or `transcription` columns), else every audio
    file with a transcript beside it of the same stem (LibriTTS's `.normalized.txt`, `.txt` or `.lab`)."""
    import csv

    import datasets

    rows = []
    meta = next((root / n for n in ("metadata.jsonl", "metadata.csv") if (root / n).exists()), None)
    if meta is not None:
        if meta.suffix == ".csv":
            with open(meta, newline="") as f:
                recs = list(csv.DictReader(f))
        else:
            recs = [json.loads(line) for line in meta.read_text().splitlines() if line.strip()]
        for r in recs:
            text = r.get("text", r.get("transcription"))
            if "file_name" not in r or text is None:
                raise BadInput(f"{meta} needs file_name and text (or transcription) columns")
            rows.append({"text": text, "audio": str(meta.parent / r["file_name"])})
    else:
        for wav in sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES):
            base = str(wav)[: -len(wav.suffix)]
            txt = next((Path(base + s) for s in TEXT_SUFFIXES if Path(base + s).exists()), None)
            if txt is not None:
                rows.append({"text": txt.read_text().strip(), "audio": str(wav)})
    if not rows:
        raise BadInput(
            f"{root} holds no (text, audio) pairs: give metadata.csv (file_name,text) or transcripts beside the "
            "audio files (x.wav + x.txt)"
        )
    return datasets.Dataset.from_list(rows)

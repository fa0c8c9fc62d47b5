"""The demo's pronunciation front end and phoneme tracks.

Every speech frame of the demo carries two phoneme columns before its codec codes: the phoneme it says and
the one after it (`<end>` at the last). At training they come from espeak-ng's own timing of the corpus
audio (`track_columns`); at synthesis the backbone reads the text's phonemes with `text_phonemes` (the same
pieces, pauses and laughs the corpus renders) and its sampler only chooses, frame by frame, whether to stay
on the current phoneme, move to the next, or (on the last) stop. So the LM decides durations, voice and
sound, and cannot skip or repeat words.
"""

from __future__ import annotations

import numpy as np
import torch

from ttslens.audio.backbones.demo.corpus_gen import LAUGH, LAUGH_TAG, PAUSE

UNK, END = "<unk>", "<end>"  # a frame of unknown phoneme (speech from a WAV); "no next phoneme"
UNK_ID, END_ID = 0, 1  # their ids: every inventory starts with them (tokenizer.py)
UNKNOWN_RUN = -1  # `run_starts` value of frames whose phoneme is unknown


def text_phonemes(text: str) -> list[str]:
    """The phoneme schedule of `text` as the corpus renders it: a pause, the pieces between `[laughter]` tags
    (espeak-ng's phonemes; a LAUGH between pieces, pauses around it), a pause; repeats merged."""
    from ttslens.audio.backbones.demo.espeak import phonemes

    track = [PAUSE]
    pieces = [p.strip() for p in text.split(LAUGH_TAG)]
    for i, piece in enumerate(pieces):
        if i > 0:
            track += [PAUSE, LAUGH]
        if piece:
            track += [PAUSE] * (i > 0) + list(phonemes(piece))
    track.append(PAUSE)
    return [p for k, p in enumerate(track) if k == 0 or p != track[k - 1]]


def frame_phonemes(phones: list[tuple[str, float]], n_frames: int, frame_rate: float) -> list[str]:
    """The phoneme sounding at each frame's centre, from a track of (name, start s)."""
    starts = np.array([t for _, t in phones])
    centres = (np.arange(n_frames) + 0.5) / frame_rate
    idx = np.searchsorted(starts, centres, side="right") - 1
    return [phones[i][0] if i >= 0 else PAUSE for i in idx]


def track_columns(names: list[str], inventory: dict[str, int]) -> torch.Tensor:
    """[T, 2] (phoneme, next phoneme) ids of per-frame phoneme names; runs of one name are one phoneme."""
    ids = [inventory.get(n, inventory[UNK]) for n in names]
    runs = [i for k, i in enumerate(ids) if k == 0 or i != ids[k - 1]]
    out, r = [], 0
    for k, i in enumerate(ids):
        r += k > 0 and i != ids[k - 1]
        out.append((i, runs[r + 1] if r + 1 < len(runs) else inventory[END]))
    return torch.tensor(out, dtype=torch.long).reshape(-1, 2)


def run_starts(cols_T2: torch.Tensor, unk: int) -> torch.Tensor:
    """[T] 1 where a frame starts a new phoneme (the first frame always does), 0 where it stays on one,
    UNKNOWN_RUN where its phoneme is unknown."""
    change = torch.ones(len(cols_T2), dtype=torch.long)
    if len(cols_T2) > 1:
        change[1:] = (cols_T2[1:] != cols_T2[:-1]).any(-1).long()
    return torch.where(cols_T2[:, 0] == unk, UNKNOWN_RUN, change)

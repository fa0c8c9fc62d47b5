"""The feature browser's logic (autointerp.browse) on a hand-made SAE + labels: filters, search, cards,
nearest features by decoder cosine, and clip paths that cannot leave the labels directory."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from ttslens.autointerp.browse import FeatureIndex, split_window
from ttslens.sae.base import SAEConfig, make_sae
from ttslens.sae.files import save_sae

F, D = 12, 8


def _rec(f, modality, label, auroc, examples=()):
    return {
        "feature": f, "modality": modality, "label": label, "labeler": "evidence", "confident": auroc is not None,
        "scores": {"detection_auroc": auroc}, "fires": 10 * f, "freq": 0.01, "max_act": 3.0, "mean_act": 1.5,
        "histogram": {"edges": [0, 1, 2], "counts": [3, 1]}, "examples": list(examples),
    }  # fmt: skip


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("browse")
    sae = make_sae(SAEConfig(arch="topk", d_in=D, d_sae=F, k=2))
    g = torch.Generator().manual_seed(0)
    W = torch.randn(F, D, generator=g)
    W[5] = W[2] + 0.05 * torch.randn(D, generator=g)  # 5 is 2's nearest
    W[9] = -W[2]  # 9 is 2's farthest
    with torch.no_grad():
        sae.W_dec.copy_(W)
    d = save_sae(sae, root / "sae", {"layer": 3})
    labels = d / "labels"
    (labels / "clips").mkdir(parents=True)
    sf.write(labels / "clips" / "000002-00.wav", np.linspace(-0.5, 0.5, 1600, dtype=np.float32), 16000)
    (labels / "clips" / "notes.txt").write_text("not audio")
    sf.write(root / "secret.wav", np.zeros(160, np.float32), 16000)
    (labels / "clips" / "link.wav").symlink_to(root / "secret.wav")
    clips = ["clips/000002-00.wav", "../secret.wav", str(root / "secret.wav"), "clips/link.wav",
             "clips/../../secret.wav", "clips/missing.wav", "clips/notes.txt", ""]  # fmt: skip
    speech = [{"act": 2.0 - i / 10, "window": "a line  ▸ speech at 1.00 s", "clip": c} for i, c in enumerate(clips)]
    recs = [
        _rec(0, "text", "the character 't'", 0.91, [{"act": 4.0, "token": "t", "window": "fauce«t»s <b>"}]),
        _rec(1, "text", "the word 'today'", 0.62),
        _rec(2, "speech", "laughter", 0.98, speech),
        _rec(5, "speech", "laughter bursts", None),
        _rec(7, "mixed", "female voice (high pitch)", 0.85),
        _rec(8, "dead", "dead", None),
    ]
    (labels / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return d, W


@pytest.fixture(scope="module")
def idx(index_dir):
    return FeatureIndex.load(index_dir[0])


def test_filter_modality_search_and_auroc(idx):
    assert [r["feature"] for r in idx.filter()] == [0, 1, 2, 5, 7, 8]
    assert [r["feature"] for r in idx.filter("speech")] == [2, 5]
    assert [r["feature"] for r in idx.filter("mixed")] == [7]
    assert [r["feature"] for r in idx.filter(query="LAUGHTER")] == [2, 5]
    assert [r["feature"] for r in idx.filter(query="bursts laughter")] == [5]  # every word, any order
    assert [r["feature"] for r in idx.filter(query="7")] == [7]  # an id
    assert idx.filter(query="nothing like this") == []
    assert [r["feature"] for r in idx.filter(min_auroc=0.8)] == [0, 2, 7]  # unscored features drop out
    assert [r["feature"] for r in idx.filter("text", "the", 0.9)] == [0]
    row = idx.filter(query="today")[0]
    assert row == {"feature": 1, "modality": "text", "label": "the word 'today'", "auroc": 0.62, "fires": 10,
                   "freq": 0.01, "max_act": 3.0, "stability": None}  # fmt: skip
    for bad in [("voices", "", 0), ("all", "", 1.5), ("all", "", float("nan"))]:
        with pytest.raises(ValueError):
            idx.filter(*bad)


def test_choices_and_unlabelled_index(idx, index_dir, tmp_path):
    assert idx.choices()[0] == ("0 · the character 't' (text, AUROC 0.91)", "0")
    assert ("5 · laughter bursts (speech)", "5") in idx.choices()
    bare = FeatureIndex.load(index_dir[0], labels_dir=tmp_path / "none")  # no labels: plain ids
    assert bare.filter() == [] and bare.choices() == [(str(f), str(f)) for f in range(F)]
    with pytest.raises(ValueError, match="not labelled"):
        bare.card(0)


def test_card(idx):
    c = idx.card(0)
    assert c["label"] == "the character 't'" and c["scores"]["detection_auroc"] == 0.91 and c["modality"] == "text"
    assert c["windows"] == [{"activation": 4.0, "token": "t", "split": ("fauce", "t", "s <b>")}]
    assert c["clips"] == [] and c["histogram"]["counts"] == [3, 1] and len(c["nearest"]) == 8
    s = idx.card(2, n_examples=3)
    assert [w["split"] for w in s["windows"]] == [("a line  ▸ speech at 1.00 s", "", "")] * 3
    assert [x["index"] for x in s["clips"]] == [0, 1, 2]  # indices into the record's examples
    for bad, msg in [
        (3, "not labelled"),
        (F, "out of range"),
        (-1, "out of range"),
        ("x", "whole number"),
        (2.5, "whole"),
    ]:
        with pytest.raises(ValueError, match=msg):
            idx.card(bad)


def test_split_window():
    assert split_window("ab«c»d") == ("ab", "c", "d")
    assert split_window("no marks") == ("no marks", "", "")
    assert split_window("open «only") == ("open «only", "", "")


def test_nearest_is_decoder_cosine(idx, index_dir):
    W = index_dir[1]
    near = idx.nearest(2, 8)
    assert near[0][:1] == (5,) and near[0][2] == "laughter bursts" and 9 not in [f for f, *_ in near]
    U = W / W.norm(dim=1, keepdim=True)
    cos = (U @ U[2]).tolist()
    want = sorted((g for g in range(F) if g != 2), key=lambda g: -cos[g])[:8]
    assert [f for f, *_ in near] == want
    assert all(abs(c - cos[f]) < 1e-3 for f, c, _ in near) and 2 not in [f for f, *_ in near]
    assert len(idx.nearest(2, 100)) == F - 1


def test_clip_path_stays_inside_labels_dir(idx, index_dir):
    labels = (index_dir[0] / "labels").resolve()
    p = idx.clip_path(2, 0)
    assert p == labels / "clips" / "000002-00.wav" and sf.read(p)[0].shape == (1600,)
    refused = {1: "refusing", 2: "refusing", 3: "outside", 4: "refusing", 5: "missing", 6: "refusing", 7: "no audio"}
    for i, msg in refused.items():
        with pytest.raises(ValueError, match=msg):
            idx.clip_path(2, i)
    for i in (8, -1, "0", None):
        with pytest.raises(ValueError, match="no example"):
            idx.clip_path(2, i)
    with pytest.raises(ValueError, match="no audio"):
        idx.clip_path(0, 0)  # a text example
    for rel in ("/etc/passwd", "../../etc/passwd.wav", "clips/\x00.wav", "clips/link.wav"):
        with pytest.raises(ValueError):
            idx.resolve_clip(rel)


def test_bad_labels_file(index_dir, tmp_path):
    (tmp_path / "labels.jsonl").write_text('{"feature": 0}\n{"feature": 99}\n')
    with pytest.raises(ValueError, match="labels feature 99"):
        FeatureIndex.load(index_dir[0], labels_dir=tmp_path)
    (tmp_path / "labels.jsonl").write_text("not json\n")
    with pytest.raises(ValueError, match="labels.jsonl:1"):
        FeatureIndex.load(index_dir[0], labels_dir=tmp_path)

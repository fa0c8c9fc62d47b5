"""Notes (sae.notes): the mechanism, and the notes `ttslens label` and `ttslens steer-eval` give when an
optional model is missing (one line each in CLI words, recorded in the result, no raw Python warning)."""

from __future__ import annotations

import html
import json
import threading
import warnings

import pytest

from ttslens.app.cli import main as cli
from ttslens.sae import notes

NO_AST, NO_GENDER = "ttslens-test/no-such-ast", "ttslens-test/no-such-gender"


@pytest.fixture
def no_whisper_weights(monkeypatch, tmp_path):
    """An empty whisper download root (whisper looks in $XDG_CACHE_HOME/whisper)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    notes.drain()


def test_notes_are_collected_once_from_every_thread_and_drained():
    notes.drain()
    with notes.collect() as outer:
        notes.note("  one\n  line  ")
        with notes.collect() as inner:
            threads = [threading.Thread(target=notes.note, args=(f"n{i % 5}",)) for i in range(40)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            notes.note("one line")  # new to this block, not to the outer one
        notes.note("after")
    assert sorted(inner) == [f"n{i}" for i in range(5)] + ["one line"]  # each note once, from every thread
    assert outer[0] == "one line" and outer[-1] == "after" and len(outer) == 7
    assert notes.drain() == outer and notes.drain() == []
    notes.note("outside any block")
    assert notes.drain() == ["outside any block"]


def test_load_optional_turns_a_missing_model_into_one_note():
    notes.drain()

    def missing():
        warnings.warn("weights are not in the cache; use download=True", stacklevel=1)

    with warnings.catch_warnings(record=True) as caught, notes.collect() as got:
        warnings.simplefilter("always")
        assert notes.load_optional(missing, "x is skipped: weights not found (pass --download)") is None
        assert notes.load_optional(lambda: "model", "unused") == "model"
    assert not caught and got == ["x is skipped: weights not found (pass --download)"]
    notes.drain()


def test_label_notes_missing_models_in_cli_words(small_sae, tmp_path, capsys, no_whisper_weights):
    out = tmp_path / "labels"
    args = ["label", "--sae", str(small_sae), "--out", str(out), "--items", "40", "--features", "0:4"]
    args += ["--laughter-model", NO_AST, "--gender-model", NO_GENDER, "--no-progress", "--asr", "tiny"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cli(args) == 0
    assert not [w for w in caught if "skipped" in str(w.message)]  # no raw library warning
    cap = capsys.readouterr()
    summary = json.loads(cap.out)
    got = summary["notes"]
    asr = next(n for n in got if n.startswith("ASR evidence is skipped: whisper weights 'tiny' not found"))
    laugh = next(n for n in got if n.startswith("laughter evidence uses the backbone's laughter detector:"))
    gender = next(n for n in got if n.startswith("P(male) comes from pitch:"))
    for n in (asr, laugh, gender):
        assert "(pass --download to fetch them)" in n and "download=True" not in n and "\n" not in n
    assert NO_AST in laugh and NO_GENDER in gender and "skipped" not in laugh
    # what summary.json says agrees with what was measured
    assert summary["clip_models"] == {"asr": None, "laughter": "backbone", "p_male": "pitch"}
    assert json.loads((out / "summary.json").read_text())["notes"] == got
    recs = [json.loads(line) for line in (out / "labels.jsonl").open()]
    meas = [e["measures"] for r in recs for e in r["examples"] if "measures" in e]
    assert any(m.get("laughter") is not None for m in meas) and not any("asr" in m for m in meas)
    assert html.escape(laugh) in (out / "report.html").read_text()
    for n in got:  # the CLI printed each once, in its words
        assert cap.err.count(f"ttslens label: note: {n}\n") == 1
    assert notes.drain() == []  # and drained the queue


def test_steer_eval_notes_missing_whisper(steer_sae, tmp_path, no_whisper_weights):
    from ttslens.audio.steering.evaluate import SteerEvalConfig, run_steer_eval

    cfg = SteerEvalConfig(
        sae=[str(steer_sae)],
        attribute="gender",
        alphas=[0.0],
        voices=2,
        texts=1,
        out=str(tmp_path / "sweep"),
        asr="tiny",
    )  # unsteered only: two syntheses, no timing run
    cfg.progress = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = run_steer_eval(cfg)
    assert not [w for w in caught if "ASR" in str(w.message)]
    assert len(r["notes"]) == 1 and r["notes"][0].startswith("no Whisper WER") and "--asr" in r["notes"][0]
    assert json.loads((tmp_path / "sweep" / "dose_response.json").read_text())["notes"] == r["notes"]
    assert all("wer" not in row for row in r["rows"]) and r["notes"][0] in notes.drain()

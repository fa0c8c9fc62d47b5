"""`ttslens label` end to end on the small demo backbone built by the tests: outputs, resume, bad input,
the LLM labeler against a local fake endpoint."""

from __future__ import annotations

import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import soundfile as sf

from ttslens.app.cli import main as cli
from ttslens.autointerp import pipeline
from ttslens.autointerp.job import Job
from ttslens.autointerp.labelers import CONFIDENT_AUROC
from ttslens.autointerp.pipeline import LabelConfig, run_label

OFFLINE = ["--asr", "", "--laughter-model", "", "--gender-model", "", "--no-progress"]
KEY = "sk-label-test-SECRET-42"


def label_args(sae, out, *extra):
    return ["label", "--sae", str(sae), "--out", str(out), "--items", "40", "--batch", "8", *OFFLINE, *extra]


def read_labels(out):
    return [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]


def assert_scored(r: dict) -> None:
    """A live feature with at least 3 held-out positives has a detection AUROC in [0, 1]; one without has
    none and is not confident."""
    s = r["scores"]
    if s["n_pos"] >= 3:
        assert s["detection_auroc"] is not None and 0 <= s["detection_auroc"] <= 1, r["feature"]
    else:
        assert s["detection_auroc"] is None and r["confident"] is False, r["feature"]


def test_label_writes_records_clips_report_and_export(small_sae, tmp_path, capsys):
    out = tmp_path / "labels"
    assert cli(label_args(small_sae, out, "--features", "0:16")) == 0
    summary = json.loads(capsys.readouterr().out)
    recs = read_labels(out)
    assert [r["feature"] for r in recs] == list(range(16)) and summary["features"] == 16
    for r in recs:
        assert r["modality"] in ("text", "speech", "mixed", "dead") and r["labeler"] == "evidence"
        if r["modality"] == "dead":
            continue
        assert r["label"] and 0 <= r["speech_share"] <= 1 and r["examples"]
        assert r["mean_act"] > 0 and sum(r["histogram"]["counts"]) > 0
        assert_scored(r)
        for ex in r["examples"]:
            assert ex["modality"] in ("text", "speech", "special") and ex["act"] > 0
            if ex.get("clip"):
                wave, sr = sf.read(out / ex["clip"])
                assert sr == 16000 and len(wave) == 16000  # 1 s, padded at edges
    assert any(r["scores"].get("detection_auroc") is not None for r in recs)
    speech = [r for r in recs if r["modality"] == "speech"]
    assert speech and any(e.get("clip") for r in speech for e in r["examples"])
    assert set(summary["detection_auroc"]) == {"text", "speech", "mixed", "all"}
    html = (out / "report.html").read_text()
    assert "<audio" in html and "<mark>" in html and "Detection AUROC" in html
    feats = [json.loads(x) for x in gzip.open(out / "neuronpedia/features/batch-0.jsonl.gz", "rt")]
    acts = [json.loads(x) for x in gzip.open(out / "neuronpedia/activations/batch-0.jsonl.gz", "rt")]
    expl = [json.loads(x) for x in gzip.open(out / "neuronpedia/explanations/batch-0.jsonl.gz", "rt")]
    assert len(feats) == 16 and {"modelId", "layer", "index", "maxActApprox"} <= set(feats[0])
    a = acts[0]
    assert a["values"][a["maxValueTokenIndex"]] == a["maxValue"] > 0 and len(a["tokens"]) == len(a["values"])
    assert expl and all(e["description"] for e in expl)


def test_a_feature_without_held_out_positives_is_not_confident(small_sae, tmp_path):
    """--top 200 uses up the whole top pool (200 per feature): no held-out positives remain, so there is no
    detection AUROC, and then no label is confident, however well it separated the top activations."""
    out = tmp_path / "labels"
    cfg = LabelConfig(
        sae=str(small_sae), out=str(out), features="0:6", items=40, top=200, negatives=4, pool=204,
        asr="", laughter_model="", gender_model="", progress=False,
    )  # fmt: skip
    run_label(cfg)
    live = [r for r in read_labels(out) if r["modality"] != "dead"]
    assert live
    for r in live:
        assert r["scores"]["n_pos"] == 0 and r["scores"]["detection_auroc"] is None and r["confident"] is False
        assert_scored(r)
    assert any(r["scores"]["selection_auroc"] >= CONFIDENT_AUROC for r in live)  # the labeler alone trusted it


def test_kill_and_rerun_continues_without_duplicates(small_sae, tmp_path, monkeypatch):
    out = tmp_path / "labels"
    calls = {"n": 0}
    real = pipeline.run_batch

    def dies_on_second_batch(job, feats):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(job, feats)

    monkeypatch.setattr(pipeline, "run_batch", dies_on_second_batch)
    assert cli(label_args(small_sae, out, "--features", "0:24")) == 130
    assert len(list((out / "parts").glob("*.jsonl"))) == 1 and not (out / "labels.jsonl").exists()
    (out / "parts" / ".000008-000015-8.jsonl.junk.tmp").write_text('{"feature": 8, "trunc')  # a dead temp file
    monkeypatch.setattr(pipeline, "run_batch", real)
    assert cli(label_args(small_sae, out, "--features", "0:24")) == 0
    first = read_labels(out)
    assert [r["feature"] for r in first] == list(range(24))
    # a wider range later: only the new batches run, the old records stay as they were
    assert cli(label_args(small_sae, out, "--features", "0:32")) == 0
    again = read_labels(out)
    assert [r["feature"] for r in again] == list(range(32)) and again[:24] == first


def test_bad_input_gets_one_line_errors(small_sae, small_assets, tmp_path, capsys):
    out = tmp_path / "labels"
    cases = [
        (["--features", "0:999"], "out of range"),
        (["--backbone", "demo"], "trained on backbone"),
        (["--layer", "0"], "reads layer 1"),
        (["--labeler", "gpt"], "unknown --labeler"),
    ]
    for extra, msg in cases:
        assert cli(label_args(small_sae, out, *extra)) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1
    assert cli(label_args(tmp_path / "nope", out)) == 2
    assert "no SAE at" in capsys.readouterr().err
    assert cli(label_args(small_sae, out, "--features", "0:8")) == 0
    capsys.readouterr()
    assert cli(label_args(small_sae, out, "--features", "0:8", "--top", "10")) == 2
    assert "other settings" in capsys.readouterr().err


def test_tiny_corpus_is_refused(small_sae, tmp_path, monkeypatch):
    from ttslens.audio.backbones.demo.backbone import DemoCorpus

    real = DemoCorpus.all_items
    monkeypatch.setattr(DemoCorpus, "all_items", lambda self: real(self)[:3])
    with pytest.raises(ValueError, match="at least"):
        Job(LabelConfig(sae=str(small_sae), out=str(tmp_path / "l"), asr="", laughter_model="", gender_model=""))


class FakeLLM:
    """An OpenAI-compatible endpoint: labels every feature 'the letter e', the judge picks examples 1-3;
    mode 'garbage' answers prose without JSON."""

    def __init__(self, mode: str = "ok"):
        self.mode, self.seen, self.auth = mode, [], set()
        fake = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.seen.append(body)
                fake.auth.add(self.headers.get("Authorization"))
                user = body["messages"][-1]["content"]
                if fake.mode == "garbage":
                    text = "I think this feature is about something, hard to say."
                elif "Which of these examples" in user:
                    text = '{"matches": [1, 2, 3]}'
                else:
                    text = 'Sure! ```json\n{"label": "the letter e"}\n```'
                data = json.dumps({"choices": [{"message": {"content": text}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("mode", ["ok", "garbage"])
def test_llm_labeler_labels_judges_and_records_failures(small_sae, tmp_path, monkeypatch, mode):
    monkeypatch.setenv("TTSLENS_LLM_API_KEY", KEY)
    fake = FakeLLM(mode)
    out = tmp_path / "llm"
    try:
        cfg = LabelConfig(
            sae=str(small_sae),
            out=str(out),
            features="0:8",
            items=40,
            batch=4,
            labeler="llm",
            llm_base_url=fake.url,
            llm_model="fake-1",
            asr="",
            laughter_model="",
            gender_model="",
            progress=False,
        )
        summary = run_label(cfg)
    finally:
        fake.close()
    recs = read_labels(out)
    live = [r for r in recs if r["modality"] != "dead"]
    assert len(recs) == 8 and live and f"Bearer {KEY}" in fake.auth
    if mode == "ok":
        assert all(r["label"] == "the letter e" for r in live)
        assert all(r["scores"]["detection_auroc"] is not None for r in live if r["scores"]["n_pos"] >= 3)
        n_requests = len(fake.seen)
        assert (out / "llm_cache.jsonl").exists() and n_requests >= len(live)
    else:  # unparseable answers are recorded as failures, never dropped
        assert all(r["label"] is None and "unparseable" in r["failure"] for r in live)
        assert summary["failures"] == len(live)
    for p in out.rglob("*"):
        if p.is_file() and p.suffix in (".jsonl", ".json", ".html"):
            assert KEY not in p.read_text()


def test_clip_measures_read_the_utterance_like_the_cut_clip(small):
    """Track-based clip measures agree with measuring the cut clip itself."""
    from ttslens.audio.measures import laughter_detector_for
    from ttslens.audio.measures.clips import analyse, clip_measures, cut_clip
    from ttslens.audio.measures.signal import pitch

    item = small.default_corpus().items("train")[0]
    wave = small.decode(item.tokens)
    tr = analyse(wave, small.sample_rate, laughter_detector_for(small))
    centre = len(wave) / small.sample_rate / 2
    m = clip_measures(tr, centre)
    clip, padded = cut_clip(wave, small.sample_rate, centre)
    p = pitch(clip, small.sample_rate, fast=True)
    assert not padded and m["padded"] == 0.0
    assert m["voiced_frac"] == pytest.approx(p.voiced.mean(), abs=0.06)
    if p.voiced.any():
        assert m["f0_hz"] == pytest.approx(float(np.median(p.f0_hz[p.voiced])), rel=0.05)
    edge = clip_measures(tr, 0.1)
    clip, padded = cut_clip(wave, small.sample_rate, 0.1)
    assert padded and edge["padded"] == 1.0 and len(clip) == small.sample_rate and not clip[:6000].any()


def test_label_with_asr_ast_and_gender_models(small_sae, tmp_path, whisper_checkpoint, ast_dir, gender_dir):
    """The model-based clip measures (tiny random Whisper, AST, wav2vec2 of tests/conftest.py) reach the records."""
    out = tmp_path / "labels"
    summary = run_label(
        LabelConfig(
            sae=str(small_sae),
            out=str(out),
            features="0:3",
            items=40,
            top=3,
            quantiles=3,
            negatives=4,
            pool=12,
            asr=str(whisper_checkpoint),
            laughter_model=str(ast_dir),
            gender_model=str(gender_dir),
            progress=False,
        )
    )
    used = {"asr": str(whisper_checkpoint), "laughter": str(ast_dir), "p_male": str(gender_dir)}
    assert summary["clip_models"] == used
    assert not [n for n in summary["notes"] if "evidence" in n or "P(male)" in n]  # nothing missing
    meas = [e["measures"] for r in read_labels(out) for e in r["examples"] if e.get("measures")]
    assert meas and all("asr" in m and "asr_peak" in m and 0 <= m["laughter"] <= 1 for m in meas)


def test_asr_runs_once_per_utterance_and_each_clip_reads_its_window(small_sae, tmp_path, monkeypatch):
    """ASR evidence comes from one transcription of each whole utterance (not one per clip): a clip's words are
    those overlapping its window, its peak words those at its centre."""
    import ttslens.autointerp.job as job
    from ttslens.audio import load_backbone
    from ttslens.audio.measures.asr import Word
    from ttslens.autointerp.evidence import ClipModels, clip_words
    from ttslens.sae.files import sae_info

    heard: list[bytes] = []

    def timed_words(duration: float) -> list[Word]:  # a word every 0.5 s, off the frame grid
        return [Word(f"w{i}", 0.5 * i + 0.0137, 0.5 * i + 0.4048, 1.0) for i in range(int(duration / 0.5) + 1)]

    class FakeASR:
        def transcribe(self, wave, sr, max_tokens=None):
            heard.append(np.asarray(wave).tobytes())
            return timed_words(60.0)  # whatever its length, so the words a clip should read need no duration

    monkeypatch.setattr(job, "load_clip_models", lambda cfg, has_detector: ClipModels(asr=FakeASR()))
    out = tmp_path / "labels"
    cfg = LabelConfig(
        sae=str(small_sae), out=str(out), features="0:6", items=40, top=4, quantiles=3, negatives=4, pool=12,
        progress=False,
    )  # fmt: skip
    run_label(cfg)
    speech = [e for r in read_labels(out) for e in r["examples"] if e.get("measures") and "time" in e]
    assert speech and heard
    assert len(heard) == len(set(heard)) <= cfg.items  # each utterance heard once, whole
    rate = load_backbone(sae_info(small_sae)["backbone"]).token_rate
    words = timed_words(60.0)
    for e in speech:
        want = clip_words(words, e["time"] + 0.5 / rate, 1.0)
        assert (e["measures"]["asr"], e["measures"]["asr_peak"]) == (want["asr"], want["asr_peak"])

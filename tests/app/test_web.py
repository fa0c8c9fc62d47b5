"""The Gradio app (`ttslens app`).

First the page's actions (`app.studio.Studio`) as plain functions on the small steering SAE of
tests/conftest.py (`steer_sae`: layer 3 of the shipped demo backbone, probe presets, labels of features
0..47), a real dose-response sweep and the text-LLM tab on the tiny text LM; then `ttslens app` as a
subprocess on 127.0.0.1 driven by a real browser (Debian's /usr/bin/chromium through Playwright; skipped
only when that binary is missing) and by 8 concurrent API requests.

Artifacts: the browser test saves `app.png` (the synthesize tab after a steered synthesis) and
`app-browser.png` (the feature browser after a search, with a card) in its tmp_path; with the environment
variable TTSLENS_ARTIFACTS set (any value) it also copies them to test-artifacts/ under the repository root.
"""

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from ttslens.app.render import activation_figure, card_html, n_features
from ttslens.app.studio import Studio, parse_alphas
from ttslens.app.web import AppConfig, build_app
from ttslens.autointerp.browse import FeatureIndex
from ttslens.sae.base import SAEConfig, make_sae
from ttslens.sae.files import save_sae

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
TEXT = "that is the funniest thing i have heard."
NO_PICKS = [("", 0.0)] * 3


@pytest.fixture(scope="module")
def studio(steer_sae, tmp_path_factory):
    return Studio(AppConfig(sae=[str(steer_sae)], work_dir=str(tmp_path_factory.mktemp("app_work"))))


def _presets(**kw):
    return {"laughter": 0.0, "gender": 0.0, "rate": 0.0, **kw}


def _search_word(idx: FeatureIndex) -> str:
    """A word found in the labels of 1 to 5 labelled features (a search that visibly filters the table)."""
    labels = [r["label"].lower() for r in idx.filter()]
    for w in sorted({w.strip("'(),") for label in labels for w in label.split()}, key=lambda w: (not w.isalpha(), w)):
        if len(w) >= 3 and not w.isdigit() and 1 <= sum(w in label for label in labels) <= 5:
            return w
    raise AssertionError(f"no selective search word in {labels}")


# ---- the actions as plain functions -------------------------------------------------------------------
def test_synthesize_default_and_steered(studio, steer_sae):
    presets = json.loads((steer_sae / "presets.json").read_text())["presets"]
    r = studio.synthesize(TEXT, "", "3", _presets(laughter=3.0), [("5", 1.5), ("", 2.0), ("7", 0)], seed=1)
    assert r["steer"] == {"3/laughter": 3.0, "3/5": 1.5}  # zeros and empty pickers omitted
    d, s = r["default"], r["steered"]
    assert d.edits == [] and d.activations is None and not d.steered.any()
    want = [f["feature"] for f in presets["laughter"]["plus"]] + [5]
    assert [e["feature"] for e in r["edits"]] == want
    assert [e["source"] for e in r["edits"]] == ["preset laughter"] * (len(want) - 1) + ["feature 5"]
    assert all(e["alpha"] == (1.5 if e["feature"] == 5 else 3.0) and e["mean act"] > 0 for e in r["edits"])
    assert s.steered.any() and bool((s.steered == (s.sequence.modality == 1)).all())  # scope: speech
    assert len(d.wave) != len(s.wave) or not np.array_equal(d.wave, s.wave)  # the edit changed the audio
    assert [m["measure"] for m in r["measures"]] == [
        "duration (s)", "voiced (s)", "median F0 (Hz)", "P(male) by pitch", "P(male) by timbre", "syllables/s",
        "laughter",
    ]  # fmt: skip
    assert float(r["measures"][0]["default"]) == pytest.approx(len(d.wave) / d.sample_rate, rel=0.01)
    fig = activation_figure(s)
    lines = fig.axes[0].get_lines()
    assert len(lines) == len(want)
    acts = s.activations[3]
    assert acts.shape == (len(s.sequence), 256)
    for line, f in zip(lines, want, strict=True):
        np.testing.assert_allclose(line.get_ydata(), acts[:, f].numpy())
    # all strengths zero: one edit-free request, the same audio twice (same seed)
    z = studio.synthesize(TEXT, "", "3", _presets(), NO_PICKS, seed=1)
    assert z["steer"] == {} and z["edits"] == [] and np.array_equal(z["default"].wave, z["steered"].wave)
    assert np.array_equal(z["default"].wave, d.wave)
    # trained steering vectors, typed as DIR=STRENGTH, join the edits
    from ttslens.sae.vectors.vectors import SteeringVectors, save_vectors

    vec = SteeringVectors(studio.tts.bb.d_model, [3])
    with torch.no_grad():
        vec.vector(3).normal_(generator=torch.Generator().manual_seed(0)).mul_(30)
    vdir = save_vectors(vec, Path(studio.work) / "vec", {"model": "demo", "scope": "generated"}).parent
    v = studio.synthesize(TEXT, "", "3", _presets(), NO_PICKS, seed=1, vectors=f"{vdir}=1")
    assert v["edits"] == [{"layer": "vectors", "source": f"{vdir}=1"}] and v["steered"].steered.any()
    assert not np.array_equal(v["steered"].wave, v["default"].wave)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"text": "  "}, "empty text"),
        ({"picks": [("9999", 1.0)]}, "out of range"),
        ({"picks": [("zzz nowhere", 1.0)]}, "unknown steering target"),
        ({"presets": _presets(laughter=1e9)}, "between -50 and 50"),
        ({"presets": _presets(rate=float("nan"))}, "between"),
        ({"presets": _presets(gender="lots")}, "must be a number"),
        ({"seed": -1}, "seed must be between"),
        ({"seed": 1.5}, "whole number"),
        ({"scope": "everywhere"}, "unknown scope"),
        ({"layer": "7", "presets": _presets(laughter=1.0)}, "no SAE loaded for layer"),
        ({"text": "call me at 5."}, "spell numbers out"),
    ],
)
def test_synthesize_refuses_bad_input_in_one_line(studio, kwargs, message):
    args = {"text": TEXT, "instruct": "", "layer": "3", "presets": _presets(), "picks": NO_PICKS, "seed": 0}
    with pytest.raises(ValueError, match=message) as e:
        studio.synthesize(**{**args, **kwargs})
    assert "\n" not in str(e.value)


def test_preset_sliders_need_saved_presets(studio, monkeypatch):
    assert studio.has_presets("3")
    monkeypatch.setattr(studio.tts, "saved_presets", lambda s: None)  # as if SAE_DIR/presets.json were absent
    assert not studio.has_presets("3")
    with pytest.raises(ValueError, match="has no presets: run `ttslens presets --sae"):
        studio.synthesize(TEXT, "", "3", _presets(gender=-2.0), NO_PICKS)
    assert studio.steer_request("3", _presets(), [("5", 1.0)]) == {"3/5": 1.0}  # features still steer


def test_feature_browser_actions(studio, steer_sae):
    idx = FeatureIndex.load(steer_sae)
    rows = studio.browse("3")
    assert [r["feature"] for r in rows] == sorted(idx.records) and len(rows) == 48
    for m in ("text", "speech", "mixed"):
        assert all(r["modality"] == m for r in studio.browse("3", m))
    word = _search_word(idx)
    hits = studio.browse("3", "all", word.upper(), 0)
    assert hits == [r for r in rows if word in r["label"].lower()] and 1 <= len(hits) < len(rows)
    assert all(r["auroc"] is not None and r["auroc"] >= 0.8 for r in studio.browse("3", "all", "", 0.8))
    with pytest.raises(ValueError, match="minimum AUROC"):
        studio.browse("3", "all", "", 2)
    speech = next(
        r
        for r in rows
        if r["modality"] == "speech" and any(e.get("clip") for e in idx.records[r["feature"]]["examples"])
    )
    c = studio.card("3", speech["feature"])
    assert c["label"] == speech["label"] and len(c["nearest"]) == 8 and c["audio"]
    for a in c["audio"]:
        sr, wave = a["audio"]
        assert sr == 16000 and wave.shape == (16000,) and np.isfinite(wave).all()
    cos = [x[1] for x in c["nearest"]]
    assert cos == sorted(cos, reverse=True) and speech["feature"] not in [x[0] for x in c["nearest"]]
    page = card_html(c)
    assert f"#{speech['feature']}" in page and page.count("<tr>") >= 1 + len(c["windows"])
    for bad, message in [
        (None, "no feature chosen"),
        (999, "between 0 and 255"),
        (100, "not labelled"),
        ("x", "number"),
    ]:
        with pytest.raises(ValueError, match=message):
            studio.card("3", bad)


def test_feature_browser_flow_graph(studio, steer_sae, tmp_path):
    """The card's flow graph: none with one SAE loaded (and it says why); with a layer-2 SAE whose decoder is
    layer 3's, permuted, every feature links back to its permuted twin, and `361:flow` steers both layers."""
    from ttslens.sae.files import load_sae, sae_info

    one = studio.flow("3", 5)
    assert one["graph"] is None and "neighbouring layers" in one["notes"][0]
    sae3, info = load_sae(steer_sae), sae_info(steer_sae)
    perm = torch.randperm(sae3.cfg.d_sae, generator=torch.Generator().manual_seed(0))
    sae2 = make_sae(sae3.cfg)
    sae2.load_state_dict({k: v[perm] if k == "W_dec" else v for k, v in sae3.state_dict().items()})
    below = save_sae(sae2, tmp_path / "sae_L2", {**info, "layer": 2, "hook_name": "layers.2"})
    two = Studio(AppConfig(sae=[str(below), str(steer_sae)], work_dir=str(tmp_path / "work")))
    f = 5
    g = two.flow("3", f)
    twin = int((perm == f).nonzero())
    assert any(
        e["from"] == f"resid/2/{twin}" and e["to"] == f"resid/3/{f}" and e["cosine"] > 0.999
        for e in g["graph"]["edges"]
    )
    assert "<svg" in g["svg"] and f"resid/2/{twin}" in g["svg"]
    assert any("no mlp or attn SAEs" in n for n in g["notes"])
    edits = two.tts.resolve(two.steer_request("3", _presets(), [(f"{f}:flow", 2.0)]))
    assert {(e.layer, e.edit.feature) for e in edits} == {(3, f), (2, twin)}
    with pytest.raises(ValueError, match="feature id"):
        two.flow("3", 10_000)


def test_card_html_escapes_everything():
    c = {
        "feature": 4, "label": "<script>alert(1)</script>", "modality": "text", "scores": {"<i>": 0.5},
        "windows": [{"activation": 1.0, "split": ("a <b>", "&", "</td>")}], "failure": "<img src=x>",
    }  # fmt: skip
    page = card_html(c)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "a &lt;b&gt;<mark>&amp;</mark>&lt;/td&gt;" in page and "<img" not in page and "&lt;i&gt;" in page


def test_dose_response(studio, monkeypatch):
    assert parse_alphas("−4, −2,0 ,2,4") == [-4.0, -2.0, 0.0, 2.0, 4.0]
    for bad, message in [
        ("", "no strengths"),
        ("1,x", "must be a number"),
        ("1,1e6", "between"),
        (",".join("1" * 16), "at most"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_alphas(bad)
    seen = []
    r = studio.dose(
        "3", "laughter", "laughter", "−2,0,2", voices=2, texts=1, seed=0, progress=lambda f, m: seen.append((f, m))
    )
    assert [row["alpha"] for row in r["rows"]] == [-2.0, 0.0, 2.0] and all(row["n"] == 2 for row in r["rows"])
    png = Path(r["png"])
    assert png.is_file() and png.is_relative_to(studio.work) and Path(r["csv"]).is_file()
    assert len(seen) == 6 + 2 and seen[-1][0] == pytest.approx(1.0)  # + the same-voice re-samples
    assert [f for f, _ in seen] == sorted(f for f, _ in seen)
    # the contract with steering.evaluate: a fresh dir under the work dir, no ASR, no tqdm bar
    import ttslens.audio.steering.evaluate as steer_eval

    got = []
    monkeypatch.setattr(steer_eval, "run_steer_eval", lambda cfg, progress=None: got.append(cfg) or {"png": ""})
    studio.dose("3", "gender", "5", "1,2", voices=3, texts=2, seed=4)
    cfg = got[0]
    assert (cfg.sae, cfg.attribute, cfg.steer, cfg.alphas, cfg.voices, cfg.texts, cfg.seed) == (
        [str(studio.tts.saes[0].path)],
        "gender",
        "5",
        [1.0, 2.0],
        3,
        2,
        4,
    )
    assert cfg.asr == "" and cfg.progress is False and Path(cfg.out).parent == studio.work
    assert Path(cfg.out) != png.parent
    for kw, message in [
        ({"voices": 1}, "voices"),
        ({"attribute": "pitch"}, "unknown attribute"),
        ({"target": " "}, "nothing to steer"),
    ]:
        with pytest.raises(ValueError, match=message):
            studio.dose(**{"layer": "3", "attribute": "laughter", "target": "laughter", "alphas": "1", **kw})


def test_text_tab_and_an_app_without_sae(tiny_lm, tmp_path, studio):
    with pytest.raises(ValueError, match="No text model loaded"):
        studio.text_compare("the cat")
    torch.manual_seed(0)
    sae_dir = save_sae(make_sae(SAEConfig(arch="topk", d_in=48, d_sae=64, k=4)).eval(), tmp_path / "tsae", {"layer": 0})
    cfg = AppConfig(text_model=str(tiny_lm / "model"), text_sae=[str(sae_dir)], work_dir=str(tmp_path / "work"))
    plain = Studio(cfg)
    assert plain.text is not None and plain.text_note == ""
    a, b = plain.text_compare("the cat", [("3", 0.0), ("", 1.0)], seed=0, max_new_tokens=8)
    assert isinstance(a, str) and a == b  # nothing steered: the same sample
    a2, b2 = plain.text_compare("the cat", [("3", 8.0)], seed=0, max_new_tokens=8)
    assert a2 == a and b2 != a  # the same default; the edit changes the steered continuation
    for picks, n, message in [
        ([("999", 1.0)], 8, "999"),
        (NO_PICKS, 0, "max new tokens"),
        (NO_PICKS, 8, "empty prompt"),
    ]:
        with pytest.raises(ValueError, match=message):
            plain.text_compare("" if message == "empty prompt" else "the cat", picks, 0, n)
    # no SAE: synthesis still works (unsteered), steering and browsing say why not
    r = plain.synthesize(TEXT, "", None, {}, [], seed=0)
    assert r["steer"] == {} and np.array_equal(r["default"].wave, r["steered"].wave)
    with pytest.raises(ValueError, match="no SAE loaded"):
        plain.browse(None)
    demo = build_app(cfg, plain)
    assert demo.studio is plain
    bad = AppConfig(text_model=str(tiny_lm / "model"), text_sae=[])
    assert Studio._load_text(bad)[0] is None and "no SAE given" in Studio._load_text(bad)[1]


# ---- the app in a browser ------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(steer_sae, tmp_path_factory):
    """`ttslens app` in a subprocess; yields (url, log path); killed at the end."""
    work = tmp_path_factory.mktemp("app_server")
    port = _free_port()
    log = work / "server.log"
    cmd = [sys.executable, "-m", "ttslens.app.cli", "app", "--sae", str(steer_sae), "--port", str(port)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [*cmd, "--work-dir", str(work / "work")], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ttslens app exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail(f"ttslens app did not answer within 180 s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield url, log
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _artifact(path: Path) -> None:
    if os.environ.get("TTSLENS_ARTIFACTS"):
        (REPO / "test-artifacts").mkdir(exist_ok=True)
        shutil.copy(path, REPO / "test-artifacts" / path.name)


DURATION = "sel => { const a = document.querySelector(sel); return a && a.duration > 0 && isFinite(a.duration); }"


@pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (apt-get install chromium)")
def test_app_in_a_browser(server, steer_sae, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url, log = server
    idx = FeatureIndex.load(steer_sae)
    word = _search_word(idx)
    expected = [r for r in idx.filter() if word in r["label"].lower()]
    with sync_playwright() as p:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.goto(url)
            # an empty text: a message on the page, the page still works
            page.fill("#text textarea", "")
            page.click("#synthesize")
            expect(page.get_by_text("Error: empty text").first).to_be_visible(timeout=30_000)
            # a steered synthesis
            page.fill("#text textarea", TEXT)
            box = page.locator("#slider-laughter input[type=number]")
            box.fill("3")
            box.press("Enter")
            expect(page.locator("#slider-laughter input[type=range]")).to_have_value("3")
            page.click("#synthesize")
            page.wait_for_function(DURATION, arg="#audio-steered audio", timeout=120_000)
            page.wait_for_function(DURATION, arg="#audio-default audio", timeout=10_000)
            assert page.evaluate("document.querySelector('#audio-steered audio').duration") > 0
            expect(page.get_by_text("steered: 3/laughter=3").first).to_be_visible()
            expect(page.locator("#edits [role=gridcell]", has_text="preset laughter").first).to_be_visible()
            page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
            # the feature browser: a search filters the table; a row opens its card
            page.get_by_role("tab", name="Feature browser").click()
            expect(page.get_by_text(n_features(len(idx.records)), exact=True)).to_be_visible()
            page.fill("#query textarea", word)
            expect(page.get_by_text(n_features(len(expected)), exact=True)).to_be_visible(timeout=15_000)
            cells = page.locator('#results [data-testid^="cell-"][data-testid$="-0"]')
            expect(cells).to_have_count(len(expected))
            assert sorted(int(t) for t in cells.all_inner_texts()) == [r["feature"] for r in expected]
            cells.first.click()
            f = expected[0]["feature"]
            expect(page.locator(".card h3")).to_contain_text(f"#{f}", timeout=15_000)
            expect(page.locator("#feature input")).to_have_value(str(f))
            page.screenshot(path=str(tmp_path / "app-browser.png"), full_page=True)
        finally:
            browser.close()
    for name in ("app.png", "app-browser.png"):
        assert (tmp_path / name).stat().st_size > 10_000
        _artifact(tmp_path / name)
    assert "Traceback" not in log.read_text()


def test_eight_concurrent_requests(server, tmp_path):
    from gradio_client import Client

    url, log = server
    client = Client(url, verbose=False, download_files=str(tmp_path))

    words = ["one", "two", "three", "four", "five", "six", "seven", "eight"]
    t0 = time.time()
    jobs = [
        client.submit(
            f"request {w} is here.",
            "",
            i,
            "speech",
            False,
            "3",
            0.5 * (i % 3),
            0.0,
            0.0,
            "",
            0.0,
            "",
            0.0,
            "",
            0.0,
            "",
            "",
            api_name="/synthesize",
        )  # fmt: skip
        for i, w in enumerate(words)
    ]
    results = [job.result(timeout=300) for job in jobs]
    seconds = time.time() - t0
    for i, (default, steered, _measures, _edits, _plot, status) in enumerate(results):
        assert "Error" not in status and f"seed {i}" in status, status
        assert Path(default).is_file() and Path(steered).is_file()
    bad = client.predict(
        "", "", 0, "speech", False, "3", 0.0, 0.0, 0.0, "", 0.0, "", 0.0, "", 0.0, "", "", api_name="/synthesize"
    )
    assert bad[-1].startswith("**Error:** empty text")
    assert "Traceback" not in log.read_text()
    print(f"8 concurrent syntheses in {seconds:.1f} s")
    assert math.isfinite(seconds)

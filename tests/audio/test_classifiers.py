"""Hugging Face audio classifiers on tiny random AST / wav2vec2 models saved locally (no downloads)."""

import numpy as np
import pytest
from scipy.special import expit, logit

from tests.conftest import AST_LABELS, save_wav2vec2  # the tiny models the fixtures build (ast_dir, gender_dir)
from ttslens.audio.measures import classifiers
from ttslens.audio.measures.classifiers import AudioClassifier, GenderClassifier, LaughterClassifier, fit_calibration

SR = 22050


@pytest.fixture(scope="module")
def waves():
    rng = np.random.default_rng(0)
    t = np.arange(3 * SR) / SR
    tone = np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 4 * t))
    return [(0.2 * tone[:n] + 0.05 * rng.standard_normal(n)).astype(np.float32) for n in (SR, SR // 2, 5 * SR // 2)]


@pytest.fixture
def no_warnings_yet(monkeypatch):
    monkeypatch.setattr(classifiers, "_WARNED", set())


def test_laughter_prob(ast_dir, waves):
    laughter = LaughterClassifier.load(str(ast_dir))
    clf = laughter.clf
    assert clf.labels == list(AST_LABELS.values()) and clf.multi_label and clf.sampling_rate == 16000
    assert laughter.indices == [1, 2] == clf.label_index(["giggle", "LAUGHTER", "Snicker"])[::-1]
    p = laughter.prob(waves, SR)
    assert p.shape == (3,) and np.all((p >= 0) & (p <= 1))
    np.testing.assert_array_equal(p, laughter.prob(waves, SR))  # deterministic
    np.testing.assert_allclose(p, [laughter.prob([w], SR)[0] for w in waves], atol=1e-6)  # batch-independent
    probs = clf.probs(waves, SR)
    assert probs.shape == (3, 4) and not np.allclose(probs.sum(1), 1)  # sigmoids, not a softmax
    np.testing.assert_allclose(p, probs[:, [1, 2]].max(1), rtol=1e-6)
    with pytest.raises(ValueError, match="none of the labels"):
        clf.label_index(["Dog"])


def test_calibration_is_monotone(ast_dir, waves):
    raw = LaughterClassifier.load(str(ast_dir))
    a, b = 3.0, -2.0
    calibrated = LaughterClassifier(raw.clf, calibration=(a, b))
    p_raw, p = raw.prob(waves, SR), calibrated.prob(waves, SR)
    np.testing.assert_allclose(p, expit(a * logit(p_raw.astype(np.float64)) + b), rtol=1e-4)
    assert (np.argsort(p) == np.argsort(p_raw)).all() and not np.allclose(p, p_raw)
    np.testing.assert_array_equal(calibrated.prob(waves, SR, calibrated=False), p_raw)


def test_fit_calibration_recovers_known_scaling():
    rng = np.random.default_rng(1)
    z = rng.normal(-3.0, 1.5, 4000)  # low raw probabilities, as AST gives 1-s clips
    labels = rng.random(4000) < expit(2.0 * z + 4.0)
    a, b = fit_calibration(expit(z), labels.astype(int))
    assert a == pytest.approx(2.0, abs=0.25) and b == pytest.approx(4.0, abs=0.6)
    a, b = fit_calibration(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1]))  # separable: stays finite
    assert np.isfinite([a, b]).all() and a > 0
    with pytest.raises(ValueError, match="both classes"):
        fit_calibration(np.array([0.1, 0.2]), np.array([1, 1]))
    with pytest.raises(ValueError, match="differ in length"):
        fit_calibration(np.array([0.1, 0.2]), np.array([1]))


def test_missing_hub_id_warns_once(no_warnings_yet):
    with pytest.warns(UserWarning) as record:
        assert LaughterClassifier.load("ttslens-test/no-such-model") is None
        assert GenderClassifier.load("ttslens-test/no-such-model") is None
    messages = [str(r.message) for r in record if "evidence is skipped" in str(r.message)]
    assert len(messages) == 1 and "not in the local Hugging Face cache" in messages[0]
    assert "hf download ttslens-test/no-such-model" in messages[0]


def test_broken_local_directory_raises(tmp_path):
    with pytest.raises(OSError):  # a directory is the user's own model: a real error, not "absent weights"
        AudioClassifier.load(str(tmp_path))


def test_p_male(gender_dir, waves):
    gender = GenderClassifier.load(str(gender_dir))
    assert gender.clf.labels == ["female", "male"] and not gender.clf.multi_label
    p = gender.p_male(waves, SR)
    assert p.shape == (3,) and np.all((p >= 0) & (p <= 1))
    np.testing.assert_allclose(p, [gender.p_male([w], SR)[0] for w in waves], atol=1e-5)  # attention mask
    np.testing.assert_allclose(p, gender.clf.probs(waves, SR)[:, 1], rtol=1e-6)


def test_no_mask_batches_equal_lengths_only(tmp_path, waves):
    clf = AudioClassifier.load(str(save_wav2vec2(tmp_path, {0: "female", 1: "male"}, attention_mask=False)))
    lengths = [np.zeros(n) for n in (300, 500, 300, 500, 700)]
    assert clf._batches(lengths, batch_size=16) == [[0, 2], [1, 3], [4]]
    assert clf._batches(lengths, batch_size=1) == [[0], [2], [1], [3], [4]]
    p = clf.probs(waves, SR)
    np.testing.assert_allclose(p, np.concatenate([clf.probs([w], SR) for w in waves]), atol=1e-6)


def test_gender_model_needs_male_label(tmp_path):
    path = save_wav2vec2(tmp_path, {0: "adult", 1: "child"})
    with pytest.raises(ValueError, match="no label named 'male'"):
        GenderClassifier.load(str(path))

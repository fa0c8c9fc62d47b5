"""The demo backbone's training corpus: espeak-ng speech with laughs, tags and instructs, plus ground truth.

Each utterance is a generated sentence spoken by one of `VOICES` at 110-260 wpm. Some carry `[laughter]` tags
between words (a synthetic laugh is rendered there), a few laugh without a tag (spontaneous), and some come
with an instruct naming the speaker's gender and/or pace ("a woman speaking quickly."). The ground truth
(`truth.jsonl`) records, per utterance, the text, instruct, voice, rate, the laughter spans in seconds and
the phoneme track (each phoneme's start, from espeak-ng's own timing; `PAUSE` in silences, `LAUGH` where a
tagged laugh sounds).

    out_dir/wav/<id>.wav   16 kHz PCM_16 mono
    out_dir/truth.jsonl    one Utterance JSON per line
    out_dir/corpus.json    the settings it was built with (a re-run with other settings is refused)
"""

from __future__ import annotations

import json
import multiprocessing
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from ttslens.audio.backbones.demo.espeak import VOICE_BY_NAME, VOICES, render_laugh, require_espeak, speak_aligned
from ttslens.audio.backbones.demo.sentences import SentenceGenerator
from ttslens.sae.errors import BadInput, MissingFile
from ttslens.sae.files import atomic_path

LAUGH_TAG = "[laughter]"
INSTRUCT_GENDER = {"male": "a man", "female": "a woman"}
INSTRUCT_SOMEONE = "someone"
INSTRUCT_PACE = {"fast": "quickly", "slow": "slowly"}
RATE_WPM = (110, 260)
FAST_WPM, SLOW_WPM = 210, 150  # at or above: "fast"; at or below: "slow"
TARGET_DBFS = -23.0
PEAK_LIMIT = 0.98
PAUSE_S = (0.05, 0.15)
PAUSE, LAUGH = "_", "LAUGH"  # phoneme-track names of silence (espeak-ng's short pause) and of a tagged laugh
TRUTH, SETTINGS, WAV_DIR = "truth.jsonl", "corpus.json", "wav"
JOURNAL = "truth.partial.jsonl"  # each finished utterance appended as it comes, so an interrupted build resumes


# ---------------------------------------------------------------------------------------- instructs


def pace_of(rate_wpm: int) -> str | None:
    """The pace an instruct states for a speaking rate: "fast", "slow" or None (ordinary)."""
    if rate_wpm >= FAST_WPM:
        return "fast"
    if rate_wpm <= SLOW_WPM:
        return "slow"
    return None


def instruct_text(gender: str | None, pace: str | None) -> str | None:
    """A short instruct prefix: "a man speaking.", "a woman speaking quickly.", "someone speaking slowly."."""
    if gender is None and pace is None:
        return None
    who = INSTRUCT_GENDER[gender] if gender is not None else INSTRUCT_SOMEONE
    how = f" {INSTRUCT_PACE[pace]}" if pace is not None else ""
    return f"{who} speaking{how}."


def parse_instruct(text: str | None) -> tuple[str | None, str | None]:
    """(gender, pace) named by an instruct; the inverse of `instruct_text`."""
    words = set(re.findall(r"[a-z]+", (text or "").lower()))
    gender = "female" if words & {"woman", "female", "girl", "lady"} else None
    gender = gender or ("male" if words & {"man", "male", "boy", "gentleman"} else None)
    pace = "fast" if words & {"quickly", "fast", "rapidly"} else ("slow" if words & {"slowly", "slow"} else None)
    return gender, pace


# --------------------------------------------------------------------------------------- utterances


@dataclass
class Utterance:
    """One corpus item and its ground truth."""

    id: str
    text: str  # as given to the model, without the instruct; may hold LAUGH_TAG between words
    instruct: str | None
    voice: str  # Voice.name
    gender: str
    rate_wpm: int
    laughter: list[tuple[float, float]] = field(default_factory=list)  # seconds in the rendered audio
    spontaneous: bool = False  # laughs without a tag
    duration: float = 0.0
    phones: list[tuple[str, float]] = field(default_factory=list)  # (phoneme, start s), in order; see `render`

    @property
    def index(self) -> int:
        return int(self.id.removeprefix("utt"))

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, line: str) -> Utterance:
        d = json.loads(line)
        if not isinstance(d, dict):
            raise BadInput("not a JSON object")
        utt = cls(**d)
        utt.laughter = [(float(a), float(b)) for a, b in utt.laughter]
        utt.phones = [(str(p), float(t)) for p, t in utt.phones]
        if not isinstance(utt.text, str) or not isinstance(utt.voice, str):
            raise BadInput("text and voice must be strings")
        return utt


def utterance_id(index: int) -> str:
    return f"utt{index:06d}"


def _boundary(rng: np.random.Generator, n_words: int) -> int:
    """A word boundary 0..n_words: the start, the end or somewhere in the middle."""
    where = rng.choice(["start", "middle", "end"], p=[0.2, 0.5, 0.3]) if n_words > 1 else rng.choice(["start", "end"])
    if where == "start":
        return 0
    if where == "end":
        return n_words
    return int(rng.integers(1, n_words))


def insert_tags(words: list[str], boundaries: list[int]) -> str:
    """Join `words` with LAUGH_TAG inserted before word i for each i in `boundaries` (len(words) = after all)."""
    out: list[str] = []
    for i in range(len(words) + 1):
        out += [LAUGH_TAG] * boundaries.count(i)
        if i < len(words):
            out.append(words[i])
    return " ".join(out)


def sample_utterance(
    rng: np.random.Generator,
    gen: SentenceGenerator,
    index: int,
    p_tagged: float = 0.15,
    p_spontaneous: float = 0.02,
    p_instruct: float = 0.3,
) -> Utterance:
    """Draw voice, rate, sentence, laughter tags and instruct; duration/laughter are filled in by `render`."""
    gender = str(rng.choice(["female", "male"]))
    voices = [v for v in VOICES if v.gender == gender]
    voice = voices[int(rng.integers(len(voices)))]
    rate = int(rng.integers(RATE_WPM[0], RATE_WPM[1] + 1))
    words = gen.sentence().split(" ")
    tagged = rng.random() < p_tagged
    spontaneous = not tagged and rng.random() < p_spontaneous
    text = " ".join(words)
    if tagged:
        first = _boundary(rng, len(words))
        boundaries = [first]
        if rng.random() < 0.25:
            second = _boundary(rng, len(words))
            if second != first:
                boundaries.append(second)
        text = insert_tags(words, boundaries)
    instruct = None
    if rng.random() < p_instruct:
        pace = pace_of(rate)
        hint_gender = rng.random() < 0.8 or pace is None
        instruct = instruct_text(gender if hint_gender else None, pace)
    return Utterance(utterance_id(index), text, instruct, voice.name, gender, rate, spontaneous=spontaneous)


# ---------------------------------------------------------------------------------------- rendering


def _segments(utt: Utterance, rng: np.random.Generator) -> list[str | None]:
    """The text pieces to speak in order, None where a laugh goes."""
    pieces: list[str | None] = []
    for i, part in enumerate(utt.text.split(LAUGH_TAG)):
        if i > 0:
            pieces.append(None)
        if part.strip():
            pieces.append(part.strip())
    if utt.spontaneous and None not in pieces:
        words = utt.text.split()
        k = _boundary(rng, len(words))
        pieces = [p for p in (" ".join(words[:k]), None, " ".join(words[k:])) if p != ""]
    return pieces


def _level(x: np.ndarray, sample_rate: int) -> float:
    """Loudness of the active part: the 90th percentile of 20 ms frame RMS."""
    hop = int(0.02 * sample_rate)
    frames = x[: len(x) // hop * hop].reshape(-1, hop) if len(x) >= hop else x[None, :]
    return float(np.percentile(np.sqrt(np.mean(frames**2, axis=1)), 90)) + 1e-9


def render(
    utt: Utterance, rng: np.random.Generator, sample_rate: int = 16000
) -> tuple[np.ndarray, list[tuple[float, float]], list[tuple[str, float]]]:
    """Speak the text pieces, put a laugh at each tag (or the spontaneous point), join them with short pauses.

    Returns the wave (float32, normalised to TARGET_DBFS RMS and clip-safe), the laughter spans in seconds,
    and the phoneme track: (name, start s) with repeats merged, PAUSE over silences, LAUGH over a tagged laugh
    (a spontaneous one sits in a PAUSE: its text does not say it).
    """
    voice = VOICE_BY_NAME[utt.voice]
    pieces = _segments(utt, rng)
    spoken = [speak_aligned(p, voice, utt.rate_wpm, sample_rate) if p is not None else None for p in pieces]
    speech = [a for a, _ in filter(None, spoken) if a.size]
    speech_level = float(np.median([_level(a, sample_rate) for a in speech])) if speech else 0.1
    parts: list[np.ndarray] = [np.zeros(int(rng.uniform(0.02, 0.08) * sample_rate), np.float32)]
    track: list[tuple[str, float]] = [(PAUSE, 0.0)]
    spans: list[tuple[int, int]] = []
    for i, piece in enumerate(spoken):
        if i > 0:
            track.append((PAUSE, sum(len(p) for p in parts) / sample_rate))
            parts.append(np.zeros(int(rng.uniform(*PAUSE_S) * sample_rate), np.float32))
        start = sum(len(p) for p in parts)
        if piece is None:
            a = render_laugh(rng, voice.f0_hz, voice.gender, sample_rate)
            a = a * (speech_level * rng.uniform(0.7, 1.1) / _level(a, sample_rate))
            spans.append((start, start + len(a)))
            track.append((PAUSE if utt.spontaneous else LAUGH, start / sample_rate))
        else:
            a, phones = piece
            track += [(name, start / sample_rate + t) for name, t in phones]
        parts.append(a.astype(np.float32))
    track.append((PAUSE, sum(len(p) for p in parts) / sample_rate))
    parts.append(np.zeros(int(rng.uniform(0.02, 0.08) * sample_rate), np.float32))
    wave = np.concatenate(parts)
    rms = np.sqrt(np.mean(wave**2)) + 1e-9
    gain = min(10 ** (TARGET_DBFS / 20) / rms, PEAK_LIMIT / (np.abs(wave).max() + 1e-9))
    seconds = [(round(a / sample_rate, 3), round(b / sample_rate, 3)) for a, b in spans]
    merged = [(n, round(t, 4)) for k, (n, t) in enumerate(track) if k == 0 or n != track[k - 1][0]]
    return (wave * gain).astype(np.float32), seconds, merged


# ------------------------------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class CorpusSettings:
    """Everything besides n that decides the corpus content."""

    seed: int = 0
    p_tagged: float = 0.15
    p_spontaneous: float = 0.02
    p_instruct: float = 0.3
    sample_rate: int = 16000


def make_utterance(settings: CorpusSettings, index: int, wav_dir: Path | None = None) -> tuple[Utterance, np.ndarray]:
    """Utterance `index` of the corpus, rendered; written to `wav_dir/<id>.wav` (atomically) when given."""
    rng = np.random.default_rng([settings.seed, index])
    gen = SentenceGenerator(int(rng.integers(2**32)))
    utt = sample_utterance(rng, gen, index, settings.p_tagged, settings.p_spontaneous, settings.p_instruct)
    wave, utt.laughter, utt.phones = render(utt, rng, settings.sample_rate)
    utt.duration = round(len(wave) / settings.sample_rate, 3)
    if wav_dir is not None:
        with atomic_path(wav_dir / f"{utt.id}.wav") as tmp:
            sf.write(tmp, wave, settings.sample_rate, subtype="PCM_16", format="WAV")
    return utt, wave


def _build_job(job: tuple[CorpusSettings, int, str]) -> Utterance:
    settings, index, wav_dir = job
    return make_utterance(settings, index, Path(wav_dir))[0]


def _write_truth(out: Path, utts: list[Utterance]) -> None:
    with atomic_path(out / TRUTH) as tmp:
        tmp.write_text("".join(u.to_json() + "\n" for u in sorted(utts, key=lambda u: u.index)))


def _check_settings(out: Path, settings: CorpusSettings) -> None:
    path = out / SETTINGS
    if path.exists():
        old = json.loads(path.read_text())
        if old != asdict(settings):
            raise BadInput(f"{out} holds a corpus built with {old}, not {asdict(settings)}: use another out_dir")
    else:
        path.write_text(json.dumps(asdict(settings)) + "\n")


def build_corpus(
    out_dir: str | Path,
    n: int,
    seed: int = 0,
    progress: bool = True,
    *,
    p_tagged: float = 0.15,
    p_spontaneous: float = 0.02,
    p_instruct: float = 0.3,
    sample_rate: int = 16000,
    workers: int = 2,
) -> list[Utterance]:
    """Render utterances 0..n-1 into `out_dir` (see the module doc); re-running skips those already written.

    Deterministic given the settings: utterance i draws everything from its own rng seeded by (seed, i).
    Uses a pool of `workers` processes when many utterances are missing.
    """
    require_espeak()
    out = Path(out_dir)
    wav_dir = out / WAV_DIR
    wav_dir.mkdir(parents=True, exist_ok=True)
    settings = CorpusSettings(seed, p_tagged, p_spontaneous, p_instruct, sample_rate)
    _check_settings(out, settings)
    done = {u.id: u for u in load_corpus(out)} if (out / TRUTH).exists() else {}
    done |= {u.id: u for u in _journal(out / JOURNAL)}
    have = {
        i: done[utterance_id(i)]
        for i in range(n)
        if utterance_id(i) in done and done[utterance_id(i)].phones and (wav_dir / f"{utterance_id(i)}.wav").exists()
    }
    jobs = [(settings, i, str(wav_dir)) for i in range(n) if i not in have]
    bar = tqdm(total=n, initial=len(have), disable=not progress, desc="corpus", unit="utt")
    pool = multiprocessing.get_context().Pool(workers) if workers > 1 and len(jobs) >= 32 else None
    try:
        results = pool.imap_unordered(_build_job, jobs, chunksize=4) if pool else map(_build_job, jobs)
        with open(out / JOURNAL, "a") as journal:
            for utt in results:
                have[utt.index] = utt
                journal.write(utt.to_json() + "\n")
                journal.flush()
                bar.update()
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        bar.close()
    utts = [have[i] for i in range(n)]
    _write_truth(out, utts)
    (out / JOURNAL).unlink(missing_ok=True)
    return utts


def _journal(path: Path) -> list[Utterance]:
    """The utterances appended to an interrupted build's journal (a torn last line is skipped)."""
    if not path.exists():
        return []
    utts = []
    for line in path.read_text().splitlines():
        try:
            utts.append(Utterance.from_json(line))
        except (ValueError, TypeError, KeyError, AttributeError):
            continue
    return utts


def load_corpus(out_dir: str | Path) -> list[Utterance]:
    """The utterances listed in `out_dir/truth.jsonl`."""
    path = Path(out_dir) / TRUTH
    if not path.is_file():
        raise MissingFile(f"{path} not found: build the corpus first with audio.corpus.build_corpus")
    utts = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                utts.append(Utterance.from_json(line))
            except (ValueError, TypeError, KeyError, AttributeError) as e:
                msg = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise BadInput(f"{path} line {lineno} is not a valid utterance ({msg}): rebuild the corpus") from None
    return utts

"""The demo backbone's vocabulary: specials, characters, then speech tokens, in one id space.

Sequence layout (as CosyVoice3's): `<sos> [instruct <endofprompt>] text <task> speech… <eos>`. A speech frame
has C columns: its phoneme, the next phoneme (see phones.py), then the codec's codes; column c's id k is
`speech_offset + c * codebook_size + k`. The LM head reads `<stay>` / `<next>` / `<eos>` off a frame: stay on
the current phoneme, move to the next one, or stop.
Text is read character by character after a light normalisation (lower case, accents stripped,
typographic quotes and dashes folded); `[laughter]` is one token. Anything else is refused with a
message that names the characters.
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np

from ttslens.sae.errors import BadInput

SPECIALS = ("<pad>", "<sos>", "<endofprompt>", "<task>", "<eos>", "<stay>", "<next>")
PHONE_COLUMNS = 2  # (phoneme, next phoneme) before the codec's codes
TAGS = ("[laughter]",)
CHARS = " abcdefghijklmnopqrstuvwxyz.,?!'-"
FOLD = {"’": "'", "‘": "'", "`": "'", "“": "", "”": "", '"': "", ";": ",", ":": ",", "—": "-", "–": "-"}
_TAG = re.compile(r"\[([^\[\]]*)\]")


class DemoTokenizer:
    """Character tokenizer + speech ids after the text vocabulary: column c's id k is
    `speech_offset + c * codebook_size + k`; `phonemes` is the phoneme inventory (UNK and END first)."""

    def __init__(self, codebook_size: int, n_codebooks: int, phonemes: list[str]) -> None:
        from ttslens.audio.backbones.demo.phones import END, UNK

        if phonemes[:2] != [UNK, END] or len(phonemes) > codebook_size:
            raise BadInput(f"a phoneme inventory starts with {UNK}, {END} and has at most {codebook_size} names")
        # ids per column: the codec's codebook size, or the inventory's where that is larger (tiny codecs)
        self.codebook_size, self.n_codebooks = codebook_size, n_codebooks
        self.phonemes = list(phonemes)
        self.phone_index = {p: i for i, p in enumerate(self.phonemes)}
        self.n_speech = codebook_size * n_codebooks
        self.text_vocab = [*SPECIALS, *TAGS, *CHARS]
        self.index = {t: i for i, t in enumerate(self.text_vocab)}
        self.pad, self.sos, self.eop, self.task, self.eos, self.stay, self.next = (self.index[s] for s in SPECIALS)
        self.speech_offset = len(self.text_vocab)
        self.vocab_size = self.speech_offset + self.n_speech

    def normalize(self, text: str) -> str:
        text = unicodedata.normalize("NFKD", text)
        text = "".join(FOLD.get(c, c) for c in text if not unicodedata.combining(c)).lower()
        return " ".join(text.split())

    def encode_text(self, text: str, what: str = "text") -> list[int]:
        """Ids of a text (or instruct); raises ValueError naming any problem."""
        text = self.normalize(text)
        if not text:
            raise BadInput(f"empty {what}: give at least one word")
        ids: list[int] = []
        pos = 0
        for m in _TAG.finditer(text):
            ids += self._chars(text[pos : m.start()], what)
            tag = f"[{m.group(1).strip()}]"
            if tag not in TAGS:
                raise BadInput(f"unknown tag {m.group(0)!r} in the {what}: the demo backbone knows {', '.join(TAGS)}")
            ids.append(self.index[tag])
            pos = m.end()
        ids += self._chars(text[pos:], what)
        return ids

    def _chars(self, s: str, what: str) -> list[int]:
        if "[" in s or "]" in s:
            raise BadInput(f"malformed tag in the {what} near {s.strip()!r}: write tags as [laughter]")
        bad = sorted({c for c in s if c not in self.index})
        if bad:
            hint = " (spell numbers out)" if any(c.isdigit() for c in bad) else ""
            raise BadInput(
                f"the {what} has characters the demo backbone cannot read: {''.join(bad)!r}{hint}; "
                f"it reads letters, spaces and {CHARS[27:]!r}"
            )
        return [self.index[c] for c in s]

    def decode_text(self, ids) -> str:
        return "".join(self.text_vocab[i] for i in ids if i < self.speech_offset and i >= len(SPECIALS))

    def to_dict(self) -> dict:
        return {
            "codebook_size": self.codebook_size,
            "n_codebooks": self.n_codebooks,
            "text_vocab": self.text_vocab,
            "phonemes": self.phonemes,
        }

    @classmethod
    def from_dict(cls, d: dict) -> DemoTokenizer:
        if "phonemes" not in d:
            raise BadInput("the tokenizer file is from an older demo backbone: rebuild with `ttslens demo build`")
        tok = cls(int(d["codebook_size"]), int(d["n_codebooks"]), list(d["phonemes"]))
        if d.get("text_vocab") != tok.text_vocab:
            raise BadInput("the tokenizer file does not match this ttslens: rebuild with `ttslens demo build`")
        return tok


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Non-negative integer codes (< 2**bits, any shape) → a uint8 bit stream, `bits` bits per code."""
    flat = np.asarray(codes, dtype=np.int64).reshape(-1)
    if flat.size and (flat.min() < 0 or flat.max() >= 2**bits):
        raise BadInput(f"codes must lie in 0..{2**bits - 1} to pack them in {bits} bits")
    planes = (flat[:, None] >> np.arange(bits)) & 1
    return np.packbits(planes.astype(np.uint8).reshape(-1))


def unpack_codes(packed: np.ndarray, bits: int, n: int) -> np.ndarray:
    """The first `n` codes of `pack_codes` output, as int64."""
    planes = np.unpackbits(np.asarray(packed, dtype=np.uint8))[: n * bits].reshape(n, bits).astype(np.int64)
    return (planes << np.arange(bits)).sum(1)

"""CosyVoice3's text side: the `CosyVoice-BlankEN` Qwen2 tokenizer plus the special tokens CosyVoice3 adds to
it at load time, in its order (so every id lands where the official frontend puts it: `<|endofprompt|>` is
151646 on the real tokenizer), and the prompt texts of its three modes.

Modes (as the official frontend builds them; the LM asserts that `<|endofprompt|>` occurs):
- zero-shot: prompt text = `SYSTEM + <|endofprompt|> + the prompt's transcript`, then the prompt's speech;
- instruct: prompt text = the instruction ending in `<|endofprompt|>`, no prompt speech in the LM;
- cross-lingual / no prompt: `SYSTEM + <|endofprompt|>` before the text, no prompt speech.
"""

from __future__ import annotations

from pathlib import Path

from ttslens.sae.errors import BadInput
from ttslens.sae.notes import note

END_OF_PROMPT = "<|endofprompt|>"
SYSTEM = "You are a helpful assistant."
TAGS = [
    "[breath]", "<strong>", "</strong>", "[noise]", "[laughter]", "[cough]", "[clucking]", "[accent]",
    "[quick_breath]", "<laughter>", "</laughter>", "[hissing]", "[sigh]", "[vocalized-noise]", "[lipsmack]", "[mn]",
]  # fmt: skip
_VOWELS = "AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW".split()
_CONSONANTS = "B CH D DH F G HH JH K L M N NG P R S SH T TH V W Y Z ZH".split()
_PINYIN = (
    "a ai an ang ao b c ch d e ei en eng f g h i ian in ing iu ià iàn iàng iào iá ián iáng iáo iè ié iòng ióng iù iú "
    "iā iān iāng iāo iē iě iōng iū iǎ iǎn iǎng iǎo iǒng iǔ j k l m n o ong ou p q r s sh t u uang ue un uo uà uài uàn "
    "uàng uá uái uán uáng uè ué uì uí uò uó uā uāi uān uāng uē uě uī uō uǎ uǎi uǎn uǎng uǐ uǒ vè w x y z zh à ài àn "
    "àng ào á ái án áng áo è èi èn èng èr é éi én éng ér ì ìn ìng í ín íng ò òng òu ó óng óu ù ùn ú ún ā āi ān āng āo "
    "ē ēi ēn ēng ě ěi ěn ěng ěr ī īn īng ō ōng ōu ū ūn ǎ ǎi ǎn ǎng ǎo ǐ ǐn ǐng ǒ ǒng ǒu ǔ ǔn ǘ ǚ ǜ"
).split()


def cmu_phones() -> list[str]:
    """`[AA] [AA0] [AA1] [AA2] ... [ZH]`: CMU phones in name order, each vowel bare and with stress 0, 1, 2."""
    out = []
    for p in sorted(_VOWELS + _CONSONANTS):
        out += [f"[{p}{s}]" for s in ("", "0", "1", "2")] if p in _VOWELS else [f"[{p}]"]
    return out


def special_tokens() -> list[str]:
    """The additional special tokens CosyVoice3's tokenizer registers, in its order (278 are new on BlankEN)."""
    return ["<|im_start|>", "<|im_end|>", END_OF_PROMPT, *TAGS, "<|endofsystem|>", *cmu_phones()] + [
        f"[{p}]" for p in _PINYIN
    ]


def load_text_tokenizer(blank_en: Path):
    """BlankEN's tokenizer with CosyVoice3's specials added (eos and pad `<|endoftext|>`)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(blank_en))
    tok.add_special_tokens(
        {"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "additional_special_tokens": special_tokens()}
    )
    return tok


def instruct_text(instruct: str) -> str:
    """An instruct as the LM needs it: ending in `<|endofprompt|>` (added, with a note, when missing)."""
    instruct = instruct.strip()
    if not instruct:
        raise BadInput("the instruct is empty: describe the style (e.g. 'Please speak as fast as you can.')")
    if END_OF_PROMPT in instruct[: -len(END_OF_PROMPT)]:
        raise BadInput(f"the instruct holds {END_OF_PROMPT} before its end: it may only close the instruct")
    if not instruct.endswith(END_OF_PROMPT):
        note(f"CosyVoice3 instructs end in {END_OF_PROMPT}: added it to {instruct!r}")
        instruct += END_OF_PROMPT
    return instruct


def prompt_text(instruct: str | None, transcript: str | None) -> str:
    """What precedes the text to speak: the instruct, else the system line (+ a voice prompt's transcript)."""
    if instruct is not None:
        return instruct_text(instruct)
    return SYSTEM + END_OF_PROMPT + (transcript or "")

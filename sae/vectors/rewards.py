"""Rewards for training steering vectors: a SPEC string names one, or a weighted sum of several.

    regex:PATTERN        1 if the completion matches PATTERN (re.search), else 0
    answer               1 if the completion's final number equals the prompt's `answer` (GSM8K-style check;
                         the prompts file gives each prompt its answer)
    exact                1 if the completion, stripped, equals the prompt's `answer`
    module:function      any Python callable f(prompt, completion, **info) -> float (module importable or a .py
                         path); for a TTS backbone `completion` is the sample (its wave, sample rate, text)
    NAME                 a reward registered by name (`register`): the TTS backbones register `laughter`,
                         `male`, `female`, `slower`, `faster`, `content` (`ttslens.audio.vectors`)
    0.5*laughter+content a weighted sum

A reward returns one finite float per sample. One that raises or returns NaN / a non-number skips that sample
(it is counted, the run goes on): `score` returns None for it.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ttslens.sae.errors import BadInput

RewardFn = Callable[..., float]
_REGISTRY: dict[str, Callable[[], RewardFn]] = {}  # name → factory (audio rewards build their measures lazily)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def register(name: str, factory: Callable[[], RewardFn]) -> None:
    _REGISTRY[name] = factory


def final_number(text: str) -> float | None:
    """The last number written in `text` (commas as thousands separators), None without one."""
    found = _NUMBER.findall(text or "")
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


def _regex(pattern: str) -> RewardFn:
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise BadInput(f"--reward regex:{pattern}: not a regular expression ({e})") from None
    return lambda prompt, completion, **_: float(rx.search(str(completion)) is not None)


def _answer(prompt, completion, answer=None, **_) -> float:
    if answer is None:
        raise BadInput("the `answer` reward needs an `answer` for each prompt (a JSONL prompts file)")
    got, want = final_number(str(completion)), final_number(str(answer))
    return float(got is not None and want is not None and abs(got - want) < 1e-6)


def _exact(prompt, completion, answer=None, **_) -> float:
    if answer is None:
        raise BadInput("the `exact` reward needs an `answer` for each prompt (a JSONL prompts file)")
    return float(str(completion).strip() == str(answer).strip())


def _callable(spec: str) -> RewardFn:
    mod_name, _, fn_name = spec.rpartition(":")
    try:
        if mod_name.endswith(".py") or Path(mod_name).suffix == ".py":
            path = Path(mod_name)
            if not path.exists():
                raise BadInput(f"--reward {spec}: {path} does not exist")
            mspec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(mspec)
            sys.modules.setdefault(path.stem, module)
            mspec.loader.exec_module(module)
        else:
            module = importlib.import_module(mod_name)
    except BadInput:
        raise
    except Exception as e:
        raise BadInput(f"--reward {spec}: cannot import {mod_name} ({type(e).__name__}: {e})") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise BadInput(f"--reward {spec}: {mod_name} has no function {fn_name!r}")
    return fn


def _one(term: str) -> RewardFn:
    if term.startswith("regex:"):
        return _regex(term[len("regex:") :])
    if term == "answer":
        return _answer
    if term == "exact":
        return _exact
    if term in _REGISTRY:
        return _REGISTRY[term]()
    if ":" in term:
        return _callable(term)
    known = ", ".join(["regex:PATTERN", "answer", "exact", "module:function", *sorted(_REGISTRY)])
    raise BadInput(f"unknown reward {term!r}: use one of {known}")


class Reward:
    """A parsed SPEC: score(prompt, completion, **info) → float, or None when the reward failed for it."""

    def __init__(self, spec: str) -> None:
        if not spec or not spec.strip():
            raise BadInput("give a reward: --reward SPEC (e.g. regex:PATTERN, answer, module:function)")
        self.spec = spec.strip()
        self.terms: list[tuple[float, str, RewardFn]] = []
        for part in _split_terms(self.spec):
            weight, name = 1.0, part
            m = re.fullmatch(r"\s*(-?[\d.]+)\s*\*\s*(.+)", part)
            if m and not part.startswith("regex:"):
                weight, name = float(m.group(1)), m.group(2).strip()
            self.terms.append((weight, name, _one(name)))
        self.failures = 0

    def score(self, prompt: Any, completion: Any, **info) -> float | None:
        total = 0.0
        for weight, _name, fn in self.terms:
            try:
                r = fn(prompt, completion, **info)
                r = float(r)
            except BadInput:
                raise
            except Exception:  # the reward's own failure: this sample is skipped, the run goes on
                self.failures += 1
                return None
            if not math.isfinite(r):
                self.failures += 1
                return None
            total += weight * r
        return total

    def parts(self, prompt: Any, completion: Any, **info) -> dict[str, float | None]:
        """Each term's value alone (for logs and benchmarks)."""
        out = {}
        for _, name, fn in self.terms:
            try:
                out[name] = float(fn(prompt, completion, **info))
            except Exception:
                out[name] = None
        return out


def _split_terms(spec: str) -> list[str]:
    """'a+0.5*b' → ['a', '0.5*b']; a regex term takes the rest of the string (its pattern may hold '+')."""
    out, rest = [], spec
    while rest:
        if rest.startswith("regex:") or re.match(r"-?[\d.]+\s*\*\s*regex:", rest):
            out.append(rest)
            break
        head, sep, rest = rest.partition("+")
        if head.strip():
            out.append(head.strip())
        if not sep:
            break
    return out

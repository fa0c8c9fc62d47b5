"""A small client for OpenAI-compatible chat endpoints (POST {base_url}/chat/completions).

Used by the auto-interp labeler and judge. Standard library only. `ChatClient.chat` never raises for
endpoint problems: it retries transient failures with backoff and returns a `ChatResult` whose `error`
says in one line what went wrong. Successful answers are cached in an append-only JSON-lines file.
The API key is read from the environment at request time and is never stored in the config, the cache,
error messages or reprs.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import json
import os
import random
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from ttslens.sae.errors import BadInput

DEFAULT_BASE_URL = "https://api.openai.com/v1"
FALLBACK_KEY_ENV = "OPENAI_API_KEY"
MAX_BACKOFF_S = 30.0


@dataclass
class LLMConfig:
    """Where and how to call the chat endpoint."""

    base_url: str = ""
    """Endpoint root (…/v1). "" = $TTSLENS_LLM_BASE_URL, else $OPENAI_BASE_URL, else https://api.openai.com/v1."""
    model: str = ""
    """Model name. "" = $TTSLENS_LLM_MODEL; required before any request."""
    api_key_env: str = "TTSLENS_LLM_API_KEY"
    """Name of the env var holding the key (fallback $OPENAI_API_KEY); the key itself is never stored."""
    timeout_s: float = 60.0
    """Per-attempt socket timeout in seconds."""
    retries: int = 4
    """Attempts after the first, for connection errors, timeouts, HTTP 429 and 5xx."""
    backoff_s: float = 1.0
    """Wait before retry n (0-based): backoff_s * 2**n plus up to 10% jitter, capped at 30 s."""
    temperature: float = 0.0
    """Sampling temperature sent with each request."""
    max_tokens: int = 300
    """Completion length limit sent with each request."""


class ChatResult(NamedTuple):
    """Outcome of one `ChatClient.chat` call."""

    text: str | None
    """The assistant message content; None on failure."""
    error: str | None
    """One line: what failed, after how many attempts; None on success."""
    cached: bool
    """True when the answer came from the disk cache (no request made)."""
    attempts: int
    """HTTP attempts made (0 for a cache hit)."""


class _Failure(Exception):
    """Internal: one failed attempt; `retry` says whether another attempt may help."""

    def __init__(self, msg: str, retry: bool, wait_s: float | None = None):
        super().__init__(msg)
        self.msg, self.retry, self.wait_s = msg, retry, wait_s


def _one_line(s: str, limit: int = 200) -> str:
    s = " ".join(str(s).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ChatClient:
    """Thread-safe chat client with retries and an optional append-only JSON-lines answer cache."""

    def __init__(self, cfg: LLMConfig, cache_path: str | Path | None = None):
        self.cfg = cfg
        base = cfg.base_url or os.environ.get("TTSLENS_LLM_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
        self.base_url = (base or DEFAULT_BASE_URL).rstrip("/")
        if urllib.parse.urlsplit(self.base_url).scheme not in ("http", "https"):
            raise BadInput(f"LLM base_url must start with http:// or https://, got {self.base_url!r}")
        self.url = self.base_url if self.base_url.endswith("/chat/completions") else self.base_url + "/chat/completions"
        self.model = cfg.model or os.environ.get("TTSLENS_LLM_MODEL", "")
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self._lock = threading.Lock()
        self._cache: dict[str, str] = {}
        self._needs_newline = False
        # Loopback endpoints (local servers, tests) bypass any proxy configured in the environment.
        handlers = [urllib.request.ProxyHandler({})] if _is_loopback(self.url) else []
        self._opener = urllib.request.build_opener(*handlers)
        if self.cache_path is not None:
            self._load_cache()

    def __repr__(self) -> str:
        return f"ChatClient(url={self.url!r}, model={self.model!r}, cache_path={self.cache_path!r})"

    # --- key and config --------------------------------------------------------------------------

    def _key(self) -> tuple[str | None, str]:
        """(key or None, name of the env var it came from / should come from)."""
        env = self.cfg.api_key_env
        if env and os.environ.get(env):
            return os.environ[env], env
        if os.environ.get(FALLBACK_KEY_ENV):
            return os.environ[FALLBACK_KEY_ENV], FALLBACK_KEY_ENV
        return None, env or FALLBACK_KEY_ENV

    def check(self) -> None:
        """Raise ValueError if the model is unset, or the key is unset for a non-local endpoint."""
        if not self.model:
            raise BadInput("no LLM model: set LLMConfig.model or $TTSLENS_LLM_MODEL")
        key, env = self._key()
        if key is None and not _is_loopback(self.url):
            raise BadInput(f"no API key for {self.url}: set ${env} (or ${FALLBACK_KEY_ENV})")

    # --- cache -----------------------------------------------------------------------------------

    def _load_cache(self) -> None:
        assert self.cache_path is not None
        if not self.cache_path.exists():
            return
        raw = self.cache_path.read_bytes()
        self._needs_newline = bool(raw) and not raw.endswith(b"\n")
        for line in raw.decode("utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(line)
                if isinstance(rec, dict) and isinstance(rec.get("key"), str) and isinstance(rec.get("response"), str):
                    self._cache[rec["key"]] = rec["response"]
            except ValueError:
                continue  # e.g. a truncated last line after a kill

    def _append(self, rec: dict) -> None:
        assert self.cache_path is not None
        line = json.dumps(rec, ensure_ascii=False) + "\n"
        if self._needs_newline:  # do not glue a new record onto a truncated last line
            line = "\n" + line
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.cache_path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self._needs_newline = False

    @staticmethod
    def cache_key(base_url: str, body: dict) -> str:
        """sha256 over (base_url, model, messages, temperature, max_tokens[, other body fields])."""
        parts: list[Any] = [base_url, body["model"], body["messages"], body["temperature"], body["max_tokens"]]
        extra = {k: v for k, v in body.items() if k not in ("model", "messages", "temperature", "max_tokens")}
        if extra:
            parts.append(extra)
        return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    # --- requests --------------------------------------------------------------------------------

    def chat(self, messages: list[dict], **overrides: Any) -> ChatResult:
        """Send one chat request (or answer from the cache); never raises for endpoint problems.

        `overrides` replace request-body fields (model, temperature, max_tokens) or add others
        (e.g. response_format); all of them enter the cache key. Connection errors, timeouts, HTTP 429
        and 5xx are retried with exponential backoff; other HTTP 4xx and malformed responses fail at once.
        Raises ValueError only for a missing model (a configuration error).
        """
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": self.cfg.temperature,
            "max_tokens": self.cfg.max_tokens,
            **overrides,
        }
        if not body["model"]:
            raise BadInput("no LLM model: set LLMConfig.model or $TTSLENS_LLM_MODEL")
        key = self.cache_key(self.base_url, body)
        if self.cache_path is not None:
            with self._lock:
                hit = self._cache.get(key)
            if hit is not None:
                return ChatResult(hit, None, True, 0)

        data = json.dumps(body, ensure_ascii=False).encode()
        attempts, total = 0, 1 + max(0, self.cfg.retries)
        while True:
            attempts += 1
            try:
                text = self._post(data)
            except _Failure as fail:
                if not fail.retry or attempts >= total:
                    plural = "s" if attempts != 1 else ""
                    return ChatResult(None, f"{fail.msg} (after {attempts} attempt{plural})", False, attempts)
                wait = self.cfg.backoff_s * 2 ** (attempts - 1)
                wait = min(MAX_BACKOFF_S, wait + random.uniform(0, 0.1 * wait))
                if fail.wait_s is not None:
                    wait = min(MAX_BACKOFF_S, max(wait, fail.wait_s))
                time.sleep(wait)
                continue
            if self.cache_path is not None:
                rec = {
                    "key": key,
                    "model": body["model"],
                    "messages": messages,
                    "response": text,
                    "time": datetime.now(UTC).isoformat(timespec="seconds"),
                }
                with self._lock:
                    self._cache[key] = text
                    self._append(rec)
            return ChatResult(text, None, False, attempts)

    def _post(self, data: bytes) -> str:
        """One HTTP attempt; returns the assistant text or raises _Failure (never with the key in it)."""
        api_key, env = self._key()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        try:
            with self._opener.open(req, timeout=self.cfg.timeout_s) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raise self._http_failure(e, api_key, env) from None
        except urllib.error.URLError as e:
            reason = e.reason
            if isinstance(reason, TimeoutError):
                raise _Failure(f"timeout after {self.cfg.timeout_s:g} s from {self.url}", True) from None
            msg = getattr(reason, "strerror", None) or str(reason)
            raise _Failure(f"connection failed to {self.url}: {_one_line(msg)}", True) from None
        except TimeoutError:
            raise _Failure(f"timeout after {self.cfg.timeout_s:g} s from {self.url}", True) from None
        except (OSError, http.client.HTTPException) as e:
            raise _Failure(f"connection failed to {self.url}: {type(e).__name__}", True) from None
        return self._parse(raw)

    def _http_failure(self, e: urllib.error.HTTPError, api_key: str | None, env: str) -> _Failure:
        try:
            detail = e.read().decode("utf-8", errors="replace")
        except Exception:
            detail = ""
        try:
            err = json.loads(detail).get("error")
            detail = err.get("message", "") if isinstance(err, dict) else str(err or detail)
        except (ValueError, AttributeError):
            pass
        if api_key:
            detail = detail.replace(api_key, "<redacted>")
        detail = _one_line(detail)
        msg = f"HTTP {e.code} from {self.url}" + (f": {detail}" if detail else "")
        if e.code in (401, 403):
            hint = f"check the key in ${env}" if api_key else f"no key was sent: set ${env}"
            return _Failure(f"{msg} ({hint})", False)
        if e.code == 429 or e.code >= 500:
            wait = None
            retry_after = e.headers.get("Retry-After") if e.headers else None
            if retry_after:
                try:
                    wait = float(retry_after)
                except ValueError:
                    wait = None
            return _Failure(msg, True, wait)
        return _Failure(msg, False)

    def _parse(self, raw: bytes) -> str:
        try:
            obj = json.loads(raw)
            content = obj["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise _Failure(
                f"malformed response from {self.url}: {_one_line(raw.decode('utf-8', 'replace'), 120)!r}", False
            ) from None
        if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise _Failure(f"malformed response from {self.url}: no text content in the first choice", False)
        return content


_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)


def parse_json_answer(text: str | None, required: tuple[str, ...] = ()) -> dict | None:
    """The first JSON object in a model answer (bare, fenced or amid prose) that has all `required` keys.

    Reasoning blocks (<think>…</think>) are skipped; objects nested inside another object are not
    considered separately. Returns None if there is no such object. Never raises.
    """
    if not isinstance(text, str):
        return None
    try:
        text = _THINK.sub("", text)
        dec = json.JSONDecoder()
        i = text.find("{")
        while i != -1:
            try:
                obj, end = dec.raw_decode(text, i)
            except ValueError:
                i = text.find("{", i + 1)
                continue
            if isinstance(obj, dict) and all(k in obj for k in required):
                return obj
            i = text.find("{", end)
        return None
    except Exception:
        return None

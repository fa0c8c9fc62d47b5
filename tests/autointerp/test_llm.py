"""ChatClient against a fake OpenAI-compatible server in a thread; parse_json_answer."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ttslens.autointerp.llm import ChatClient, ChatResult, LLMConfig, parse_json_answer

KEY = "sk-test-SECRET-0123456789abcdef"
MSGS = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "label feature 7"}]


class FakeServer:
    """Modes: normal, garbage, nochoices, fail (500 `fails` times then ok), 401, slow."""

    def __init__(self, mode: str = "normal", fails: int = 0):
        self.mode, self.fails = mode, fails
        self.requests: list[dict] = []
        self.auth: list[str | None] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append(body)
                fake.auth.append(self.headers.get("Authorization"))
                if fake.mode == "401":
                    return self._send(401, {"error": {"message": f"Incorrect API key provided: {KEY}"}})
                if fake.mode == "fail" and len(fake.requests) <= fake.fails:
                    return self._send(500, {"error": {"message": "overloaded"}})
                if fake.mode == "garbage":
                    return self._send(200, b"<html>not json</html>")
                if fake.mode == "nochoices":
                    return self._send(200, {"id": "x", "object": "chat.completion"})
                if fake.mode == "slow":
                    time.sleep(0.5)
                last = body["messages"][-1]["content"]
                answer = f"echo[{body['model']}|{body['temperature']}|{body['max_tokens']}]: {last}"
                self._send(200, {"choices": [{"message": {"role": "assistant", "content": answer}}]})

            def _send(self, code: int, payload):
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout test)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    for var in ("TTSLENS_LLM_BASE_URL", "OPENAI_BASE_URL", "TTSLENS_LLM_MODEL", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TTSLENS_LLM_API_KEY", KEY)


def cfg(base_url: str, **kw) -> LLMConfig:
    return LLMConfig(**{"base_url": base_url, "model": "fake-1", "retries": 2, "backoff_s": 0.01, **kw})


def test_normal_answer_then_cache_hit(tmp_path):
    cache = tmp_path / "sub" / "cache.jsonl"
    with FakeServer() as srv:
        client = ChatClient(cfg(srv.base_url), cache_path=cache)
        r1 = client.chat(MSGS)
        assert r1 == ChatResult("echo[fake-1|0.0|300]: label feature 7", None, False, 1)
        r2 = client.chat(MSGS)
        assert r2 == ChatResult(r1.text, None, True, 0)
        # a fresh client reloads the cache from disk
        assert ChatClient(cfg(srv.base_url), cache_path=cache).chat(MSGS).cached
        # a different temperature is a different key
        r3 = client.chat(MSGS, temperature=0.5)
        assert not r3.cached and "|0.5|" in r3.text
    assert len(srv.requests) == 2
    assert srv.auth[0] == f"Bearer {KEY}"
    lines = cache.read_text().splitlines()
    assert len(lines) == 2
    rec = json.loads(lines[0])
    assert set(rec) == {"key", "model", "messages", "response", "time"}
    assert rec["model"] == "fake-1" and rec["messages"] == MSGS and rec["response"] == r1.text


def test_concurrent_calls_share_one_cache(tmp_path):
    cache = tmp_path / "c.jsonl"
    with FakeServer() as srv:
        client = ChatClient(cfg(srv.base_url), cache_path=cache)
        prompts = [[{"role": "user", "content": f"q{i}"}] for i in range(12)]
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(client.chat, prompts))
    assert [r.text for r in results] == [f"echo[fake-1|0.0|300]: q{i}" for i in range(12)]
    assert len([json.loads(x) for x in cache.read_text().splitlines()]) == 12


def test_retries_500_then_ok():
    with FakeServer("fail", fails=2) as srv:
        r = ChatClient(cfg(srv.base_url)).chat(MSGS)
    assert r.error is None and r.attempts == 3 and r.text.endswith("label feature 7")
    assert len(srv.requests) == 3


def test_500_exhausts_retries_and_is_not_cached(tmp_path):
    cache = tmp_path / "c.jsonl"
    with FakeServer("fail", fails=100) as srv:
        r = ChatClient(cfg(srv.base_url, retries=1), cache_path=cache).chat(MSGS)
    assert r.text is None and r.attempts == 2 and "HTTP 500" in r.error and "2 attempts" in r.error
    assert not cache.exists() or cache.read_text() == ""


def test_down_endpoint_returns_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = ChatClient(cfg(f"http://127.0.0.1:{port}/v1")).chat(MSGS)
    assert r.text is None and r.attempts == 3 and not r.cached
    assert "connection failed" in r.error and "3 attempts" in r.error and "\n" not in r.error


def test_timeout_is_retried_and_reported():
    with FakeServer("slow") as srv:
        r = ChatClient(cfg(srv.base_url, timeout_s=0.1, retries=1)).chat(MSGS)
    assert r.text is None and r.attempts == 2 and "timeout" in r.error


@pytest.mark.parametrize("mode", ["garbage", "nochoices"])
def test_malformed_response(mode):
    with FakeServer(mode) as srv:
        r = ChatClient(cfg(srv.base_url)).chat(MSGS)
    assert r.text is None and "malformed response" in r.error and "\n" not in r.error


def test_401_fails_at_once_without_leaking_key(tmp_path):
    cache = tmp_path / "c.jsonl"
    with FakeServer("401") as srv:
        c = cfg(srv.base_url)
        client = ChatClient(c, cache_path=cache)
        r = client.chat(MSGS)
    assert r.attempts == 1 and len(srv.requests) == 1 and r.text is None
    assert "HTTP 401" in r.error and "$TTSLENS_LLM_API_KEY" in r.error
    for s in (r.error, repr(r), repr(client), repr(c), str(vars(client))):
        assert KEY not in s


def test_key_never_in_cache_or_repr(tmp_path):
    cache = tmp_path / "c.jsonl"
    with FakeServer() as srv:
        c = cfg(srv.base_url)
        client = ChatClient(c, cache_path=cache)
        r = client.chat(MSGS)
    assert srv.auth == [f"Bearer {KEY}"]
    for s in (cache.read_text(), repr(r), repr(client), repr(c), str(vars(client))):
        assert KEY not in s


def test_no_key_sends_no_authorization(monkeypatch):
    monkeypatch.delenv("TTSLENS_LLM_API_KEY")
    with FakeServer() as srv:
        client = ChatClient(cfg(srv.base_url))
        client.check()  # a loopback endpoint may need no key
        assert client.chat(MSGS).error is None
    assert srv.auth == [None]


def test_fallback_key_env(monkeypatch):
    monkeypatch.delenv("TTSLENS_LLM_API_KEY")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-other")
    with FakeServer() as srv:
        ChatClient(cfg(srv.base_url)).chat(MSGS)
    assert srv.auth == ["Bearer sk-other"]


def test_check_and_env_defaults(monkeypatch):
    with pytest.raises(ValueError, match="TTSLENS_LLM_MODEL"):
        ChatClient(LLMConfig()).check()
    monkeypatch.setenv("TTSLENS_LLM_MODEL", "m")
    monkeypatch.delenv("TTSLENS_LLM_API_KEY")
    client = ChatClient(LLMConfig())
    assert client.model == "m" and client.url == "https://api.openai.com/v1/chat/completions"
    with pytest.raises(ValueError, match=r"TTSLENS_LLM_API_KEY"):
        client.check()
    monkeypatch.setenv("OPENAI_BASE_URL", "http://other/v1/")
    assert ChatClient(LLMConfig()).url == "http://other/v1/chat/completions"
    monkeypatch.setenv("TTSLENS_LLM_BASE_URL", "http://mine/v1")
    assert ChatClient(LLMConfig()).url == "http://mine/v1/chat/completions"
    with pytest.raises(ValueError, match="http"):
        ChatClient(LLMConfig(base_url="ftp://x"))


def test_truncated_cache_line_ignored(tmp_path):
    cache = tmp_path / "c.jsonl"
    with FakeServer() as srv:
        ChatClient(cfg(srv.base_url), cache_path=cache).chat(MSGS)
        good = cache.read_text()
        cache.write_text(good + good[: len(good) // 2])  # a kill mid-write
        client = ChatClient(cfg(srv.base_url), cache_path=cache)
        assert client.chat(MSGS).cached
        other = [{"role": "user", "content": "another"}]
        assert not client.chat(other).cached
        assert ChatClient(cfg(srv.base_url), cache_path=cache).chat(other).cached  # not glued to the broken line
    assert len(srv.requests) == 2


@pytest.mark.parametrize(
    "text, required, expected",
    [
        ('{"label": "vowel onset", "score": 0.8}', ("label",), {"label": "vowel onset", "score": 0.8}),
        ('Sure!\n```json\n{"label": "pause", "n": [1, 2]}\n```\nHope this helps.', (), {"label": "pause", "n": [1, 2]}),
        ('The answer is {"label": "sibilant {s}"} as requested.', ("label",), {"label": "sibilant {s}"}),
        ('<think>maybe {"label": "x"}</think> {"label": "y"}', ("label",), {"label": "y"}),
        ('{"a": 1, "inner": {"label": "no"}}', ("label",), None),
        ('{"score": 3}', ("label", "score"), None),
        ('{"bad": } then {"label": "ok"}', ("label",), {"label": "ok"}),
        ("no json here", (), None),
        ("[1, 2, 3]", (), None),
        ("{unclosed", (), None),
        ("", (), None),
        (None, ("label",), None),
    ],
)
def test_parse_json_answer(text, required, expected):
    assert parse_json_answer(text, required) == expected

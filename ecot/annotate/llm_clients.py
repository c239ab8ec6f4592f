"""Chat clients for the LLM reasoning and caption backends, with one retry policy.

- :class:`OpenAIChatClient`: the official ``openai`` SDK with ``base_url`` — OpenAI, vLLM,
  Ollama, llama.cpp server, any server speaking chat-completions.
- :class:`GeminiClient`: ``google-genai`` (``http_options.base_url`` for proxies/tests).

Both SDKs are optional extras (``pip install ecot[llm]``) imported on first use. The SDKs'
own retries are switched off; :meth:`ChatClient.complete` retries 429, 5xx and connection
errors with exponential backoff, honouring ``Retry-After``. Messages are plain dicts:
``{"role": "system"|"user"|"assistant", "content": str | [{"text": ...} | {"image_png": bytes}]}``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

Message = dict[str, Any]


@dataclass
class Completion:
    text: str
    truncated: bool  # the model stopped at its token limit (continue it)


class LLMError(RuntimeError):
    """A request failed for good (bad request, auth, or retries exhausted)."""


class RetryableError(LLMError):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class RetryPolicy:
    max_retries: int = 6
    base_delay: float = 1.0
    max_delay: float = 60.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None and retry_after >= 0:
            return min(float(retry_after), self.max_delay)
        return min(self.base_delay * (2**attempt), self.max_delay)


def parse_retry_after(headers: Any) -> float | None:
    """Seconds from a ``Retry-After`` (or ``retry-after-ms``) header; None when absent or unreadable."""
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return float(ms) / 1000
        value = headers.get("retry-after")
        if value is None:
            return None
        return float(value)
    except (TypeError, ValueError):
        return None


def _retryable_status(code: int | None) -> bool:
    return code is not None and (code == 429 or code == 408 or code >= 500)


def content_parts(content: Any) -> list[dict]:
    if isinstance(content, str):
        return [{"text": content}]
    return list(content)


class ChatClient:
    """Base: subclasses implement ``_once``; ``complete`` adds retries."""

    model: str
    retry: RetryPolicy
    kind = "chat"

    def identity(self) -> dict:
        """What determines the answer besides the messages (part of the cache key)."""
        return {"kind": self.kind, "model": self.model, "temperature": self.temperature}

    def _once(self, messages: list[Message], max_tokens: int) -> Completion:
        raise NotImplementedError

    def complete(self, messages: list[Message], max_tokens: int | None = None) -> Completion:
        max_tokens = max_tokens or self.max_tokens
        attempt = 0
        while True:
            try:
                return self._once(messages, max_tokens)
            except RetryableError as err:
                if attempt >= self.retry.max_retries:
                    raise LLMError(f"{self.kind} request failed after {attempt + 1} attempts: {err}") from err
                self.retry.sleep(self.retry.delay(attempt, err.retry_after))
                attempt += 1


class OpenAIChatClient(ChatClient):
    kind = "openai"

    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None, *,
                 temperature: float = 0.0, max_tokens: int = 4096, timeout: float = 300.0,
                 retry: RetryPolicy | None = None):
        try:
            import openai
        except ImportError as err:  # pragma: no cover - depends on the install
            raise ImportError("the OpenAI backend needs the 'openai' package: pip install 'ecot[llm]'") from err
        self._openai = openai
        self.model, self.temperature, self.max_tokens = model, temperature, max_tokens
        self.retry = retry or RetryPolicy()
        key = api_key or os.environ.get("OPENAI_API_KEY") or "not-needed"  # local servers ignore it
        self.client = openai.OpenAI(base_url=base_url, api_key=key, timeout=timeout, max_retries=0)

    @staticmethod
    def to_openai(messages: list[Message]) -> list[dict]:
        out = []
        for m in messages:
            if isinstance(m["content"], str):
                out.append({"role": m["role"], "content": m["content"]})
                continue
            parts = []
            for p in content_parts(m["content"]):
                if "image_png" in p:
                    url = "data:image/png;base64," + base64.b64encode(p["image_png"]).decode()
                    parts.append({"type": "image_url", "image_url": {"url": url}})
                else:
                    parts.append({"type": "text", "text": p["text"]})
            out.append({"role": m["role"], "content": parts})
        return out

    def _once(self, messages: list[Message], max_tokens: int) -> Completion:
        openai = self._openai
        try:
            response = self.client.chat.completions.create(
                model=self.model, messages=self.to_openai(messages), max_tokens=max_tokens,
                temperature=self.temperature,
            )
        except openai.APIStatusError as err:
            if _retryable_status(err.status_code):
                raise RetryableError(f"HTTP {err.status_code}: {err.message}", parse_retry_after(err.response.headers)) from err
            raise LLMError(f"OpenAI-compatible server refused the request: HTTP {err.status_code}: {err.message}") from err
        except (openai.APIConnectionError, openai.APITimeoutError) as err:
            raise RetryableError(f"connection error: {err}") from err
        if not getattr(response, "choices", None):
            raise RetryableError("response has no choices")
        choice = response.choices[0]
        text = choice.message.content or ""
        return Completion(text=text, truncated=choice.finish_reason == "length")


class GeminiClient(ChatClient):
    kind = "gemini"

    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None, *,
                 temperature: float = 0.0, max_tokens: int = 8192, timeout: float = 300.0,
                 retry: RetryPolicy | None = None):
        try:
            from google import genai
            from google.genai import types
        except ImportError as err:  # pragma: no cover
            raise ImportError("the Gemini backend needs 'google-genai': pip install 'ecot[llm]'") from err
        self._types = types
        self.model, self.temperature, self.max_tokens = model, temperature, max_tokens
        self.retry = retry or RetryPolicy()
        key = api_key or os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY") or "not-needed"
        options = types.HttpOptions(base_url=base_url, timeout=int(timeout * 1000)) if base_url else types.HttpOptions(timeout=int(timeout * 1000))
        self.client = genai.Client(api_key=key, http_options=options)

    def _contents(self, messages: list[Message]):
        types = self._types
        system, contents = None, []
        for m in messages:
            parts = []
            for p in content_parts(m["content"]):
                if "image_png" in p:
                    parts.append(types.Part.from_bytes(data=p["image_png"], mime_type="image/png"))
                else:
                    parts.append(types.Part(text=p["text"]))
            if m["role"] == "system":
                system = "\n".join(p["text"] for p in content_parts(m["content"]) if "text" in p)
                continue
            contents.append(types.Content(role="model" if m["role"] == "assistant" else "user", parts=parts))
        return system, contents

    def _once(self, messages: list[Message], max_tokens: int) -> Completion:
        from google.genai import errors

        types = self._types
        system, contents = self._contents(messages)
        config = types.GenerateContentConfig(
            system_instruction=system, max_output_tokens=max_tokens, temperature=self.temperature
        )
        try:
            response = self.client.models.generate_content(model=self.model, contents=contents, config=config)
        except errors.APIError as err:
            headers = getattr(getattr(err, "response", None), "headers", None)
            if _retryable_status(err.code):
                raise RetryableError(f"HTTP {err.code}: {err.message}", parse_retry_after(headers)) from err
            raise LLMError(f"Gemini refused the request: HTTP {err.code}: {err.message}") from err
        except Exception as err:  # httpx transport errors and friends
            if type(err).__module__.startswith(("httpx", "httpcore")):
                raise RetryableError(f"connection error: {err}") from err
            raise
        candidates = response.candidates or []
        if not candidates:
            raise RetryableError("response has no candidates")
        candidate = candidates[0]
        parts = (candidate.content.parts if candidate.content else None) or []
        text = "".join(p.text for p in parts if getattr(p, "text", None))
        truncated = candidate.finish_reason == types.FinishReason.MAX_TOKENS
        return Completion(text=text, truncated=truncated)


def make_client(kind: str, model: str, base_url: str | None = None, api_key: str | None = None, **kwargs) -> ChatClient:
    if kind == "openai":
        return OpenAIChatClient(model, base_url, api_key, **kwargs)
    if kind == "gemini":
        return GeminiClient(model, base_url, api_key, **kwargs)
    raise ValueError(f"unknown LLM client {kind!r}; expected 'openai' or 'gemini'")


def content_hash(obj: Any) -> str:
    """sha256 of a JSON-able structure where bytes are replaced by their own sha256."""
    import json

    def enc(o):
        if isinstance(o, (bytes, bytearray)):
            return {"sha256": hashlib.sha256(o).hexdigest()}
        raise TypeError(f"cannot hash {type(o).__name__}")

    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=enc, ensure_ascii=True).encode()).hexdigest()

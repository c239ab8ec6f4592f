"""LLM reasoning: one prompt per episode with its features, a strictly parsed JSON answer.

Following the paper, the model sees the whole episode at once — instruction, scene caption,
objects with boxes, and per step the move primitive and the gripper's pixel — and answers with
the reasoning of every step. The answer must be one JSON object ``{"0": {...}, "1": {...}}``
with the six fields per step; anything else is rejected with the reason, and the model is asked
again (a bounded number of times). Answers cut at the token limit are continued. Finished
answers are cached on disk by a hash of the request, so a re-run costs nothing.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ecot.annotate.llm_clients import ChatClient, Message, content_hash
from ecot.annotate.sanitize import clean_text
from ecot.io import write_atomic

FIELDS = ("task", "plan", "subtask", "subtask_reason", "move", "move_reason")

SYSTEM_PROMPT = (
    "You annotate robot demonstrations with embodied chain-of-thought reasoning: for every step you "
    "explain what the robot is doing and why, grounded in what is known about the scene."
)

PROMPT = """The robot arm in this demonstration was asked: "{instruction}".

What we know about the demonstration, as a dictionary:
{features}

Keys: "caption" describes the scene; "objects" are the objects visible at the start with their boxes [x0, y0, x1, y1] in image pixels; "steps" lists, per step index, the low-level move the gripper makes ("move") and the gripper's pixel position [x, y] ("gripper").

For every step, write:
- "task": the task, restated in a short sentence;
- "plan": the high-level steps of the whole task, as one string of steps separated by ", ";
- "subtask": the high-level step the robot is in at this step (one of the plan's steps);
- "subtask_reason": one sentence on why this subtask comes now;
- "move": the step's move, copied exactly;
- "move_reason": one sentence on why the gripper makes this move now.

Answer with one JSON object and nothing else. Its keys are the step indices as strings, "0" to "{last}", each mapping to an object with exactly the keys "task", "plan", "subtask", "subtask_reason", "move", "move_reason" whose values are strings. Do not use the character "@"."""

CONTINUE = "Your answer was cut off. Continue exactly where it stopped, without repeating anything and without any preamble."
RETRY = "That answer could not be used: {error}. Answer again with only the JSON object described above."


class ReasoningParseError(ValueError):
    pass


def features_summary(
    instruction: str,
    caption: str,
    primitives: Sequence[str],
    gripper_points: Any,
    first_boxes: Sequence[Sequence[Any]],
) -> dict:
    steps = {}
    for i, move in enumerate(primitives):
        step: dict[str, Any] = {"move": move}
        if gripper_points is not None:
            x, y = gripper_points[i]
            if x == x and y == y:  # not NaN
                step["gripper"] = [int(round(float(x))), int(round(float(y)))]
        steps[str(i)] = step
    return {
        "instruction": instruction,
        "caption": caption,
        "objects": {item[1]: list(item[2]) for item in first_boxes},
        "steps": steps,
    }


def build_messages(features: dict) -> list[Message]:
    last = len(features["steps"]) - 1
    body = PROMPT.format(instruction=features["instruction"], features=json.dumps(features), last=last)
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": body}]


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def parse_reasoning_answer(text: str, n_steps: int, primitives: Sequence[str] | None = None) -> dict[str, dict[str, str]]:
    """The per-step reasoning in ``text``; raises ReasoningParseError saying what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise ReasoningParseError("the answer is empty")
    fenced = _FENCE.search(text)
    body = fenced.group(1) if fenced else text
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end <= start:
        raise ReasoningParseError("the answer holds no JSON object")
    try:
        data = json.loads(body[start : end + 1])
    except json.JSONDecodeError as err:
        raise ReasoningParseError(f"the JSON is invalid ({err.msg} at character {err.pos})") from None
    if not isinstance(data, dict):
        raise ReasoningParseError("the JSON must be an object keyed by step index")
    want = [str(i) for i in range(n_steps)]
    missing = [k for k in want if k not in data]
    if missing:
        raise ReasoningParseError(f"steps missing: {', '.join(missing[:10])}{' …' if len(missing) > 10 else ''} (expected \"0\" to \"{n_steps - 1}\")")
    extra = sorted(set(data) - set(want))
    if extra:
        raise ReasoningParseError(f"unexpected keys {extra[:5]} (expected step indices \"0\" to \"{n_steps - 1}\")")
    out: dict[str, dict[str, str]] = {}
    for key in want:
        step = data[key]
        if not isinstance(step, dict):
            raise ReasoningParseError(f"step {key} must be an object with keys {list(FIELDS)}")
        absent = [f for f in FIELDS if f not in step]
        if absent:
            raise ReasoningParseError(f"step {key} lacks {absent}")
        fields = {}
        for f in FIELDS:
            value = step[f]
            if f == "plan" and isinstance(value, list) and all(isinstance(v, str) for v in value):
                value = ", ".join(value)
            if not isinstance(value, str):
                raise ReasoningParseError(f"step {key} field {f!r} must be a string, got {type(value).__name__}")
            fields[f] = clean_text(value)
        if primitives is not None:
            fields["move"] = clean_text(primitives[int(key)])  # the move is a measured fact, not the model's
        out[key] = fields
    return out


class ResponseCache:
    """Finished answers on disk, one small JSON file per request hash, written atomically."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        try:
            return json.loads(self._path(key).read_text(encoding="utf-8"))["text"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            return None

    def put(self, key: str, text: str) -> None:
        write_atomic(self._path(key), json.dumps({"text": text}))


@dataclass
class LLMReasoningConfig:
    max_tokens: int = 8192
    max_continuations: int = 4
    parse_retries: int = 2


class LLMReasoner:
    name = "llm"

    def __init__(self, client: ChatClient, cache: ResponseCache | None = None, config: LLMReasoningConfig | None = None):
        self.client, self.cache, self.config = client, cache, config or LLMReasoningConfig()
        self.calls = 0  # requests sent (for tests and reports)

    def _complete_with_continuation(self, messages: list[Message]) -> str:
        text = ""
        for _ in range(self.config.max_continuations + 1):
            convo = messages if not text else messages + [
                {"role": "assistant", "content": text}, {"role": "user", "content": CONTINUE}
            ]
            self.calls += 1
            completion = self.client.complete(convo, self.config.max_tokens)
            text += completion.text
            if not completion.truncated:
                return text
        raise ReasoningParseError(f"the answer was still cut off after {self.config.max_continuations} continuations")

    def reason(self, features: dict, primitives: Sequence[str]) -> dict[str, dict[str, str]]:
        n = len(primitives)
        messages = build_messages(features)
        key = content_hash({"client": self.client.identity(), "messages": messages, "max_tokens": self.config.max_tokens})
        if self.cache is not None:
            cached = self.cache.get(key)
            if cached is not None:
                try:
                    return parse_reasoning_answer(cached, n, primitives)
                except ReasoningParseError:
                    pass  # a stale or foreign entry: ask again
        errors = []
        convo = list(messages)
        for _ in range(self.config.parse_retries + 1):
            text = ""
            try:
                text = self._complete_with_continuation(convo)
                result = parse_reasoning_answer(text, n, primitives)
            except ReasoningParseError as err:
                errors.append(str(err))
                convo = messages + [
                    {"role": "assistant", "content": text[-2000:] or "(no answer)"},
                    {"role": "user", "content": RETRY.format(error=err)},
                ]
                continue
            if self.cache is not None:
                self.cache.put(key, text)
            return result
        raise ReasoningParseError(f"no usable answer after {len(errors)} attempts: " + " | ".join(errors))

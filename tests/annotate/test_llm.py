"""LLM reasoning against a real localhost server speaking the OpenAI and Gemini protocols."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecot.annotate.llm_clients import GeminiClient, LLMError, OpenAIChatClient, RetryPolicy
from ecot.annotate.llm_reasoning import (
    FIELDS,
    LLMReasoner,
    ReasoningParseError,
    ResponseCache,
    features_summary,
    parse_reasoning_answer,
)

from annotate_llm_server import ScriptedLLMServer, valid_answer

PRIMITIVES = ["move down", "move down, close gripper", "move up", "move up"]


def features():
    return features_summary("put the red block in the bowl", "a table with the red block", PRIMITIVES,
                            [[10, 12], [10, 14], [11, 14], [11, 10]], [[1.0, "the red block", [5, 5, 9, 9]]])


@pytest.fixture
def server():
    with ScriptedLLMServer() as s:
        yield s


def make_client(kind, server, sleeps):
    retry = RetryPolicy(max_retries=3, base_delay=0.5, sleep=sleeps.append)
    if kind == "openai":
        return OpenAIChatClient("test-model", base_url=server.url + "/v1", api_key="k", retry=retry, timeout=10)
    return GeminiClient("gemini-test", base_url=server.url, api_key="k", retry=retry, timeout=10)


@pytest.mark.parametrize("kind", ["openai", "gemini"])
def test_rate_limit_server_error_and_truncation(server, kind, tmp_path):
    sleeps: list[float] = []
    reasoner = LLMReasoner(make_client(kind, server, sleeps), ResponseCache(tmp_path))
    # Build the answer the server will send in two halves.
    from ecot.annotate.llm_reasoning import build_messages

    answer = valid_answer(build_messages(features())[1]["content"])
    cut = len(answer) // 2
    server.script = [
        {"status": 429, "headers": {"Retry-After": "2"}},
        {"status": 500 if kind == "openai" else 503},
        {"text": answer[:cut], "truncated": True},
        {"text": answer[cut:]},
    ]
    result = reasoner.reason(features(), PRIMITIVES)
    assert sorted(result, key=int) == ["0", "1", "2", "3"]
    assert result["1"]["move"] == "move down, close gripper"
    assert result["0"]["plan"] == "reach the object, grasp it, carry it, release it"
    assert sleeps == [2.0, 1.0]  # Retry-After honoured, then exponential backoff (0.5 * 2**1)
    assert len(server.requests) == 4
    # The continuation request carries the partial answer and asks to go on.
    last = server.requests[3]["body"]
    if kind == "openai":
        assert last["messages"][2] == {"role": "assistant", "content": answer[:cut]}
        assert "cut off" in last["messages"][3]["content"]
        assert server.requests[0]["headers"]["authorization"] == "Bearer k"
    else:
        assert last["contents"][1]["role"] == "model" and last["contents"][1]["parts"][0]["text"] == answer[:cut]
        assert "cut off" in last["contents"][2]["parts"][0]["text"]
        assert "systemInstruction" in last
    # Cached: the same request costs nothing the second time.
    again = LLMReasoner(make_client(kind, server, []), ResponseCache(tmp_path)).reason(features(), PRIMITIVES)
    assert again == result and len(server.requests) == 4


@pytest.mark.parametrize("kind", ["openai", "gemini"])
def test_malformed_answers_are_retried_with_the_reason(server, kind):
    reasoner = LLMReasoner(make_client(kind, server, []))
    server.script = [{"text": "Sure! Here is the reasoning: {not json"}, {"text": json.dumps({"0": {}})}, {}]
    result = reasoner.reason(features(), PRIMITIVES)
    assert len(result) == 4 and len(server.requests) == 3
    second = server.requests[1]["body"]
    text = json.dumps(second)
    assert "could not be used" in text and "JSON" in text
    third = json.dumps(server.requests[2]["body"])
    assert "steps missing" in third


@pytest.mark.parametrize("kind", ["openai", "gemini"])
def test_gives_up_clearly(server, kind):
    sleeps: list[float] = []
    client = make_client(kind, server, sleeps)
    server.script = [{"status": 500}] * 4
    with pytest.raises(LLMError, match="after 4 attempts"):
        client.complete([{"role": "user", "content": "hi"}])
    assert sleeps == [0.5, 1.0, 2.0]
    server.script = [{"status": 400, "message": "bad model name"}]
    with pytest.raises(LLMError, match="400"):
        client.complete([{"role": "user", "content": "hi"}])
    reasoner = LLMReasoner(client)
    server.script = [{"text": "no json here"}] * 3
    with pytest.raises(ReasoningParseError, match="no usable answer after 3 attempts"):
        reasoner.reason(features(), PRIMITIVES)


def test_openai_malformed_http_body_is_retried(server):
    sleeps: list[float] = []
    client = make_client("openai", server, sleeps)
    server.script = [{"status": 502, "raw": "<html>bad gateway</html>"}, {"text": "hello"}]
    assert client.complete([{"role": "user", "content": "hi"}]).text == "hello"
    assert sleeps == [0.5]


@pytest.mark.parametrize("kind", ["openai", "gemini"])
def test_image_parts_reach_the_server(server, kind):
    import base64

    from ecot.annotate.captions import ChatCaptioner, png_bytes

    from annotate_synthetic import pick_place_episode

    episode = pick_place_episode(0)
    server.script = [{"text": "the red block, the blue bowl and the table."}]
    caption, phrases = ChatCaptioner(make_client(kind, server, [])).caption(episode)
    assert phrases == ["the red block", "the blue bowl", "the table"]
    assert caption == "a robot arm over a table with the red block, the blue bowl and the table"
    body = server.requests[0]["body"]
    if kind == "openai":
        part = body["messages"][0]["content"][0]
        assert part["type"] == "image_url"
        data = part["image_url"]["url"].removeprefix("data:image/png;base64,")
    else:
        part = body["contents"][0]["parts"][0]
        inline = part.get("inlineData") or part.get("inline_data")
        assert inline["mimeType" if "mimeType" in inline else "mime_type"] == "image/png"
        data = inline["data"]
    assert base64.b64decode(data) == png_bytes(episode.images[0])


def test_end_to_end_run_with_openai_backend(server, tmp_path):
    from ecot.annotate.pipeline import AnnotateConfig
    from ecot.annotate.runner import FEATURES_NAME, RunConfig, run_annotation
    from ecot.data.features import iter_reasoning_strings

    from annotate_synthetic import SyntheticDataset

    config = RunConfig(dataset_dir="synthetic", out_dir=str(tmp_path), progress=False,
                       annotate=AnnotateConfig(reasoning="openai", llm_model="m", llm_base_url=server.url + "/v1"))
    summary = run_annotation(config, lambda: SyntheticDataset(n=2))
    assert summary.complete and not summary.failed
    strings = list(iter_reasoning_strings(tmp_path / FEATURES_NAME))
    assert len(strings) == sum(len(SyntheticDataset(n=2)[i]) for i in range(2))
    assert all("SUBTASK: reach the object" in text for *_, text in strings)
    n = len(server.requests)
    run_annotation(config, lambda: SyntheticDataset(n=2))  # resumed: nothing left, nothing asked
    assert len(server.requests) == n


WRONG_MOVE = "move backward, rotate clockwise"  # never a measured primitive here


@pytest.mark.parametrize("kind", ["openai", "gemini"])
def test_measured_move_overrides_a_wrong_model_move(kind):
    """The model answers every step with a wrong MOVE; the stored move is still the measured one."""
    with ScriptedLLMServer(wrong_move=WRONG_MOVE) as wrong:
        result = LLMReasoner(make_client(kind, wrong, [])).reason(features(), PRIMITIVES)
        sent = wrong.requests
    assert len(sent) == 1  # the wrong answer was accepted (parsed), not retried away
    assert [result[str(i)]["move"] for i in range(len(PRIMITIVES))] == PRIMITIVES
    # ... while the model's other fields were kept, so the answer really was used
    assert all(r["subtask"] == "reach the object" and r["move_reason"].startswith("the gripper is at") for r in result.values())


def test_measured_move_overrides_a_wrong_model_move_end_to_end(tmp_path):
    """Through the whole annotation run: features file, reasoning strings and their MOVE tag."""
    from ecot.annotate.pipeline import AnnotateConfig
    from ecot.annotate.runner import FEATURES_NAME, RunConfig, run_annotation
    from ecot.data.features import iter_feature_episodes, iter_reasoning_strings
    from ecot.reasoning import Reasoning

    from annotate_synthetic import SyntheticDataset

    with ScriptedLLMServer(wrong_move=WRONG_MOVE) as wrong:
        config = RunConfig(dataset_dir="synthetic", out_dir=str(tmp_path), progress=False,
                           annotate=AnnotateConfig(reasoning="openai", llm_model="m", llm_base_url=wrong.url + "/v1"))
        summary = run_annotation(config, lambda: SyntheticDataset(n=2))
        assert summary.complete and not summary.failed and len(wrong.requests) == 2
    assert WRONG_MOVE not in (tmp_path / FEATURES_NAME).read_text()
    measured = {}
    for file_path, episode_id, entry in iter_feature_episodes(tmp_path / FEATURES_NAME):
        measured[file_path, episode_id] = entry["features"]["move_primitive"]
        assert [entry["reasoning"][str(t)]["move"] for t in range(len(measured[file_path, episode_id]))] == \
            measured[file_path, episode_id]
    checked = 0
    for file_path, episode_id, step, text in iter_reasoning_strings(tmp_path / FEATURES_NAME):  # the training text
        parsed = Reasoning.parse(text)
        assert parsed.move == measured[file_path, episode_id][step], text
        assert parsed.subtask == "reach the object"  # the LLM's own field made it in
        checked += 1
    assert checked == sum(len(SyntheticDataset(n=2)[i]) for i in range(2))


# ---------------------------------------------------------------------- strict parser properties

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 5), st.data())
def test_parser_round_trip(n, data):
    steps = {str(i): {f: data.draw(_text) for f in FIELDS} for i in range(n)}
    noise = data.draw(st.sampled_from(["", "Here you go:\n", "```json\n"]))
    text = noise + json.dumps(steps) + ("\n```" if noise.startswith("```") else "")
    parsed = parse_reasoning_answer(text, n)
    from ecot.annotate.sanitize import clean_text

    assert parsed == {k: {f: clean_text(v) for f, v in s.items()} for k, s in steps.items()}


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200), st.integers(1, 4))
def test_parser_rejects_garbage_with_its_own_error(text, n):
    # Random text cannot hold n steps of six string fields: it must be rejected, with a reason,
    # and with the parser's own error (any other exception propagates and fails the test).
    with pytest.raises(ReasoningParseError) as err:
        parse_reasoning_answer(text, n)
    assert str(err.value).strip()


def _good_steps(n):
    return {str(i): {f: f"{f} {i}" for f in FIELDS} for i in range(n)}


_CORRUPTIONS = {
    "drop a step": lambda s, i, f: {k: v for k, v in s.items() if k != str(i)},
    "drop a field": lambda s, i, f: {**s, str(i): {k: v for k, v in s[str(i)].items() if k != f}},
    "a number for a field": lambda s, i, f: {**s, str(i): {**s[str(i)], f: 3}},
    "null for a field": lambda s, i, f: {**s, str(i): {**s[str(i)], f: None}},
    "a step that is a list": lambda s, i, f: {**s, str(i): list(s[str(i)].values())},
    "an extra key": lambda s, i, f: {**s, "extra": s[str(i)]},
}
_REASONS = {"drop a step": "steps missing", "drop a field": "lacks", "a number for a field": "must be a string",
            "null for a field": "must be a string", "a step that is a list": "must be an object",
            "an extra key": "unexpected keys"}


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 5), st.data())
def test_parser_rejects_near_valid_answers_with_the_reason(n, data):
    """A valid answer that was damaged in one place is refused, saying what is wrong."""
    steps = _good_steps(n)
    assert len(parse_reasoning_answer(json.dumps(steps), n)) == n  # the undamaged answer is accepted
    kind = data.draw(st.sampled_from(sorted(_CORRUPTIONS) + ["truncated"]))
    if kind == "truncated":  # every strict prefix of the JSON object (an answer cut off) is refused
        text = json.dumps(steps)
        text = text[: data.draw(st.integers(0, len(text) - 1))]
        with pytest.raises(ReasoningParseError):
            parse_reasoning_answer(text, n)
        return
    i = data.draw(st.integers(0, n - 1))
    f = data.draw(st.sampled_from(FIELDS))
    damaged = _CORRUPTIONS[kind](steps, i, f)
    with pytest.raises(ReasoningParseError, match=_REASONS[kind]):
        parse_reasoning_answer("Here you go:\n```json\n" + json.dumps(damaged) + "\n```", n)


def test_cli_with_llm_flags(server, sim_dataset, tmp_path, monkeypatch, capsys):
    from ecot.cli import main
    from ecot.data.features import iter_reasoning_strings

    monkeypatch.setenv("MY_LLM_KEY", "secret-key")
    out = tmp_path / "out"
    server.script = [{"status": 429, "headers": {"Retry-After": "0"}}]
    code = main(["annotate", str(sim_dataset), "--out", str(out), "--no-progress", "--reasoning", "openai",
                 "--llm-model", "my-model", "--llm-base-url", server.url + "/v1", "--llm-api-key-env", "MY_LLM_KEY"])
    assert code == 0, capsys.readouterr().err
    assert all(r["headers"]["authorization"] == "Bearer secret-key" for r in server.requests)
    assert {r["body"]["model"] for r in server.requests} == {"my-model"}
    assert len(server.requests) == 5  # 4 episodes + one 429 retried
    assert len(list(iter_reasoning_strings(out / "embodied_features.json"))) > 0
    assert len(list((out / "llm_cache").rglob("*.json"))) == 4

"""A real uvicorn server on 127.0.0.1 serving a real tiny ECoT policy, driven by the clients robots
use: the unmodified openpi-client, an OpenVLA deploy.py-style client (json_numpy + requests), ours."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import requests
from .conftest import INSTRUCTION, load, start

from ecot.serve.client import PolicyClient, PolicyServerError

REASONING_KEYS = {"task", "plan", "visible_objects", "subtask_reasoning", "subtask", "move_reasoning", "move", "gripper_positions"}


def _png(img: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _valid_action(action, dim: int = 7) -> bool:
    action = np.asarray(action)
    return action.shape == (dim,) and action.dtype.kind == "f" and bool(np.all(np.isfinite(action)))


def test_openpi_client_gets_metadata_and_actions(server, scene_image):
    from openpi_client.websocket_client_policy import WebsocketClientPolicy

    client = WebsocketClientPolicy("127.0.0.1", server.port)
    meta = client.get_server_metadata()
    assert meta["action_dim"] == 7 and meta["mode"] == "full" and "unnorm_keys" in meta and meta["model"]
    # openpi's LIBERO example observation: 224x224 uint8 images under observation/..., prompt
    obs = {"observation/image": scene_image, "observation/wrist_image": scene_image,
           "observation/state": np.zeros(8, np.float32), "prompt": INSTRUCTION}  # fmt: skip
    result = client.infer(obs)
    assert result["actions"].shape == (1, 7) and _valid_action(result["actions"][0])
    assert set(result["reasoning"]) == REASONING_KEYS
    assert result["text"].startswith("TASK:")
    assert result["server_timing"]["infer_ms"] > 0
    second = client.infer(obs)
    assert "prev_total_ms" in second["server_timing"]
    client._ws.close()


def test_deploy_py_client_both_body_forms(fast_server, scene_image):
    server = fast_server  # (the action is all /act returns: the fast no-reasoning server will do)
    import json_numpy

    json_numpy.patch()
    try:
        payload = {"image": scene_image, "instruction": INSTRUCTION}
        plain = requests.post(f"{server.url}/act", json=payload, timeout=60)
        assert plain.status_code == 200, plain.text
        body = json_numpy._loads(plain.text)  # the raw JSON, not decoded by the patched json
        assert set(body) == {"__numpy__", "dtype", "shape"} and body["dtype"] == "<f8" and body["shape"] == [7]
        action = json_numpy.loads(plain.text)
        assert _valid_action(action)

        encoded = requests.post(f"{server.url}/act", json={"encoded": json_numpy.dumps(payload)}, timeout=60)
        assert encoded.status_code == 200, encoded.text
        text = json_numpy._loads(encoded.text)
        assert isinstance(text, str)  # deploy.py answers the encoded form with a JSON string
        assert _valid_action(json_numpy.loads(text))

        with_key = requests.post(f"{server.url}/act", json={**payload, "unnorm_key": server_unnorm_key(server)}, timeout=60)
        assert with_key.status_code == 200, with_key.text
    finally:
        json.dumps, json.loads = json_numpy._dumps, json_numpy._loads  # undo the patch for other tests
        json.dump, json.load = json_numpy._dump, json_numpy._load


def server_unnorm_key(server) -> str:
    return requests.get(f"{server.url}/v1/metadata", timeout=10).json()["unnorm_keys"][0]


def test_our_client_infer_reset_and_reconnect(server, scene_image):
    with PolicyClient("127.0.0.1", server.port) as client:
        assert client.metadata["action_dim"] == 7 and client.metadata["session"].startswith("ws-")
        out = client.infer(scene_image, INSTRUCTION)
        assert _valid_action(out["action"]) and out["actions"].shape == (1, 7)
        assert set(out["reasoning"]) == REASONING_KEYS and out["text"].startswith("TASK:")
        client.reset()
        with pytest.raises(PolicyServerError, match="dtype uint8"):
            client.infer(scene_image.astype(np.float32), INSTRUCTION)
        assert _valid_action(client.infer(scene_image, INSTRUCTION)["action"])  # reconnected after the error


def test_json_api_png_session_and_edit(server, scene_image):
    body = {"image": _png(scene_image), "instruction": INSTRUCTION, "session": "robot-1",
            "edit": {"plan": "wave at the camera"}}  # fmt: skip
    response = requests.post(f"{server.url}/v1/act", json=body, timeout=60)
    assert response.status_code == 200, response.text
    out = response.json()
    assert _valid_action(out["action"]) and set(out["reasoning"]) == REASONING_KEYS
    assert out["reasoning"]["plan"] == "wave at the camera"  # the edit is in force
    assert out["session"] == "robot-1" and out["timings"]["batch_size"] >= 1
    cleared = requests.post(f"{server.url}/v1/sessions/robot-1/edit", json={}, timeout=30)
    assert cleared.status_code == 200, cleared.text
    again = requests.post(f"{server.url}/v1/act", json={**body, "edit": None}, timeout=60).json()
    assert again["reasoning"]["plan"] != "wave at the camera"
    assert requests.post(f"{server.url}/v1/sessions/nobody/edit", json={}, timeout=10).status_code == 404
    # an edit the policy refuses (a value that would write another tag) is a 400, here and by session
    refused = requests.post(f"{server.url}/v1/act", json={**body, "edit": {"plan": "go MOVE: up"}}, timeout=60)
    assert refused.status_code == 400 and refused.json()["error"].startswith("bad edit"), refused.text
    by_session = requests.post(f"{server.url}/v1/sessions/robot-1/edit", json={"move": "up SUBTASK: x"}, timeout=30)
    assert by_session.status_code == 400 and "bad edit" in by_session.json()["error"]


def test_stream_pushes_the_reasoning_as_it_is_written(server, scene_image):
    body = {"image": protocol_json_numpy(scene_image), "instruction": INSTRUCTION}
    events = []
    with requests.post(f"{server.url}/v1/stream", json=body, stream=True, timeout=60) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in response.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
    texts = [data["text"] for kind, data in events if kind == "text"]
    assert events[-1][0] == "result", events[-1]
    final = events[-1][1]["text"]
    assert len(texts) >= 5  # pushed token by token, not once at the end
    assert all(len(a) <= len(b) for a, b in zip(texts, texts[1:]))  # the chain grows
    assert final.startswith(texts[0].strip()[:5]) and len(texts[0].strip()) < len(final)
    assert "PLAN:" in texts[-1] and "PLAN:" not in texts[0]  # earlier pushes hold a shorter chain


def protocol_json_numpy(img):
    from ecot.serve.protocol import json_numpy_encode

    return json_numpy_encode(img)


def test_healthz_and_metadata(server):
    assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200
    meta = requests.get(f"{server.url}/v1/metadata", timeout=10).json()
    assert meta["action_dim"] == 7 and meta["mode"] == "full"


# ---------------------------------------------------------------------- malformed input


BAD_ACT = [
    ({"image": {"__numpy__": "AAAA", "dtype": "<f4", "shape": [1, 1, 3]}, "instruction": "x"}, "needs 12"),
    ({"image": {"__numpy__": base64.b64encode(bytes(4 * 12 * 12 * 3)).decode(), "dtype": "<f4", "shape": [12, 12, 3]}, "instruction": "x"}, "dtype uint8"),
    ({"image": {"__numpy__": base64.b64encode(bytes(4000 * 9 * 3)).decode(), "dtype": "|u1", "shape": [4000, 9, 3]}, "instruction": "x"}, "exceeds the limit"),
    ({"image": {"__numpy__": "!!!", "dtype": "|u1", "shape": [1]}, "instruction": "x"}, "not valid base64"),
    ({"image": {"__numpy__": "AAAA", "dtype": "|O", "shape": [3]}, "instruction": "x"}, "unsupported array dtype"),
    ({"instruction": "x"}, "missing the image"),
    ({"image": {"__numpy__": base64.b64encode(bytes(12 * 12 * 3)).decode(), "dtype": "|u1", "shape": [12, 12, 3]}}, "missing the instruction"),
    ({"image": {"__numpy__": base64.b64encode(bytes(12 * 12 * 3)).decode(), "dtype": "|u1", "shape": [12, 12, 3]}, "instruction": "x", "unnorm_key": "nope"}, "unknown unnorm_key"),
    ({"encoded": "{not json"}, "not valid JSON"),
    ({"encoded": "{}", "image": 1}, "only key"),
    ([1, 2, 3], "JSON object"),
]


@pytest.mark.parametrize("body, message", BAD_ACT)
def test_act_refuses_malformed_requests_with_4xx_and_keeps_serving(fast_server, scene_image, body, message):
    response = requests.post(f"{fast_server.url}/act", json=body, timeout=30)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]
    assert "Traceback" not in response.text
    ok = requests.post(f"{fast_server.url}/v1/act", json={"image": _png(scene_image), "instruction": INSTRUCTION}, timeout=60)
    assert ok.status_code == 200


def test_http_bodies_that_are_not_json_or_too_big(fast_server):
    assert requests.post(f"{fast_server.url}/act", data=b"\xff\x00garbage", timeout=10).status_code == 400
    huge = requests.post(f"{fast_server.url}/act", data=b"x" * (17 * 2**20), headers={"Content-Type": "application/json"}, timeout=30)
    assert huge.status_code == 413 and "exceeds" in huge.json()["error"]
    chunked = requests.post(f"{fast_server.url}/act", data=iter([b"x" * 2**20] * 17), timeout=30)  # no Content-Length
    assert chunked.status_code == 413
    bad = requests.post(f"{fast_server.url}/v1/act", json={"image": "@@@", "instruction": "x"}, timeout=10)
    assert bad.status_code == 400 and bad.json()["error"] == "image is not valid base64"
    missing = requests.post(f"{fast_server.url}/v1/act", json={"image": "AAAA"}, timeout=10)
    assert missing.status_code == 422 and "instruction" in missing.json()["error"]


def _raw_ws(server):
    from websockets.sync.client import connect

    from ecot.serve import protocol
    from ecot.serve.client import _CONNECT_KWARGS

    ws = connect(f"ws://127.0.0.1:{server.port}", max_size=None, open_timeout=10, **_CONNECT_KWARGS)
    protocol.unpackb(ws.recv(timeout=10))  # metadata first
    return ws


def _packed(obj):
    from ecot.serve import protocol

    return protocol.packb(obj)


@pytest.mark.parametrize(
    "frame, message",
    [
        ("a text frame", "expected binary msgpack frames"),
        (b"\xc1\xc1 garbage", "not valid msgpack"),
        ("list", "must be a msgpack map"),
        ("no-prompt", "missing the instruction"),
        ("float-image", "dtype uint8"),
        ("short-bytes", "needs"),
        ("huge-image", "exceeds the limit"),
    ],
)
def test_websocket_refuses_garbage_with_a_text_frame_and_1011(fast_server, scene_image, frame, message):
    from websockets.exceptions import ConnectionClosed

    frames = {
        "list": _packed([1, 2]),
        "no-prompt": _packed({"image": scene_image}),
        "float-image": _packed({"image": scene_image.astype(np.float32), "prompt": "x"}),
        "short-bytes": _packed({"image": {b"__ndarray__": True, b"data": b"12", b"dtype": "|u1", b"shape": [10, 10, 3]}, "prompt": "x"}),
        "huge-image": _packed({"image": np.zeros((2100, 2100, 3), np.uint8), "prompt": "x"}),
    }
    ws = _raw_ws(fast_server)
    ws.send(frames.get(frame, frame) if isinstance(frame, str) else frame)
    reply = ws.recv(timeout=30)
    assert isinstance(reply, str) and message in reply and "Traceback" not in reply
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    assert closed.value.rcvd.code == 1011
    with PolicyClient("127.0.0.1", fast_server.port) as client:  # the server keeps serving
        assert _valid_action(client.infer(scene_image, INSTRUCTION)["action"])


def test_websocket_frames_over_the_size_limit_are_refused(fast_server, scene_image):
    from websockets.exceptions import ConnectionClosed

    ws = _raw_ws(fast_server)
    ws.send(b"\x00" * (17 * 2**20))
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=30)
    assert closed.value.rcvd.code == 1009  # message too big
    with PolicyClient("127.0.0.1", fast_server.port) as client:
        assert _valid_action(client.infer(scene_image, INSTRUCTION)["action"])


def test_http_sessions_are_bounded(fast_server):
    from ecot.serve.app import SessionStore

    policy = fast_server.server.config.app.state.service.policy
    store = SessionStore(policy, max_sessions=3)
    first = store.http("a")
    for name in ("b", "c", "a", "d"):  # "a" was used again, so "b" is the least recently used
        store.http(name)
    assert store.names() == ["c", "a", "d"] and store.http("a") is first


def test_openpi_client_raises_on_a_server_error(fast_server):
    from openpi_client.websocket_client_policy import WebsocketClientPolicy

    client = WebsocketClientPolicy("127.0.0.1", fast_server.port)
    with pytest.raises(RuntimeError, match="Error in inference server:\nmissing the image"):
        client.infer({"prompt": "x"})


# ---------------------------------------------------------------------- API key


@pytest.fixture(scope="module")
def keyed_server(micro_checkpoint):
    srv = start(load(micro_checkpoint, "no-reasoning"), api_key="s3cret-key")
    yield srv
    srv.stop()


def test_api_key_is_checked_on_every_route(keyed_server, scene_image):
    from openpi_client.websocket_client_policy import WebsocketClientPolicy
    from websockets.exceptions import InvalidStatus

    url = keyed_server.url
    for path in ("/healthz", "/v1/metadata", "/viewer", "/openapi.json"):
        assert requests.get(url + path, timeout=10).status_code == 401, path
        assert requests.get(url + path, headers={"Authorization": "Api-Key wrong"}, timeout=10).status_code == 401
    assert requests.get(url + "/healthz", headers={"Authorization": "Api-Key s3cret-key"}, timeout=10).status_code == 200
    assert requests.get(url + "/healthz", headers={"Authorization": "Bearer s3cret-key"}, timeout=10).status_code == 200
    assert requests.get(url + "/viewer?api_key=s3cret-key", timeout=10).status_code == 200
    body = {"image": _png(scene_image), "instruction": INSTRUCTION}
    assert requests.post(url + "/v1/act", json=body, timeout=30).status_code == 401
    assert requests.post(url + "/v1/act", json=body, headers={"Authorization": "Bearer s3cret-key"}, timeout=60).status_code == 200
    with pytest.raises(InvalidStatus) as refused:
        WebsocketClientPolicy("127.0.0.1", keyed_server.port)
    assert refused.value.response.status_code == 403
    with requests.get(url + "/v1/events?api_key=s3cret-key", stream=True, timeout=10) as events:
        assert events.status_code == 200 and next(events.iter_lines()).startswith(b"event: metadata")
    assert requests.get(url + "/v1/events", stream=True, timeout=10).status_code == 401
    with pytest.raises(InvalidStatus):
        PolicyClient("127.0.0.1", keyed_server.port, api_key="wrong")
    openpi = WebsocketClientPolicy("127.0.0.1", keyed_server.port, api_key="s3cret-key")
    assert openpi.infer({"image": scene_image, "prompt": INSTRUCTION})["actions"].shape == (1, 7)
    with PolicyClient("127.0.0.1", keyed_server.port, api_key="s3cret-key") as ours:
        assert _valid_action(ours.infer(scene_image, INSTRUCTION)["action"])

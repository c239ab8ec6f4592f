"""A real HTTP server on 127.0.0.1 speaking the OpenAI chat-completions and Gemini
generateContent REST protocols, answering from a script (status codes, truncation, garbage)
or, when the script is empty, with a valid per-step reasoning answer built from the prompt."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def valid_answer(prompt: str, move: str | None = None) -> str:
    """A well-formed reasoning answer for the features dictionary embedded in the prompt.

    ``move``: answer this move for every step instead of copying the prompt's (a model that gets
    the move wrong)."""
    start = prompt.index("{", prompt.index("as a dictionary:"))
    features, _ = json.JSONDecoder().raw_decode(prompt, start)
    steps = {}
    for key, step in features["steps"].items():
        steps[key] = {
            "task": features["instruction"],
            "plan": ["reach the object", "grasp it", "carry it", "release it"],
            "subtask": "reach the object",
            "subtask_reason": f"step {key} of the demonstration",
            "move": step["move"] if move is None else move,
            "move_reason": f"the gripper is at {step.get('gripper')}",
        }
    return "Here is the annotation:\n```json\n" + json.dumps(steps) + "\n```"


class ScriptedLLMServer:
    """``script`` items: dict(status=int, text=str, truncated=bool, headers=dict, raw=str).

    ``wrong_move``: when set, the generated answers (empty script) give this move for every step."""

    def __init__(self, wrong_move: str | None = None):
        self.wrong_move = wrong_move
        self.script: list[dict] = []
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with server.lock:
                    server.requests.append({"path": self.path, "body": body, "headers": {k.lower(): v for k, v in self.headers.items()}})
                    item = server.script.pop(0) if server.script else {}
                if self.path.endswith("/chat/completions"):
                    server._openai(self, body, item)
                elif re.search(r"/models/[^/]+:generateContent$", self.path):
                    server._gemini(self, body, item)
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def _send(self, status, payload, headers=None, raw=None):
                data = raw.encode() if raw is not None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    # ------------------------------------------------------------------ protocols
    @staticmethod
    def _last_user_text_openai(body) -> str:
        for m in reversed(body["messages"]):
            if m["role"] == "user":
                c = m["content"]
                return c if isinstance(c, str) else " ".join(p.get("text", "") for p in c)
        return ""

    def _openai(self, handler, body, item):
        status = item.get("status", 200)
        if status != 200:
            handler._send(status, {"error": {"message": item.get("message", "scripted error"), "type": "x"}},
                          item.get("headers"), item.get("raw"))
            return
        if "raw" in item:
            handler._send(200, None, raw=item["raw"])
            return
        text = item["text"] if "text" in item else valid_answer(body["messages"][1]["content"], self.wrong_move)
        handler._send(200, {
            "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "length" if item.get("truncated") else "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        })

    def _gemini(self, handler, body, item):
        status = item.get("status", 200)
        if status != 200:
            names = {429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 400: "INVALID_ARGUMENT"}
            handler._send(status, {"error": {"code": status, "message": item.get("message", "scripted error"),
                                             "status": names.get(status, "UNKNOWN")}}, item.get("headers"))
            return
        if "raw" in item:
            handler._send(200, None, raw=item["raw"])
            return
        text = item["text"] if "text" in item else valid_answer(body["contents"][0]["parts"][0]["text"], self.wrong_move)
        handler._send(200, {
            "candidates": [{"content": {"role": "model", "parts": [{"text": text}]},
                            "finishReason": "MAX_TOKENS" if item.get("truncated") else "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1, "totalTokenCount": 2},
            "modelVersion": "test",
        })

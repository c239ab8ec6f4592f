"""The policy server: one FastAPI app over one :class:`~ecot.serve.worker.BatchingWorker`.

Routes (all behind the optional API key):

* ``POST /act`` — OpenVLA ``deploy.py`` drop-in (json-numpy body, bare json-numpy action back);
* ``POST /v1/act`` — our JSON API (base64 PNG/JPEG or json-numpy image, sessions, edits);
* ``POST /v1/stream`` — the same, answered as server-sent events while the reasoning is written;
* websocket ``/`` — the openpi protocol (msgpack-numpy; metadata frame first; one session per
  connection; ``{"reset": true}``; errors as a text frame, then close code 1011);
* ``GET /v1/events`` — server-sent events of every step (image, streamed text, result) for viewers;
* ``POST /v1/sessions/{session}/edit`` and ``/reset``; ``GET /v1/metadata``; ``GET /healthz``;
  ``GET /viewer`` — the live page.

Clients never see a traceback: bad input gets a 4xx (or, on the websocket, a text frame and close
1011) with a message saying what was wrong; anything else is logged here and answered with a
generic message.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hmac
import io
import itertools
import json
import logging
import time
from importlib import resources
from typing import Any, Callable, Literal

import numpy as np
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ecot.serve import protocol
from ecot.serve.protocol import Limits, ProtocolError
from ecot.serve.worker import BatchingWorker, StepRequest, apply_edit, close_session

log = logging.getLogger("ecot.serve")

SESSION_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
IMAGE_KEYS = ("image", "observation/image")
INSTRUCTION_KEYS = ("prompt", "instruction")


# ---------------------------------------------------------------------- JSON API models


class NumpyArray(BaseModel):
    """A json-numpy array: ``{"__numpy__": base64 bytes, "dtype": "|u1", "shape": [H, W, 3]}``."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")
    numpy_data: str = Field(alias="__numpy__", description="base64 of the array's C-order bytes")
    dtype: str = Field(description="numpy dtype string; images must be '|u1' (uint8)", examples=["|u1"])
    shape: list[int] = Field(description="[height, width, 3] for an image", examples=[[224, 224, 3]])


class Edit(BaseModel):
    """Reasoning fields to force for a session's steps; leave all out (``{}``) to clear edits."""

    model_config = ConfigDict(extra="forbid")
    plan: str | None = Field(None, max_length=2000)
    subtask: str | None = Field(None, max_length=2000)
    move: str | None = Field(None, max_length=2000)
    visible_objects: list[tuple[str, list[int | float]]] | None = Field(
        None, max_length=64, description="[[name, [x0, y0, x1, y1]], ...] in image pixels"
    )


class ActRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image: str | NumpyArray = Field(
        description="the camera image: base64 PNG/JPEG (a data: URL is fine) or a json-numpy HxWx3 uint8 array"
    )
    instruction: str = Field(min_length=1, max_length=2000, examples=["put the carrot on the plate"])
    unnorm_key: str | None = Field(None, max_length=200, description="action statistics to unnormalize with")
    session: str | None = Field(
        None, pattern=SESSION_PATTERN, description="per-robot policy state (reasoning reuse, async, edits); omit for a stateless step"
    )
    edit: Edit | None = Field(None, description="reasoning fields to force from this step on ({} clears)")
    reset: bool = Field(False, description="reset the session (new episode) before this step")


class ReasoningFields(BaseModel):
    task: str
    plan: str
    visible_objects: list[tuple[str, list[int | float]]]
    subtask_reasoning: str
    subtask: str
    move_reasoning: str
    move: str
    gripper_positions: list[list[int | float]]


class ActResponse(BaseModel):
    action: list[float] = Field(description="the unnormalized action (action_dim values)")
    reasoning: ReasoningFields
    text: str = Field(description="the generated text, TASK: ... ACTION:")
    timings: dict[str, float | int | str | bool | None] = Field(
        description="policy timings (ms, token counts) and the server's queue_ms, infer_ms, batch_size, latency_ms"
    )
    session: str | None = None


class ErrorResponse(BaseModel):
    error: str


class EditResponse(BaseModel):
    session: str
    edit: dict


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "malformed request (bad image, unknown unnorm_key, ...)"},
    401: {"model": ErrorResponse, "description": "missing or wrong API key"},
    413: {"model": ErrorResponse, "description": "request body too large"},
    422: {"model": ErrorResponse, "description": "request does not match the schema"},
}

# /act takes deploy.py's body (json-numpy inside plain JSON); documented by hand.
ACT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {
                            "type": "object",
                            "required": ["image", "instruction"],
                            "properties": {
                                "image": {"$ref": "#/components/schemas/NumpyArray"},
                                "instruction": {"type": "string"},
                                "unnorm_key": {"type": "string"},
                            },
                        },
                        {
                            "type": "object",
                            "required": ["encoded"],
                            "properties": {"encoded": {"type": "string", "description": "json_numpy.dumps of the payload"}},
                        },
                    ]
                }
            }
        },
    }
}


# ---------------------------------------------------------------------- state


class SessionStore:
    """Named policy sessions: HTTP ones (``session`` field, least recently used evicted beyond
    ``max_sessions``) and one per websocket connection (``ws-N``, dropped on disconnect)."""

    def __init__(self, policy: Any, max_sessions: int = 256):
        self.policy = policy
        self.max_sessions = max_sessions
        # async sessions own a reasoning thread whose close() may wait for it
        self.background_close = str(getattr(policy, "metadata", {}).get("mode")) == "async"
        self._http: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self._ws: dict[str, Any] = {}
        self._ids = itertools.count(1)

    def http(self, name: str) -> Any:
        if name in self._http:
            self._http.move_to_end(name)
            return self._http[name]
        session = self._http[name] = self.policy.new_session()
        while len(self._http) > self.max_sessions:
            _, evicted = self._http.popitem(last=False)
            self.close(evicted)
        return session

    def close(self, session: Any) -> None:
        close_session(session, self.background_close)

    def open_ws(self) -> tuple[str, Any]:
        name = f"ws-{next(self._ids)}"
        self._ws[name] = self.policy.new_session()
        return name, self._ws[name]

    def close_ws(self, name: str) -> None:
        session = self._ws.pop(name, None)
        if session is not None:
            self.close(session)

    def get(self, name: str) -> Any | None:
        return self._ws.get(name) or self._http.get(name)

    def names(self) -> list[str]:
        return [*self._ws, *self._http]


class EventHub:
    """Fan-out of step events to viewers (``GET /v1/events``). A slow viewer loses events rather
    than slowing the robots; the latest step and result of each session are kept for new viewers."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, queue_size: int = 512):
        self.loop = loop
        self.queue_size = queue_size
        self._subscribers: set[asyncio.Queue] = set()
        self.latest: collections.OrderedDict[str, dict] = collections.OrderedDict()

    @property
    def active(self) -> bool:
        return bool(self._subscribers)

    def subscribe(self) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue(self.queue_size)
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        self._subscribers.discard(q)

    def publish(self, event: dict) -> None:
        """Event-loop thread only."""
        if event["type"] in ("step", "result"):
            key = f"{event['session']}:{event['type']}"
            self.latest[key] = event
            self.latest.move_to_end(key)
            while len(self.latest) > 32:
                self.latest.popitem(last=False)
        for q in list(self._subscribers):
            try:
                q.put_nowait(event)
            except asyncio.QueueFull:
                pass

    def publish_threadsafe(self, event: dict) -> None:
        if self.loop is not None and self._subscribers:
            self.loop.call_soon_threadsafe(self.publish, event)


def _image_data_url(image: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# ---------------------------------------------------------------------- security middleware


class Guard:
    """ASGI middleware: API key on every route and a request body size limit.

    The key is accepted as ``Authorization: Api-Key <key>`` (what openpi-client sends) or
    ``Authorization: Bearer <key>``; for the browser viewer (which cannot set headers on page
    loads and event streams) also as the ``api_key`` query parameter.
    """

    def __init__(self, app: Callable, api_key: str | None, max_body_bytes: int):
        self.app = app
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes

    def _authorized(self, scope: dict) -> bool:
        if not self.api_key:
            return True
        expected = self.api_key.encode()
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() in (b"api-key", b"bearer") and hmac.compare_digest(token.strip(), expected):
                    return True
        from urllib.parse import parse_qs

        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        return any(hmac.compare_digest(v.encode(), expected) for v in query.get("api_key", []))

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        if not self._authorized(scope):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008, "reason": "missing or wrong API key"})
                return
            return await _send_json(send, 401, {"error": "missing or wrong API key (send 'Authorization: Api-Key <key>')"})
        if scope["type"] == "websocket":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    return await _send_json(send, 400, {"error": "bad Content-Length header"})
                if length > self.max_body_bytes:
                    return await _send_json(send, 413, {"error": f"request body exceeds {self.max_body_bytes} bytes"})
        # Read the body (bounded) before the app sees it, then replay it.
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            total += len(body)
            if total > self.max_body_bytes:
                return await _send_json(send, 413, {"error": f"request body exceeds {self.max_body_bytes} bytes"})
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


async def _send_json(send: Callable, status: int, payload: dict) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------- the app


class PolicyService:
    """What the routes share: the policy, its worker, sessions, viewer events and limits."""

    def __init__(self, policy: Any, max_batch: int, max_wait_ms: float, limits: Limits, max_sessions: int):
        self.policy = policy
        self.metadata = protocol.plain(dict(policy.metadata))
        self.unnorm_keys = [str(k) for k in self.metadata.get("unnorm_keys") or []]
        self.action_dim = int(self.metadata.get("action_dim") or 7)
        self.limits = limits
        self.worker = BatchingWorker(policy, max_batch=max_batch, max_wait_ms=max_wait_ms)
        self.sessions = SessionStore(policy, max_sessions=max_sessions)
        self.events = EventHub()
        self.started = time.time()

    async def step(
        self,
        image: np.ndarray,
        instruction: str,
        unnorm_key: str | None,
        session_name: str | None,
        session: Any,
        edit: dict | None = None,
        reset: bool = False,
        on_text: Callable[[str], None] | None = None,
    ) -> tuple[Any, dict]:
        """Queue one step for the worker and wait for it; publishes viewer events."""
        name = session_name or "-"
        viewers = self.events.active
        t0 = time.perf_counter()
        if viewers:
            self.events.publish({
                "type": "step", "session": name, "instruction": instruction, "image": _image_data_url(image),
                "height": int(image.shape[0]), "width": int(image.shape[1]), "time": time.time(),
            })  # fmt: skip

        def text_cb(text: str) -> None:
            if on_text is not None:
                on_text(text)
            self.events.publish_threadsafe({"type": "text", "session": name, "text": text})

        request = StepRequest(
            image=image, instruction=instruction, session=session, unnorm_key=unnorm_key,
            edit=edit, reset=reset, on_text=text_cb if (on_text is not None or viewers) else None,
        )  # fmt: skip
        out, info = await asyncio.wrap_future(self.worker.submit(request))
        action = np.asarray(out.action, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(action)):
            raise RuntimeError("the policy produced a non-finite action")
        info["latency_ms"] = round((time.perf_counter() - t0) * 1000, 2)
        if self.events.active:
            self.events.publish({
                "type": "result", "session": name, "action": action.tolist(),
                "reasoning": protocol.reasoning_dict(out.reasoning), "text": out.text,
                "timings": {**protocol.plain(dict(out.timings or {})), **info}, "time": time.time(),
            })  # fmt: skip
        return out, info

    def result_json(self, out: Any, info: dict, session: str | None) -> dict:
        return {
            "action": np.asarray(out.action, dtype=np.float64).reshape(-1).tolist(),
            "reasoning": protocol.reasoning_dict(out.reasoning),
            "text": out.text,
            "timings": {**protocol.plain(dict(out.timings or {})), **info},
            "session": session,
        }

    def session_for(self, name: str | None) -> Any:
        """The named HTTP session, or a fresh one for a stateless call (close it with :meth:`done`)."""
        return self.sessions.http(name) if name else self.policy.new_session()

    def done(self, name: str | None, session: Any) -> None:
        if not name:
            self.sessions.close(session)


def create_app(
    policy: Any,
    *,
    api_key: str | None = None,
    max_batch: int = 8,
    max_wait_ms: float = 5.0,
    limits: Limits = protocol.DEFAULT_LIMITS,
    max_sessions: int = 256,
) -> FastAPI:
    """The FastAPI app serving ``policy`` (an :class:`ecot.policy.ECoTPolicy` or the same API)."""
    service = PolicyService(policy, max_batch, max_wait_ms, limits, max_sessions)

    async def lifespan(app: FastAPI):
        service.events.loop = asyncio.get_running_loop()
        yield
        service.worker.stop()

    app = FastAPI(
        title="ecot policy server",
        version="1",
        description="Embodied Chain-of-Thought policy: OpenVLA-compatible POST /act, JSON API /v1, "
        "openpi-compatible websocket at /, streamed reasoning, live viewer at /viewer.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(Guard, api_key=api_key, max_body_bytes=limits.max_body_bytes)

    # ------------------------------------------------------------ errors (never a traceback)
    @app.exception_handler(ProtocolError)
    async def _protocol_error(request: Request, err: ProtocolError):
        return JSONResponse({"error": str(err)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, err: RequestValidationError):
        parts = []
        for e in err.errors()[:5]:
            loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
            parts.append(f"{loc}: {e.get('msg', 'invalid')}")
        return JSONResponse({"error": "invalid request: " + "; ".join(parts)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException):
        return JSONResponse({"error": str(err.detail)}, status_code=err.status_code, headers=getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, err: Exception):
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=err)
        return JSONResponse({"error": "internal server error (see the server log)"}, status_code=500)

    # ------------------------------------------------------------ plain routes
    @app.get("/healthz", summary="liveness: 200 when the server runs")
    async def healthz() -> dict:
        w = service.worker
        return {"status": "ok", "steps": w.steps, "batches": w.batches, "largest_batch": w.largest_batch}

    @app.get("/v1/metadata", summary="the policy's metadata (model, action_dim, unnorm_keys, mode, ...)", responses=ERRORS)
    async def metadata() -> dict:
        return service.metadata

    # ------------------------------------------------------------ OpenVLA deploy.py drop-in
    @app.post(
        "/act",
        summary="OpenVLA deploy.py drop-in: json-numpy image in, json-numpy action out",
        description="Body `{image: json-numpy HxWx3 uint8, instruction, unnorm_key?}` or `{encoded: json_numpy.dumps(that)}`. "
        "Answers the bare json-numpy action, or for the `encoded` form that JSON as a string.",
        openapi_extra=ACT_BODY,
        responses={200: {"description": "json-numpy action {__numpy__, dtype: '<f8', shape: [action_dim]} (or its text)"}, **ERRORS},
    )
    async def act(request: Request):
        body = await request.body()
        payload = _loads(body)
        if not isinstance(payload, dict):
            raise ProtocolError("body must be a JSON object with 'image' and 'instruction' (or 'encoded')")
        encoded = "encoded" in payload
        if encoded:
            if len(payload) != 1:
                raise ProtocolError("the 'encoded' form must have 'encoded' as its only key")
            if not isinstance(payload["encoded"], str):
                raise ProtocolError("'encoded' must be a string: json_numpy.dumps of the payload")
            payload = _loads(payload["encoded"])
            if not isinstance(payload, dict):
                raise ProtocolError("'encoded' must hold a JSON object with 'image' and 'instruction'")
        image, instruction, unnorm_key = _observation(payload, service, ("image",), ("instruction",))
        session = service.session_for(None)
        try:
            out, _ = await service.step(image, instruction, unnorm_key, None, session)
        finally:
            service.done(None, session)
        action = protocol.json_numpy_encode(np.asarray(out.action, dtype=np.float64).reshape(-1))
        return JSONResponse(json.dumps(action) if encoded else action)

    # ------------------------------------------------------------ JSON API
    def _prepare(req: ActRequest) -> tuple:
        image = protocol.decode_image(req.image.model_dump(by_alias=True) if isinstance(req.image, NumpyArray) else req.image, service.limits)
        instruction = protocol.validate_instruction(req.instruction, service.limits)
        unnorm_key = protocol.validate_unnorm_key(req.unnorm_key, service.unnorm_keys)
        edit = protocol.validate_edit(req.edit.model_dump(exclude_none=True), service.limits) if req.edit is not None else None
        return image, instruction, unnorm_key, edit

    @app.post("/v1/act", summary="one policy step: action, reasoning fields, text, timings", response_model=ActResponse, responses=ERRORS)
    async def act_v1(req: ActRequest) -> dict:
        image, instruction, unnorm_key, edit = _prepare(req)
        session = service.session_for(req.session)
        try:
            out, info = await service.step(image, instruction, unnorm_key, req.session, session, edit=edit, reset=req.reset)
        finally:
            service.done(req.session, session)
        return service.result_json(out, info, req.session)

    @app.post(
        "/v1/stream",
        summary="one policy step as server-sent events: 'text' (the text so far) while decoding, then 'result' (as /v1/act) or 'error'",
        responses={200: {"content": {"text/event-stream": {}}, "description": "event stream"}, **ERRORS},
    )
    async def stream_v1(req: ActRequest):
        image, instruction, unnorm_key, edit = _prepare(req)
        session = service.session_for(req.session)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def on_text(text: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, ("text", {"text": text}))

        async def run() -> None:
            try:
                out, info = await service.step(image, instruction, unnorm_key, req.session, session, edit, req.reset, on_text)
                queue.put_nowait(("result", service.result_json(out, info, req.session)))
            except ProtocolError as err:
                queue.put_nowait(("error", {"error": str(err)}))
            except Exception as err:
                log.error("stream step failed", exc_info=err)
                queue.put_nowait(("error", {"error": "internal server error (see the server log)"}))
            finally:
                service.done(req.session, session)

        task = asyncio.create_task(run())

        async def events():
            try:
                while True:
                    kind, data = await queue.get()
                    yield f"event: {kind}\ndata: {json.dumps(data)}\n\n"
                    if kind != "text":
                        break
            finally:
                await task

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.post("/v1/sessions/{session}/edit", summary="force reasoning fields (plan, subtask, move, visible_objects) for a session; {} clears", response_model=EditResponse, responses={404: {"model": ErrorResponse}, **ERRORS})
    async def edit_session(session: str, edit: Edit) -> dict:
        target = service.sessions.get(session)
        if target is None:
            return JSONResponse({"error": f"no session {session[:64]!r}; active: {service.sessions.names()[:20]}"}, status_code=404)
        fields = protocol.validate_edit(edit.model_dump(exclude_none=True), service.limits) or {}
        await asyncio.wrap_future(service.worker.call(lambda: apply_edit(target, fields)))
        service.events.publish({"type": "edit", "session": session, "edit": protocol.plain(fields)})
        return {"session": session, "edit": protocol.plain(fields)}

    @app.post("/v1/sessions/{session}/reset", summary="reset a session (new episode: no reused reasoning, no edits)", responses={404: {"model": ErrorResponse}, **ERRORS})
    async def reset_session(session: str) -> dict:
        target = service.sessions.get(session)
        if target is None:
            return JSONResponse({"error": f"no session {session[:64]!r}"}, status_code=404)
        await asyncio.wrap_future(service.worker.call(target.reset))
        return {"session": session, "reset": True}

    # ------------------------------------------------------------ viewer
    @app.get("/v1/events", summary="server-sent events of every step (for viewers): step, text, result, edit", responses={200: {"content": {"text/event-stream": {}}, "description": "event stream"}, **ERRORS})
    async def events_v1(request: Request):
        q = service.events.subscribe()

        async def events():
            try:
                yield f"event: metadata\ndata: {json.dumps(service.metadata)}\n\n"
                for event in list(service.events.latest.values()):
                    yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
                while True:
                    try:
                        event = await asyncio.wait_for(q.get(), timeout=15)
                    except asyncio.TimeoutError:
                        if await request.is_disconnected():
                            break
                        yield ": keep-alive\n\n"
                        continue
                    yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
            finally:
                service.events.unsubscribe(q)

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.get("/viewer", response_class=HTMLResponse, summary="live page: image with boxes and gripper trail, streamed reasoning, action, latency, edits")
    async def viewer() -> HTMLResponse:
        return HTMLResponse(resources.files("ecot.serve").joinpath("static/viewer.html").read_text(encoding="utf-8"))

    # ------------------------------------------------------------ openpi websocket
    @app.websocket("/")
    async def websocket_policy(ws: WebSocket) -> None:
        await ws.accept()
        name, session = service.sessions.open_ws()
        try:
            await ws.send_bytes(protocol.packb({**service.metadata, "session": name}))
            prev_total_ms = None
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                t0 = time.perf_counter()
                try:
                    data = message.get("bytes")
                    if data is None:
                        raise ProtocolError("expected binary msgpack frames (an observation dict), got a text frame")
                    obs = protocol.unpackb(data, service.limits.max_body_bytes)
                    if not isinstance(obs, dict):
                        raise ProtocolError(f"an observation must be a msgpack map, got {type(obs).__name__}")
                    if obs.get("reset") is True:
                        await asyncio.wrap_future(service.worker.call(session.reset))
                        await ws.send_bytes(protocol.packb({"reset": True, "session": name}))
                        continue
                    image, instruction, unnorm_key = _observation(obs, service, IMAGE_KEYS, INSTRUCTION_KEYS)
                    edit = protocol.validate_edit(obs["edit"], service.limits) if obs.get("edit") is not None else None
                    out, info = await service.step(image, instruction, unnorm_key, name, session, edit=edit)
                except ProtocolError as err:
                    await _ws_error(ws, str(err))
                    return
                except Exception as err:
                    log.error("websocket step failed", exc_info=err)
                    await _ws_error(ws, "internal server error (see the server log)")
                    return
                action = np.asarray(out.action, dtype=np.float64).reshape(1, -1)
                timing = {"infer_ms": info["infer_ms"], "queue_ms": info["queue_ms"], "batch_size": info["batch_size"]}
                if prev_total_ms is not None:
                    timing["prev_total_ms"] = prev_total_ms
                reply = {
                    "actions": action,
                    "reasoning": protocol.reasoning_dict(out.reasoning),
                    "text": out.text,
                    "timings": protocol.plain(dict(out.timings or {})),
                    "server_timing": timing,
                }
                await ws.send_bytes(protocol.packb(reply))
                prev_total_ms = round((time.perf_counter() - t0) * 1000, 2)
        except WebSocketDisconnect:
            pass
        finally:
            service.sessions.close_ws(name)

    return app


async def _ws_error(ws: WebSocket, message: str) -> None:
    try:
        await ws.send_text(message)
        await ws.close(code=1011, reason="Internal server error")
    except Exception:  # the client may already be gone
        pass


def _loads(text: str | bytes) -> Any:
    try:
        return json.loads(text, object_hook=protocol.json_numpy_hook)
    except ProtocolError:
        raise
    except (ValueError, RecursionError):
        raise ProtocolError("body is not valid JSON") from None


def _observation(obs: dict, service: PolicyService, image_keys: tuple, instruction_keys: tuple) -> tuple:
    image = next((obs[k] for k in image_keys if k in obs), None)
    if image is None:
        raise ProtocolError(f"missing the image: send it under {' or '.join(repr(k) for k in image_keys)}")
    instruction = next((obs[k] for k in instruction_keys if k in obs), None)
    if instruction is None:
        raise ProtocolError(f"missing the instruction: send it under {' or '.join(repr(k) for k in instruction_keys)}")
    image = protocol.decode_image(image, service.limits)
    instruction = protocol.validate_instruction(instruction, service.limits)
    unnorm_key = protocol.validate_unnorm_key(obs.get("unnorm_key"), service.unnorm_keys)
    return image, instruction, unnorm_key

"""Robot-side client of ``ecot serve``: numpy, msgpack and websockets only (no torch).

It speaks the openpi websocket protocol (msgpack-numpy frames, a metadata frame first) to the
server's websocket at ``/``::

    from ecot.serve.client import PolicyClient

    policy = PolicyClient("gpu-box.local", 8000, api_key="...")
    policy.metadata                       # {"model": ..., "action_dim": 7, "unnorm_keys": [...], "mode": ...}
    out = policy.infer(image, "put the carrot on the plate")   # image: HxWx3 uint8 ndarray
    out["action"]                         # (action_dim,) float array, unnormalized
    out["reasoning"], out["text"], out["server_timing"]
    policy.reset()                        # new episode: forget reused/async reasoning state

One connection is one robot: the server keeps this connection's policy state (reasoning reuse,
async reasoning, edits) until :meth:`reset` or disconnect.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from ecot.serve import protocol

# websockets >= 17 wants connect() used as a context manager unless legacy=True says otherwise
_CONNECT_KWARGS = {"legacy": True} if "legacy" in inspect.signature(connect).parameters else {}


class PolicyServerError(RuntimeError):
    """The server refused a request (its message says why); the connection was closed by it."""


class PolicyClient:
    """A connection to an ``ecot serve`` policy server (or any openpi-protocol server)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = 8000,
        api_key: str | None = None,
        timeout: float = 300.0,
        open_timeout: float = 30.0,
    ) -> None:
        uri = host if host.startswith(("ws://", "wss://")) else f"ws://{host}"
        self.uri = f"{uri}:{port}" if port is not None else uri
        self.api_key = api_key
        self.timeout = timeout
        self.open_timeout = open_timeout
        self._ws = None
        self.metadata: dict = {}
        self._connect()

    # ------------------------------------------------------------------ connection
    def _connect(self) -> None:
        headers = {"Authorization": f"Api-Key {self.api_key}"} if self.api_key else None
        self._ws = connect(
            self.uri, compression=None, max_size=None, additional_headers=headers, open_timeout=self.open_timeout,
            **_CONNECT_KWARGS,
        )
        first = self._ws.recv(timeout=self.open_timeout)
        if isinstance(first, str):
            self.close()
            raise PolicyServerError(f"policy server refused the connection: {first}")
        self.metadata = protocol.unpackb(first)

    def _request(self, message: dict) -> dict:
        if self._ws is None:  # the server closed the previous connection (after an error): reconnect
            self._connect()
        try:
            self._ws.send(protocol.packb(message))
            reply = self._ws.recv(timeout=self.timeout)
        except ConnectionClosed as err:
            self._ws = None
            raise PolicyServerError(f"connection to the policy server closed: {err}") from None
        except TimeoutError:
            self.close()
            raise
        if isinstance(reply, str):
            self.close()  # the server closes after an error (code 1011)
            raise PolicyServerError(reply)
        return protocol.unpackb(reply)

    def close(self) -> None:
        if self._ws is not None:
            try:
                self._ws.close()
            finally:
                self._ws = None

    def __enter__(self) -> "PolicyClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ policy
    def infer(self, image: np.ndarray, instruction: str, unnorm_key: str | None = None) -> dict:
        """One policy step. Returns the server's response with ``"action"`` ((action_dim,) array)
        added next to ``"actions"`` ((1, action_dim), openpi's convention)."""
        observation: dict[str, Any] = {"image": np.asarray(image), "instruction": instruction}
        if unnorm_key is not None:
            observation["unnorm_key"] = unnorm_key
        result = self._request(observation)
        actions = np.asarray(result["actions"])
        result["action"] = actions[0] if actions.ndim == 2 else actions
        return result

    def reset(self) -> None:
        """Start a new episode: the server drops this connection's reasoning state and edits."""
        self._request({"reset": True})

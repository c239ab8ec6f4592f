"""Running the policy server: load a checkpoint, check the bind address, start uvicorn.

:func:`serve` is what ``ecot serve`` runs; :class:`ServerThread` runs the same app in a thread
of the calling process (tests, benchmarks, notebooks).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from typing import Any

from ecot.serve.protocol import DEFAULT_LIMITS, Limits

log = logging.getLogger("ecot.serve")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_warning(host: str, api_key: str | None) -> str | None:
    """The warning for serving beyond this machine without an API key (None when there is none)."""
    if is_loopback(host) or api_key:
        return None
    return (
        f"serving on {host}, reachable from other machines, without --api-key: anyone who can reach "
        "this port can drive the policy. Pass --api-key KEY (clients send 'Authorization: Api-Key KEY')."
    )


def load_policy(checkpoint: str, mode: str = "full", reuse_steps: int = 5, device: str = "cpu", dtype: str | None = None) -> Any:
    from ecot.policy import ECoTPolicy

    return ECoTPolicy.from_pretrained(checkpoint, mode=mode, reuse_steps=reuse_steps, device=device, dtype=dtype)


def uvicorn_config(app: Any, host: str, port: int, limits: Limits = DEFAULT_LIMITS, log_level: str = "info"):
    import uvicorn

    # ws frames up to the body limit (+ msgpack framing); larger ones are refused by the protocol (close 1009)
    return uvicorn.Config(
        app, host=host, port=port, log_level=log_level, ws_max_size=limits.max_body_bytes + 65536,
        timeout_keep_alive=30, server_header=False,
    )  # fmt: skip


def serve(
    checkpoint: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    mode: str = "full",
    reuse_steps: int = 5,
    api_key: str | None = None,
    device: str = "cpu",
    dtype: str | None = None,
    max_batch: int = 8,
    max_wait_ms: float = 5.0,
    limits: Limits = DEFAULT_LIMITS,
) -> None:
    """Load ``checkpoint`` and serve it until interrupted."""
    import uvicorn

    from ecot.serve.app import create_app

    warning = bind_warning(host, api_key)
    if warning:
        log.warning(warning)
    policy = load_policy(checkpoint, mode=mode, reuse_steps=reuse_steps, device=device, dtype=dtype)
    app = create_app(policy, api_key=api_key, max_batch=max_batch, max_wait_ms=max_wait_ms, limits=limits)
    log.info("serving %s (mode %s) on http://%s:%d  (viewer: /viewer)", checkpoint, mode, host, port)
    uvicorn.Server(uvicorn_config(app, host, port, limits)).run()


class ServerThread:
    """A real uvicorn server for ``app`` on a background thread; ``port=0`` picks a free port."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, limits: Limits = DEFAULT_LIMITS, log_level: str = "warning"):
        import uvicorn

        self.host = host
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        self.port = sock.getsockname()[1]
        self._sock = sock
        self.server = uvicorn.Server(uvicorn_config(app, host, self.port, limits, log_level))
        self.server.install_signal_handlers = lambda: None  # not the main thread
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True, name="ecot-serve")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> "ServerThread":
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the policy server did not start")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout)
        self._sock.close()

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

"""Many robots at once: 16 concurrent clients x 25 requests, batched into step_batch calls; a slow
or stuck client does not stall the others."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import requests

from ecot.serve.client import PolicyClient

from .conftest import INSTRUCTION

CLIENTS, REQUESTS = 16, 25



def test_16_concurrent_clients_x_25_requests(fast_server, scene_image):
    before = requests.get(f"{fast_server.url}/healthz", timeout=10).json()
    errors: list[str] = []
    actions: list[np.ndarray] = []
    lock = threading.Lock()
    barrier = threading.Barrier(CLIENTS)

    def robot(k: int) -> None:
        image = np.roll(scene_image, 7 * k, axis=1)  # each robot sees its own image
        try:
            with PolicyClient("127.0.0.1", fast_server.port, timeout=120) as client:
                barrier.wait(timeout=60)
                for _ in range(REQUESTS):
                    out = client.infer(image, INSTRUCTION)
                    with lock:
                        actions.append(out["action"])
        except Exception as err:  # collected and reported below
            with lock:
                errors.append(f"client {k}: {type(err).__name__}: {err}")

    threads = [threading.Thread(target=robot, args=(k,)) for k in range(CLIENTS)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=170)
    elapsed = time.perf_counter() - start
    assert errors == []
    assert len(actions) == CLIENTS * REQUESTS
    stacked = np.stack(actions)
    assert stacked.shape == (CLIENTS * REQUESTS, 7) and np.all(np.isfinite(stacked))
    after = requests.get(f"{fast_server.url}/healthz", timeout=10).json()
    steps, batches = after["steps"] - before["steps"], after["batches"] - before["batches"]
    assert steps == CLIENTS * REQUESTS
    assert after["largest_batch"] > 1 and batches < steps  # requests that arrived together shared a forward
    print(f"{steps} steps in {batches} batched calls, {elapsed:.1f} s")


def test_a_stuck_client_does_not_stall_the_others(fast_server, scene_image):
    # One client sends half an HTTP request and never finishes; another opens a websocket and never
    # sends a frame. Other robots are still served promptly.
    half = socket.create_connection(("127.0.0.1", fast_server.port), timeout=10)
    half.sendall(b"POST /act HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"image\":")
    idle = PolicyClient("127.0.0.1", fast_server.port)
    try:
        with PolicyClient("127.0.0.1", fast_server.port, timeout=30) as client:
            t = time.perf_counter()
            for _ in range(3):
                assert np.all(np.isfinite(client.infer(scene_image, INSTRUCTION)["action"]))
            assert time.perf_counter() - t < 30
    finally:
        half.close()
        idle.close()

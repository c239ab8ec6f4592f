"""What serving costs and what batching gains: ``ecot serve`` vs calling the policy in-process.

* latency: median time of one step through the websocket (``PolicyClient.infer`` against an
  ``ecot serve`` process on 127.0.0.1) vs ``ECoTPolicy.step`` called in this process, same
  checkpoint, mode and image, the two alternating step by step; ratio = served / in-process;
* throughput: steps/s with 1 client vs 8 concurrent clients (each its own connection), and, as
  the no-batching baseline, 8 clients against a server started with ``--max-batch 1``.

Client and server share the machine (on the project's 2-core CPU machine they compete for the
cores). Default: a random tiny-siglip checkpoint in mode ``no-reasoning`` (7 action tokens a step:
the shortest step, so the server's share of the time is the largest); ``--checkpoint`` and
``--mode full`` measure a trained checkpoint writing its reasoning.

Usage::

    python benchmarks/serve_overhead.py [--checkpoint DIR] [--mode no-reasoning] [--requests 40]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import write_result  # noqa: E402

INSTRUCTION = "put the red block in the bowl"


def _image():
    import numpy as np

    rng = np.random.default_rng(0)
    img = np.full((224, 224, 3), 200, dtype=np.uint8)
    img[80:140, 80:120] = (220, 30, 30)
    return img + rng.integers(0, 20, size=img.shape, dtype=np.uint8)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``ecot serve`` in a subprocess (a separate process, as in deployment)."""

    def __init__(self, checkpoint: str, mode: str, max_batch: int):
        import requests

        self.port = _free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        cmd = [sys.executable, "-m", "ecot", "serve", checkpoint, "--port", str(self.port), "--mode", mode,
               "--max-batch", str(max_batch), "--dtype", "float32"]  # fmt: skip
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("ecot serve exited: " + self.proc.stderr.read()[-2000:])
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("ecot serve did not start")
            time.sleep(0.3)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _throughput(port: int, clients: int, per_client: int) -> dict:
    import numpy as np
    import requests

    from ecot.serve.client import PolicyClient

    image = _image()
    errors: list[str] = []
    barrier = threading.Barrier(clients + 1)
    conns = [PolicyClient("127.0.0.1", port, timeout=600) for _ in range(clients)]
    for c in conns:
        c.infer(image, INSTRUCTION)  # warm-up, one each
    before = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json()

    def robot(k: int) -> None:
        img = np.roll(image, 5 * k, axis=1)
        barrier.wait()
        try:
            for _ in range(per_client):
                conns[k].infer(img, INSTRUCTION)
        except Exception as err:
            errors.append(f"{type(err).__name__}: {err}")

    threads = [threading.Thread(target=robot, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    after = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json()
    for c in conns:
        c.close()
    if errors:
        raise RuntimeError(f"{len(errors)} client errors, first: {errors[0]}")
    steps = clients * per_client
    return {
        "clients": clients,
        "steps": steps,
        "seconds": round(elapsed, 2),
        "steps_per_s": round(steps / elapsed, 2),
        "batched_calls": after["batches"] - before["batches"],
        "mean_batch": round(steps / max(1, after["batches"] - before["batches"]), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="checkpoint dir (default: a random tiny-siglip one)")
    parser.add_argument("--mode", default="no-reasoning")
    parser.add_argument("--requests", type=int, default=40, help="latency samples; also requests per throughput client")
    args = parser.parse_args()

    import torch

    from ecot.policy import ECoTPolicy

    tmp = None
    checkpoint = args.checkpoint
    if checkpoint is None:
        tmp = tempfile.TemporaryDirectory()
        checkpoint = str(Path(tmp.name) / "tiny")
        subprocess.run([sys.executable, "-m", "ecot", "model", "init", "--preset", "tiny-siglip", "--out", checkpoint],
                       cwd=ROOT, check=True, capture_output=True)  # fmt: skip

    # Latency: in-process steps and served steps alternate, so both see the same machine load.
    policy = ECoTPolicy.from_pretrained(checkpoint, mode=args.mode, device="cpu", dtype="float32")
    image = _image()
    session = policy.new_session()
    server = Server(checkpoint, args.mode, max_batch=8)
    try:
        from ecot.serve.client import PolicyClient

        local, served = [], []
        with PolicyClient("127.0.0.1", server.port) as client:
            for _ in range(3):  # warm-up
                policy.step(image, INSTRUCTION, session=session)
                client.infer(image, INSTRUCTION)
            for _ in range(args.requests):
                t = time.perf_counter()
                policy.step(image, INSTRUCTION, session=session)
                local.append(time.perf_counter() - t)
                t = time.perf_counter()
                client.infer(image, INSTRUCTION)
                served.append(time.perf_counter() - t)
        del policy
        one = _throughput(server.port, 1, args.requests)
        eight = _throughput(server.port, 8, max(5, args.requests // 2))
    finally:
        server.stop()
    unbatched_server = Server(checkpoint, args.mode, max_batch=1)
    try:
        eight_unbatched = _throughput(unbatched_server.port, 8, max(5, args.requests // 2))
    finally:
        unbatched_server.stop()
    if tmp is not None:
        tmp.cleanup()

    local_ms, served_ms = statistics.median(local) * 1000, statistics.median(served) * 1000
    write_result(
        "serve_overhead",
        {
            "what": f"ecot serve (websocket, 127.0.0.1, separate process) vs ECoTPolicy.step in-process; mode {args.mode}",
            "checkpoint": "random tiny-siglip" if args.checkpoint is None else args.checkpoint,
            "mode": args.mode,
            "torch_threads": torch.get_num_threads(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "value": {
                "served_latency_ms_median": round(served_ms, 2),
                "throughput_8_clients_steps_per_s": eight["steps_per_s"],
            },
            "baseline": {
                "in_process_latency_ms_median": round(local_ms, 2),
                "throughput_1_client_steps_per_s": one["steps_per_s"],
                "throughput_8_clients_max_batch_1_steps_per_s": eight_unbatched["steps_per_s"],
            },
            "ratio": {
                "latency_served_over_in_process": round(served_ms / local_ms, 2),
                "throughput_8_over_1_client": round(eight["steps_per_s"] / one["steps_per_s"], 2),
                "throughput_batched_over_max_batch_1": round(eight["steps_per_s"] / eight_unbatched["steps_per_s"], 2),
            },
            "details": {
                "served_overhead_ms_median": round(served_ms - local_ms, 2),
                "served_latency_ms_p90": round(sorted(served)[int(0.9 * len(served))] * 1000, 2),
                "in_process_latency_ms_p90": round(sorted(local)[int(0.9 * len(local))] * 1000, 2),
                "throughput_1_client": one,
                "throughput_8_clients": eight,
                "throughput_8_clients_max_batch_1": eight_unbatched,
            },
        },
    )


if __name__ == "__main__":
    main()

"""``ecot serve``: serve a policy checkpoint to robots (REST, websocket, viewer).

Nothing heavy is imported at module level; the handler imports the server.
"""

from __future__ import annotations

from ecot.policy.modes import MODES


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve a policy: OpenVLA-style POST /act, openpi websocket at /, streaming, live viewer",
        description="Serve an ECoT policy checkpoint. Robot clients: OpenVLA deploy.py style POST /act "
        "(json-numpy), the openpi websocket client (ws://HOST:PORT), or ecot.serve.client.PolicyClient. "
        "Live viewer at http://HOST:PORT/viewer.",
    )
    parser.add_argument("checkpoint", help="checkpoint directory (or hub id)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only; another address warns without --api-key)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--mode", default="full", choices=MODES, help="how the policy reasons each step")
    parser.add_argument("--reuse-steps", type=int, default=5, help="steps a reasoning is reused for (mode reuse)")
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Api-Key KEY' (or Bearer) on every route")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: the checkpoint's)")
    parser.add_argument("--max-batch", type=int, default=8, help="most requests run in one batched forward")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a request waits for others to batch with")
    parser.add_argument("--max-body-mb", type=float, default=16.0, help="largest request body / websocket frame, MiB")
    parser.add_argument("--max-image-side", type=int, default=2048, help="largest image height or width, pixels")
    parser.set_defaults(func=_serve)


def _serve(args) -> int:
    import logging

    from ecot.errors import UsageError, check_device
    from ecot.serve.protocol import Limits
    from ecot.serve.server import serve

    # Usage errors (exit code 2) before anything is loaded or bound.
    for flag, value, least in (("--max-batch", args.max_batch, 1), ("--reuse-steps", args.reuse_steps, 1),
                               ("--max-wait-ms", args.max_wait_ms, 0)):
        if value < least:
            raise UsageError(f"{flag} must be >= {least}, got {value}")
    check_device(args.device)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    limits = Limits(max_body_bytes=int(args.max_body_mb * 2**20), max_image_side=args.max_image_side)
    serve(
        args.checkpoint, host=args.host, port=args.port, mode=args.mode, reuse_steps=args.reuse_steps,
        api_key=args.api_key, device=args.device, dtype=args.dtype, max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms, limits=limits,
    )  # fmt: skip
    return 0

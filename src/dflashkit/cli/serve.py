"""`dflashkit serve`: an OpenAI-compatible HTTP server with continuous batching (see docs/serving.md)."""

from __future__ import annotations

import sys

from .generate import add_model_args


def register(sub) -> None:
    p = sub.add_parser("serve", help="OpenAI-compatible server (chat/completions, SSE streaming, metrics)",
                       description="Serve a target + DFlash drafter over the OpenAI API with continuous batching.")
    add_model_args(p)
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only; "
                   "0.0.0.0 exposes it, pair that with --api-key)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1/* "
                   "(default: the DFLASHKIT_API_KEY environment variable, else no key)")
    p.add_argument("--max-batch", type=int, default=8, help="sequences decoded together (batch slots)")
    p.add_argument("--max-queue", type=int, default=256, help="requests waiting for a slot before 429")
    p.add_argument("--no-speculative", action="store_true", help="plain autoregressive decoding (no drafter)")
    p.add_argument("--served-model-name", default=None, help="model name clients use (default: --model, or "
                   "'smollm2' for the embedded default)")
    p.add_argument("--max-body-bytes", type=int, default=4 << 20, help="largest request body accepted (413 above)")
    p.add_argument("--engine-thread", action="store_true", help="run the engine on a thread of the server process "
                   "(default: a process of its own, so HTTP work never waits on the engine for Python's GIL)")
    p.add_argument("--warmup", default="auto", choices=["auto", "on", "off"], help="before serving, step once "
                   "through every block size and cache length, so the first requests do not capture CUDA graphs "
                   "(or compile) mid-answer (auto: on a GPU only)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=run)


def run(args) -> int:
    import functools
    import os

    import uvicorn

    from ..models.loading import DEFAULT_TARGET
    from ..serving.app import ServerConfig, create_app
    from ..serving.engine_core import describe
    from ..serving.engine_process import EngineProcess
    from ..serving.graceful import GracefulServer
    from .checks import at_least

    for name in ("port", "max_batch", "max_queue", "max_body_bytes"):
        at_least(getattr(args, name), 0 if name == "max_queue" else 1, "--" + name.replace("_", "-"))
    load_args = dict(model=args.model, draft=args.draft, device=args.device, dtype=args.dtype,
                     block_size=args.block_size, max_batch=args.max_batch, max_length=args.max_length,
                     speculative=not args.no_speculative, fast_target=False if args.generic_target else None,
                     compile=args.compile, draft_vocab=args.draft_vocab)
    build = functools.partial(served_engine, load_args, args.warmup)
    if args.engine_thread:
        engine = build()
        info = describe(engine)
    else:
        engine = EngineProcess(build)
        info = engine.launch()  # loads the model in the engine process; its errors surface here
    source = info.get("draft_source") or ""
    if source.startswith("random"):
        print(f"note: the drafter is {source}", file=sys.stderr)
    model_id = args.model or DEFAULT_TARGET
    config = ServerConfig(served_model_name=args.served_model_name or model_id, model_aliases=(model_id,),
                          api_key=args.api_key or os.environ.get("DFLASHKIT_API_KEY") or None,
                          max_queue=args.max_queue, max_body_bytes=args.max_body_bytes)
    print(f"dflashkit serve: '{config.served_model_name}' on http://{args.host}:{args.port}/v1 "
          f"(max batch {info['max_batch']}, context {info['max_length']}, "
          f"{'DFlash speculative' if info['speculative'] else 'autoregressive'}"
          f"{', API key required' if config.api_key else ''}, engine "
          f"{'thread' if args.engine_thread else 'process'})", file=sys.stderr)
    app = create_app(engine, config)
    GracefulServer(uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level),
                   app.state.engine).run()
    return 0


def served_engine(load_args: dict, warmup: str = "auto"):
    """Load the Generator and warm it up; runs where the engine lives (its own process by default)."""
    from ..api import load
    from ..engine.warmup import warm_up

    gen = load(**load_args)
    if warmup == "on" or (warmup == "auto" and gen.device.type == "cuda"):
        print("dflashkit serve: warming up the engine (every block size at every cache length"
              f"{'; --compile compiles each, which can take minutes' if load_args.get('compile') else ''}; "
              "--warmup off skips this)", file=sys.stderr)
        report = warm_up(gen)
        print(f"dflashkit serve: warm-up stepped block sizes {report['block_sizes']} at every cache length "
              f"({report['runs']} short answers, {report['seconds']} s)", file=sys.stderr)
    return gen

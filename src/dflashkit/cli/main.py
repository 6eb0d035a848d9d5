"""`dflashkit` entry point: collects the subcommands, each defined in its own module."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# each module defines `register(subparsers)` that adds its parser and sets `func=run`
COMMANDS = ("generate", "serve", "bench", "compare", "datagen", "train", "eval")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dflashkit", description="DFlash speculative decoding toolkit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"dflashkit.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"dflashkit.cli.{name}":
                continue  # command not part of this build
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..errors import DFlashError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DFlashError as exc:
        print(f"dflashkit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader left (`dflashkit generate ... | head`): stop quietly, with the status of a tool that SIGPIPE
        # ended; stdout goes to /dev/null, or Python's flush at exit fails on the closed pipe once more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())

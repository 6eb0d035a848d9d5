"""`dflashkit compare A.json B.json`: two bench reports side by side."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("compare", help="print two `dflashkit bench` reports side by side",
                       description="Compare two bench JSON reports: setup, tok/s, acceptance length, speedup.")
    p.add_argument("a", help="first report (JSON written by `dflashkit bench`)")
    p.add_argument("b", help="second report")
    p.add_argument("--names", default=None, help="column labels, e.g. before,after (default: A,B)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..bench.compare import render_comparison
    from ..bench.errors import BenchError
    from ..bench.report import load_report

    names = args.names.split(",") if args.names else ["A", "B"]
    if len(names) != 2 or not all(n.strip() for n in names):
        raise BenchError(f"--names takes two labels separated by a comma (got '{args.names}')")
    a, b = load_report(args.a), load_report(args.b)
    print(f"{names[0].strip()} = {Path(args.a)}\n{names[1].strip()} = {Path(args.b)}")
    print(render_comparison(a, b, names[0].strip(), names[1].strip()))
    return 0

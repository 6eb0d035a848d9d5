"""Plot acceptance length vs blocks trained from `dflashkit train` logs (log.jsonl): the train-time proxies
(anchor-averaged `tau`, harmonic `tau_h` where logged) and the engine's held-out tau checks.

    python scripts/plot_training_curve.py OUT.png LABEL=log.jsonl [LABEL=log.jsonl ...]
"""

from __future__ import annotations

import json
import sys


def curve(path: str):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    blocks, t_prev, xs, tau, tau_h, evals = 0.0, 0.0, [], [], [], []
    for r in rows:
        if "blocks_per_s" in r:
            blocks += r["blocks_per_s"] * (r["elapsed_s"] - t_prev)
            t_prev = r["elapsed_s"]
            xs.append(blocks / 1e6)
            tau.append(r["tau"])
            tau_h.append(r.get("tau_h"))
        ev = r.get("eval")
        if isinstance(ev, dict) and "tau" in ev:
            evals.append((blocks / 1e6, ev["tau"]))
    return xs, tau, tau_h, evals


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out, runs = sys.argv[1], [a.split("=", 1) for a in sys.argv[2:]]
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for i, (label, path) in enumerate(runs):
        xs, tau, tau_h, evals = curve(path)
        color = f"C{i}"
        ax.plot(xs, tau, color=color, lw=1, label=f"{label}: proxy tau (anchor mean)")
        if any(t is not None for t in tau_h):
            ax.plot(xs, tau_h, color=color, lw=1, ls="--", label=f"{label}: proxy tau_h (harmonic)")
        if evals:
            ax.scatter(*zip(*evals, strict=True), color=color, edgecolor="black", zorder=3, s=40,
                       label=f"{label}: engine tau, held-out ShareGPT")
    ax.set_xlabel("blocks trained (millions; 15 labelled tokens each)")
    ax.set_ylabel("acceptance length tau (block 16)")
    ax.set_title("SmolLM2-135M-Instruct drafters (block 16), one GPU")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)


if __name__ == "__main__":
    main()

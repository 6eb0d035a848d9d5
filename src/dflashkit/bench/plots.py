"""PNG figures of a report: acceptance-length histogram; tok/s and speedup against concurrency."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def write_plots(report: dict, out_dir: str | Path, stem: str) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    if any(s["acceptance_histogram"] for s in report["summaries"]):
        paths.append(acceptance_histogram(report, out / f"{stem}-acceptance.png"))
    concurrencies = sorted({s["concurrency"] for s in report["summaries"]})
    if len(concurrencies) > 1:
        paths.append(throughput_plot(report, out / f"{stem}-throughput.png"))
        if any(v.get("speedup") for v in report["by_concurrency"].values()):
            paths.append(speedup_plot(report, out / f"{stem}-speedup.png"))
    return paths


def acceptance_histogram(report: dict, path: Path) -> Path:
    plt = _pyplot()
    series = [s for s in report["summaries"] if s["acceptance_histogram"]]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    width = 0.8 / len(series)
    for i, s in enumerate(series):
        hist = {int(k): v for k, v in s["acceptance_histogram"].items()}
        steps = sum(hist.values())
        xs = sorted(hist)
        ax.bar([x - 0.4 + width * (i + 0.5) for x in xs], [hist[x] / steps for x in xs], width=width,
               label=f"{s['mode']} c={s['concurrency']} (tau {s['acceptance_length']:.2f})")
    lengths = sorted({int(k) for s in series for k in s["acceptance_histogram"]})
    ax.set_xticks(range(lengths[0], lengths[-1] + 1))
    ax.set_xlabel("tokens committed per verify step (acceptance length)")
    ax.set_ylabel("share of steps")
    ax.set_title(f"{report['dataset']}: acceptance lengths")
    ax.legend()
    return _save(fig, path, plt)


def throughput_plot(report: dict, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for mode in dict.fromkeys(s["mode"] for s in report["summaries"]):
        points = sorted((s["concurrency"], s["tokens_per_s"]) for s in report["summaries"] if s["mode"] == mode)
        ax.plot(*zip(*points, strict=True), marker="o", label=mode)
    _concurrency_axis(ax, [s["concurrency"] for s in report["summaries"]])
    ax.set_xlabel("concurrency")
    ax.set_ylabel("output tokens / s")
    ax.set_title(f"{report['dataset']}: throughput")
    ax.legend()
    return _save(fig, path, plt)


def speedup_plot(report: dict, path: Path) -> Path:
    plt = _pyplot()
    points = sorted((int(c), v["speedup"]) for c, v in report["by_concurrency"].items() if v.get("speedup"))
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.plot(*zip(*points, strict=True), marker="o", color="C2")
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    _concurrency_axis(ax, [c for c, _ in points])
    ax.set_xlabel("concurrency")
    ax.set_ylabel("DFlash speedup over AR (tok/s)")
    ax.set_title(f"{report['dataset']}: speedup")
    return _save(fig, path, plt)


def _concurrency_axis(ax, concurrencies: list[int]) -> None:
    """Log-2 axis ticked at exactly the concurrencies run, labelled as plain integers."""
    ticks = sorted(set(concurrencies))
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks])
    ax.minorticks_off()


def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

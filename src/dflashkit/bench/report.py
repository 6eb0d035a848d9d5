"""The JSON record of a run: environment, settings, per-request numbers and the headline figures.

Top-level `speedup`, `tokens_per_s` and `acceptance_length` are taken at the lowest concurrency run,
from the DFlash mode when there is one (else the backend's only mode); `by_concurrency` holds the rest.
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
from pathlib import Path

from .errors import BenchError
from .metrics import compare_modes, summarize
from .records import RunResult

SCHEMA = "dflashkit.bench/1"


def build_report(*, backend: str, dataset: str, source: str, settings: dict, info: dict,
                 runs: list[RunResult]) -> dict:
    summaries = [summarize(r) for r in runs]
    by_conc = compare_modes(runs, summaries)
    head = _headline(summaries, by_conc)
    return {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "backend": backend, "dataset": dataset, "dataset_source": source,
        "models": {"target": info.get("model"), "draft": info.get("draft")},
        "settings": settings, "backend_info": info, "environment": environment(info.get("device_name")),
        **head,
        "by_concurrency": by_conc,
        "summaries": summaries,
        "runs": [{"mode": r.mode, "concurrency": r.concurrency, "wall_s": r.wall_s,
                  "requests": [rec.to_json() for rec in r.records]} for r in runs],
    }


def _headline(summaries: list[dict], by_conc: dict) -> dict:
    lowest = min(s["concurrency"] for s in summaries)
    at_lowest = [s for s in summaries if s["concurrency"] == lowest]
    main = next((s for s in at_lowest if s["mode"] == "dflash"), at_lowest[-1])
    return {"concurrency": lowest, "mode": main["mode"],
            "speedup": (by_conc.get(str(lowest)) or {}).get("speedup"),
            "tokens_per_s": main["tokens_per_s"], "acceptance_length": main["acceptance_length"]}


def environment(device_name: str | None) -> dict:
    env = {"python": platform.python_version(), "platform": platform.platform(), "device_name": device_name,
           "git_commit": git_commit()}
    for package in ("dflashkit", "torch", "transformers"):
        env[package] = _version(package)
    return env


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """The commit of the dflashkit checkout in use (editable installs); None for wheels."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def report_stem(backend: str, dataset: str, out_dir: str | Path) -> str:
    """<backend>-<dataset>-<timestamp>, with a -2, -3 ... suffix if a run in the same second took the name."""
    name = Path(dataset).stem if dataset.endswith((".jsonl", ".json")) else dataset
    stem = f"{backend}-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    taken, n = stem, 1
    while (Path(out_dir) / f"{taken}.json").exists():
        n += 1
        taken = f"{stem}-{n}"
    return taken


def write_report(report: dict, out_dir: str | Path, stem: str) -> Path:
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{stem}.json"
        path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    except OSError as exc:
        raise BenchError(f"cannot write the report to {out}: {exc}") from exc
    return path


def load_report(path: str | Path) -> dict:
    path = Path(path)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchError(f"report not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise BenchError(f"{path} is not a readable JSON report ({exc})") from exc
    if not isinstance(report, dict) or report.get("schema") != SCHEMA:
        raise BenchError(f"{path} is not a `dflashkit bench` report (no schema '{SCHEMA}')")
    return report

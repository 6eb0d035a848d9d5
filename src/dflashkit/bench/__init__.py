"""Benchmarks users can trust: named datasets (with offline fallbacks), backends, reports and plots.

`dflashkit bench` and `dflashkit compare` are thin layers over `runner.run_suite`, `report` and `compare`.
"""

from .datasets import DATASETS, Sample, load_samples
from .errors import BenchError
from .records import RequestRecord, RunResult

__all__ = ["DATASETS", "Sample", "load_samples", "BenchError", "RequestRecord", "RunResult"]

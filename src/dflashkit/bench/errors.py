"""Bench errors share the package's DFlashError family, so the CLI prints them instead of a traceback."""

from ..errors import DFlashError


class BenchError(DFlashError):
    """Bad bench input (dataset, URL, concurrency, report file): the message names the value and the fix."""

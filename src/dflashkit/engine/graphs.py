"""CUDA-graph capture and replay of step bodies, one graph per (batch bucket, cache bucket, block, mode).

A step body reads and writes only persistent engine buffers, so a graph recorded once replays the
whole draft -> verify -> accept step as a single launch. The first call of a key runs eagerly (which
also warms up cuBLAS and the allocator), the second records, later calls replay.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class GraphCache:
    def __init__(self, enabled: bool):
        self.enabled = enabled and torch.cuda.is_available()
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, object]] = {}
        self.seen: set[tuple] = set()
        self.pool = None
        self.replayed = True  # did the last run() replay a recorded graph (a typical, timeable step)?

    def run(self, key: tuple, body: Callable[[], object]) -> object:
        self.replayed = not self.enabled or key in self.graphs
        if not self.enabled:
            return body()
        if key in self.graphs:
            graph, outputs = self.graphs[key]
            graph.replay()
            return outputs
        if key not in self.seen:  # first use: eager, for real (also the warm-up)
            self.seen.add(key)
            return body()
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize()
        with torch.cuda.graph(graph, pool=self.pool):
            outputs = body()
        self.graphs[key] = (graph, outputs)
        graph.replay()  # capture records only: run it for real now
        return outputs

    def clear(self) -> None:
        self.graphs.clear()
        self.seen.clear()

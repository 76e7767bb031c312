"""CUDA-graph replay of a model's repeated forwards: what a batch-1 sampler step needs on a fast GPU.

At batch 1 an 8B forward issues ~1,500 kernels whose launches cost more host time than the GPU spends on them
(measured on an H200: a dual-cache step 37 ms eager, 8 ms replayed). The samplers call the model with the same
tensors step after step (the canvas is updated in place; a cached block feeds the same slice into the same cache),
so a forward seen twice with the same inputs is captured once and replayed after that.

A forward is keyed by the storage, shape and strides of its inputs and of the KV cache it writes, and by
``cache_start``: a graph reads and writes those addresses, so it is replayed only for the very same tensors (the
wrapper keeps them alive, so their addresses cannot be handed to other tensors). Whatever a graph cannot capture
runs eagerly: CPU tensors, padding masks (the model checks them on the host), explicit positions and the
indexed/recording caches of dKV-Cache, d2Cache and dLLM-Cache.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch


def _signature(t: torch.Tensor) -> tuple:
    return t.data_ptr(), tuple(t.shape), t.stride(), t.dtype


@dataclass
class _Entry:
    graph: torch.cuda.CUDAGraph | None  # None: seen once, run eagerly
    out: torch.Tensor | None
    keep: tuple  # the inputs and cache tensors the graph reads and writes, held so their memory stays theirs
    refused: str | None = None  # why capture failed (a host sync inside the forward): run eagerly for good


class GraphedModel:
    """Wraps a :class:`illada.model.Transformer`: a forward seen a second time with the same tensors is captured
    into a CUDA graph and replayed from then on; everything else (``config``, ``new_kv_cache``, ...) is the
    model's. Returns a fresh logits tensor, as an eager forward does. At most ``max_graphs`` are kept (least
    recently used go first)."""

    def __init__(self, model, max_graphs: int = 32) -> None:
        self.model = model
        self.max_graphs = max_graphs
        self._entries: OrderedDict[tuple, _Entry] = OrderedDict()
        self._pool = None
        self.captures = self.replays = self.eager = 0
        self.refused: str | None = None  # the last capture's failure, if any

    def __getattr__(self, name: str):
        return getattr(self.model, name)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 position_ids: torch.Tensor | None = None, kv_cache=None, cache_start: int = 0) -> torch.Tensor:
        key = self._key(input_ids, attention_mask, position_ids, kv_cache, cache_start)
        if key is None:
            self.eager += 1
            return self.model(input_ids, attention_mask, position_ids, kv_cache, cache_start)
        entry = self._entries.get(key)
        if entry is None:  # first sighting: run eagerly (a block-start forward is seen once per block)
            self._remember(key, _Entry(None, None, ()))
            self.eager += 1
            return self.model(input_ids, kv_cache=kv_cache, cache_start=cache_start)
        self._entries.move_to_end(key)
        if entry.refused is not None:
            self.eager += 1
            return self.model(input_ids, kv_cache=kv_cache, cache_start=cache_start)
        if entry.graph is None:
            try:
                entry.graph, entry.out = self._capture(input_ids, kv_cache, cache_start)
            except RuntimeError as e:  # e.g. the mixture of experts reads its routing counts on the host
                entry.refused = str(e).splitlines()[0] if str(e) else type(e).__name__
                self.refused = entry.refused
                self.eager += 1
                return self.model(input_ids, kv_cache=kv_cache, cache_start=cache_start)
            entry.keep = (input_ids, *(() if kv_cache is None else (*kv_cache.k, *kv_cache.v)))
            self.captures += 1
        else:
            self.replays += 1
        entry.graph.replay()
        return entry.out.clone()

    def _key(self, input_ids, attention_mask, position_ids, kv_cache, cache_start) -> tuple | None:
        """The forward's identity, or None when it must run eagerly (a graph replays the attention backend it
        was captured with, so the backend is part of the key; autograd is never captured)."""
        if (input_ids.device.type != "cuda" or attention_mask is not None or position_ids is not None
                or torch.is_grad_enabled()):
            return None
        backend = getattr(self.model, "attn_backend", None)
        if kv_cache is None:
            return (_signature(input_ids), None, cache_start, backend)
        if (getattr(kv_cache, "index", None) is not None or getattr(kv_cache, "attn_fn", None) is not None
                or getattr(kv_cache, "block_forward", None) is not None):
            return None
        return (_signature(input_ids), tuple(t.data_ptr() for t in (*kv_cache.k, *kv_cache.v)), cache_start, backend)

    def _remember(self, key: tuple, entry: _Entry) -> None:
        self._entries[key] = entry
        while len(self._entries) > self.max_graphs:
            self._entries.popitem(last=False)

    def _capture(self, input_ids, kv_cache, cache_start) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        run = lambda: self.model(input_ids, kv_cache=kv_cache, cache_start=cache_start)  # noqa: E731
        # warm on a side stream first (cuBLAS workspaces, lazy inits), as capture requires; the forward is
        # idempotent: it rewrites the same cache slots with the same keys/values
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            run()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        # one memory pool for all graphs: they replay one at a time and each output is copied out at once
        with torch.cuda.graph(graph, pool=self._pool):
            out = run()
        self._pool = graph.pool()
        return graph, out

    def clear(self) -> None:
        """Drop every graph (and the tensors they held)."""
        self._entries.clear()
        self._pool = None

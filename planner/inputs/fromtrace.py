"""Workloads from request traces (MODEL.md §3.3): reused prefixes become contexts, the rest background traffic.

Nesting rule: every context is a whole prefix, from the request's first token, so loading one never needs
another cache and the planner may place each context on its own. A request reads the longest prefix of its
input that an earlier request (in arrival order) already sent: that prefix is the context the request reuses,
and the rest of its input is its prompt. A prefix that is only ever read as part of longer ones is no context
of its own, since no request would load it alone. Nested contexts each store their shared parent's blocks again:
the storage planned is an upper bound on a store that keeps each block once.

The trace stands for a month: counts are scaled by the number of trace spans in a month (`hours_per_month ·
3600 / span`, the span from the first arrival to the last), as if the same traffic, with contexts like these,
went on all month. The request that first sends a prefix computes it anyway, so a context is written
`writes_per_month` times (default 1) and its reuses are the later requests that read it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .catalog import ModelCard
from .errors import InputError
from .workload import Traffic

BLOCK_TOKENS = 512  # Mooncake hashes the input in blocks of 512 tokens
WINDOW_S = 60.0     # peak-to-mean: the busiest window of this many seconds against the mean


@dataclass(frozen=True)
class TraceWorkload:
    """A workload built from a trace, with the figures its summary reports."""
    contexts: pd.DataFrame        # the contexts CSV's columns, in the order the trace first sent them
    traffic: Traffic | None       # requests that read no context
    peak_to_mean: float
    requests: int                 # requests read from the trace
    dropped: int                  # requests longer than the model's max_context
    span_s: float
    spans_per_month: float
    reads: int                    # requests that read a context
    reusable_share: float | None  # prefill tokens that contexts cover, over all input tokens (None: no signal)
    window_s: float


def spans_per_month(seconds: np.ndarray, hours_per_month: float, where: str) -> tuple[float, float]:
    """The trace's span (first to last arrival) and how many such spans make a month."""
    span = float(seconds.max() - seconds.min())
    if span <= 0:
        requests = f"{len(seconds)} request{'s' if len(seconds) != 1 else ''}"
        raise InputError(where, f"the trace spans 0 s ({requests} at one time): no rate to scale to a month")
    return span, hours_per_month * 3600 / span


def peak_to_mean(seconds: np.ndarray, window_s: float) -> float:
    """Requests in the busiest window over the mean per window (windows tile the span from the first arrival)."""
    offsets = seconds - seconds.min()
    windows = max(1, int(np.ceil(offsets.max() / window_s)))
    counts = np.bincount(np.minimum((offsets // window_s).astype(np.int64), windows - 1), minlength=windows)
    return float(counts.max() * windows / len(seconds))


def within_context(lengths: np.ndarray, model: ModelCard) -> np.ndarray:
    """Which requests the model can serve at all (input and output within max_context, MODEL.md §3.1)."""
    return np.ones(len(lengths), bool) if model.max_context is None else lengths <= model.max_context


def _prefix_nodes(hash_lists: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Number every distinct prefix. Returns, per block of every request (flattened in request order): the
    request, its depth (0 for the first block) and the id of the prefix that ends with this block."""
    lengths = hash_lists.map(len).to_numpy(np.int64)
    request = np.repeat(np.arange(len(lengths)), lengths)
    depth = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    codes, uniques = pd.factorize(pd.Series(list(itertools.chain.from_iterable(hash_lists)), dtype=object))
    node = np.empty(len(depth), np.int64)
    parent = np.full(len(lengths), -1, np.int64)  # per request, the prefix before the block being numbered
    by_depth = np.argsort(depth, kind="stable")
    bounds = np.searchsorted(depth[by_depth], np.arange(lengths.max(initial=0) + 1))
    next_id = 0
    for d in range(len(bounds) - 1):  # one pass per depth: a prefix is its parent prefix plus one block
        rows = by_depth[bounds[d]:bounds[d + 1]]
        ids, _ = pd.factorize((parent[request[rows]] + 1) * len(uniques) + codes[rows])
        node[rows] = ids + next_id
        next_id += int(ids.max()) + 1
        parent[request[rows]] = node[rows]
    return request, depth, node


def prefix_reads(hash_lists: pd.Series, inputs: np.ndarray) -> pd.DataFrame:
    """For every request (in arrival order) that starts with a prefix an earlier request sent, the longest such
    prefix: request, prefix (an id), blocks, tokens, and first (the request that sent it first)."""
    request, depth, node = _prefix_nodes(hash_lists)
    first = np.full(int(node.max(initial=-1)) + 1, len(inputs), np.int64)
    np.minimum.at(first, node, request)
    shortest_input = np.full(len(first), np.iinfo(np.int64).max)  # a last block may be partial
    np.minimum.at(shortest_input, node, inputs[request])
    # Sent before up to some depth and not beyond (a prefix's parents were sent when it was): count the blocks.
    blocks = np.bincount(request, weights=first[node] < request, minlength=len(inputs)).astype(np.int64)
    readers = np.flatnonzero(blocks > 0)
    starts = np.cumsum(hash_lists.map(len).to_numpy()) - hash_lists.map(len).to_numpy()
    prefix = node[starts[readers] + blocks[readers] - 1]
    return pd.DataFrame({"request": readers, "prefix": prefix, "blocks": blocks[readers],
                         "tokens": np.minimum(blocks[readers] * BLOCK_TOKENS, shortest_input[prefix]),
                         "first": first[prefix]})


def mooncake_workload(trace: pd.DataFrame, model: ModelCard, *, hours_per_month: float = 730.0,
                      min_reuses: int = 1, writes_per_month: float = 1.0, window_s: float = WINDOW_S,
                      where: str = "trace") -> TraceWorkload:
    """Contexts and background traffic of a Mooncake trace (read_mooncake's frame), by the rule above.
    A prefix read by fewer than `min_reuses` later requests is no context: its readers become background."""
    fits = within_context((trace["input_length"] + trace["output_length"]).to_numpy(), model)
    kept = trace[fits].sort_values(["timestamp_ms", "line"], kind="stable").reset_index(drop=True)
    if kept.empty:
        raise InputError(where, f"every request exceeds {model.name}'s max_context of {model.max_context}")
    seconds = kept["timestamp_ms"].to_numpy(float) / 1000
    span, scale = spans_per_month(seconds, hours_per_month, where)
    inputs = kept["input_length"].to_numpy(np.int64)
    reads = prefix_reads(kept["hash_ids"], inputs)
    reads = reads.assign(prompt=inputs[reads["request"]] - reads["tokens"],
                         output=kept["output_length"].to_numpy()[reads["request"]])
    reuses = reads.groupby("prefix")["request"].transform("size")
    reads = reads[reuses >= min_reuses]
    grouped = reads.groupby(["first", "blocks", "tokens"]).agg(reuses=("request", "size"), prompt=("prompt", "mean"),
                                                               output=("output", "mean")).reset_index()
    tokens = grouped["tokens"].to_numpy(np.int64)
    prompts = np.round(grouped["prompt"].to_numpy()).astype(np.int64)
    contexts = pd.DataFrame({
        "id": [f"line{line}-{b}blk" for line, b in zip(kept["line"].to_numpy()[grouped["first"]], grouped["blocks"],
                                                       strict=True)],
        "tokens": tokens,
        "reuses_per_month": np.round(grouped["reuses"].to_numpy() * scale, 3),
        "prompt_tokens": prompts,
        "output_tokens": _fit_output(tokens + prompts, grouped["output"], model),
        "writes_per_month": float(writes_per_month),
    })
    background = np.ones(len(kept), bool)
    background[reads["request"]] = False
    return TraceWorkload(
        contexts=contexts, traffic=_background(kept.loc[background, "input_length"],
                                               kept.loc[background, "output_length"], scale, model),
        peak_to_mean=peak_to_mean(seconds, window_s), requests=len(trace), dropped=int((~fits).sum()),
        span_s=span, spans_per_month=scale, reads=len(reads),
        reusable_share=int(reads["tokens"].sum()) / int(inputs.sum()) if inputs.sum() else 0.0, window_s=window_s)


def azure_workload(trace: pd.DataFrame, model: ModelCard, *, hours_per_month: float = 730.0,
                   window_s: float = WINDOW_S, where: str = "trace") -> TraceWorkload:
    """Background traffic of an Azure LLM trace (read_azure's frame): it says nothing about reuse."""
    fits = within_context((trace["context_tokens"] + trace["generated_tokens"]).to_numpy(), model)
    kept = trace[fits]
    if kept.empty:
        raise InputError(where, f"every request exceeds {model.name}'s max_context of {model.max_context}")
    seconds = (kept["time"] - kept["time"].min()).dt.total_seconds().to_numpy()
    span, scale = spans_per_month(seconds, hours_per_month, where)
    return TraceWorkload(
        contexts=pd.DataFrame(columns=["id", "tokens", "reuses_per_month", "prompt_tokens", "output_tokens",
                                       "writes_per_month"]),
        traffic=_background(kept["context_tokens"], kept["generated_tokens"], scale, model),
        peak_to_mean=peak_to_mean(seconds, window_s), requests=len(trace), dropped=int((~fits).sum()),
        span_s=span, spans_per_month=scale, reads=0, reusable_share=None, window_s=window_s)


def _fit_output(inputs: np.ndarray, outputs: pd.Series, model: ModelCard) -> np.ndarray:
    """Mean output tokens, rounded; a token less where rounding two means up passes max_context."""
    rounded = np.round(outputs.to_numpy(float))
    if model.max_context is not None:
        rounded = np.minimum(rounded, model.max_context - inputs)
    return rounded.astype(np.int64)


def _background(prompts: pd.Series, outputs: pd.Series, scale: float, model: ModelCard) -> Traffic | None:
    """Requests that reuse nothing, at the trace's rate and with its mean lengths."""
    if prompts.empty:
        return None
    prompt = round(prompts.mean())
    output = int(_fit_output(np.array([prompt]), pd.Series([outputs.mean()]), model)[0])
    return Traffic(requests_per_month=round(len(prompts) * scale, 3), prompt_tokens=int(prompt), output_tokens=output)

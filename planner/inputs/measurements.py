"""Reading the measurements `kvplan calibrate` fits (see planner/calibrate.py for the fit): the JSON files vLLM's
benchmarks write, and plain CSV. Every problem with a file becomes one line naming the file and key (or row);
all of them are collected, so a user sees every bad input at once.

Formats followed (read from vLLM's source; the fixtures in tests/data/calibrate/ follow them key by key):

- Latency runs, `vllm bench latency --output-json F` (vllm/benchmarks/latency.py, read at vLLM main commit
  00cae07, and the same keys since `vllm bench` appeared in 0.9) and the older script
  `benchmarks/benchmark_latency.py` (read at commit 00db020; vLLM 0.4 to 0.8): `latencies` (seconds, one per
  iteration; an iteration is one batch of `batch_size` prompts of `input_len` tokens, each generating `output_len`),
  `avg_latency`, `percentiles` ({"10": s, ...}) and, in the newer one, `std_latency`. The file does not record its
  lengths. They come from the PyTorch-format record vLLM writes beside it as F.pytorch.json when the environment
  sets SAVE_TO_PYTORCH_BENCHMARK_FORMAT (a list of records; `benchmark.extra_info.args` holds the run's arguments:
  input_len, output_len, batch_size, n, tensor_parallel_size, model; `metric.benchmark_values` the latencies),
  which may also be given itself; or they are given after the path: `F@input_len=8000,output_len=1,batch_size=1`.
- Serving runs, `vllm bench serve --save-result` (vllm/benchmarks/serve.py, read at main commit 009e6d4) and the
  older `benchmarks/benchmark_serving.py`: `completed`, `total_input_tokens`, `total_output_tokens`, `mean_ttft_ms`,
  `mean_tpot_ms`, `max_concurrency`, `request_rate` ("inf" or requests/s), `model_id`; the per-request lists
  `input_lens`, `ttfts` (seconds) and `errors` ("" where the request succeeded) are kept with `--save-detailed`
  (the older script always kept them). `--append-result` writes one run per line: each line is read as a run.
- CSV: columns `input_tokens,prefill_seconds` and/or `batch,step_seconds` with `kv_tokens` (a column, or
  --kv-tokens); one measurement per row; a row may leave one pair empty.

What each contributes:
- a latency run with output_len 1: each iteration is one prefill of the batch, so prefill seconds at input_len =
  latency / batch_size (exact at batch_size 1; above it, one prompt's share where prefill is compute-bound);
- a latency run with output_len O > 1: that prefill, then O - 1 decode steps of the batch; the fit turns it into
  step seconds at batch_size over input_len + O/2 KV tokens (their mean), see calibrate.decode_samples;
- a serving run: each successful request's TTFT is a prefill at its input length; without the lists, the mean TTFT
  is one at the mean input length (total_input_tokens / completed: exact where every prompt has one length, as the
  random dataset gives by default). At max_concurrency 1 the mean TPOT is a step at batch 1 over mean input + mean
  output / 2 KV tokens. A run whose requests may queue behind each other (max_concurrency above 1, or unbounded
  with request_rate inf) is refused: its TTFT is not a prefill time.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .catalog import ModelCard
from .errors import InputError, warn
from .fields import as_number, read_text

LENGTH_KEYS = ("input_len", "output_len", "batch_size")
_SPEC = re.compile(r"^(?P<path>.+)@(?P<args>[a-z_]+=[^,=]*(,[a-z_]+=[^,=]*)*)$")
_SIDECAR = ".pytorch.json"


@dataclass(frozen=True)
class PrefillSample:
    tokens: int
    seconds: float
    source: str


@dataclass(frozen=True)
class StepSample:
    batch: int
    kv_tokens: float   # KV tokens per sequence the step reads
    seconds: float
    source: str


@dataclass(frozen=True)
class LatencyRun:
    """One `vllm bench latency` result: every iteration's seconds for one batch."""
    source: str
    input_len: int
    output_len: int
    batch_size: int
    latencies: tuple[float, ...]


@dataclass
class Readings:
    prefill: list[PrefillSample] = field(default_factory=list)
    steps: list[StepSample] = field(default_factory=list)
    runs: list[LatencyRun] = field(default_factory=list)
    described: list[tuple[str, str]] = field(default_factory=list)   # (file, what it gave)
    problems: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


class _Bad(Exception):
    """One problem with one file: its line is collected and the file skipped."""


def _fail(where: str, message: str) -> None:
    raise _Bad(f"{where}: {message}")


def _num(value: Any, where: str, *, whole: bool = False, positive: bool = True) -> float:
    try:
        number = as_number(value, where)
    except InputError as exc:
        raise _Bad(str(exc)) from None
    if whole and number != int(number):
        _fail(where, f"expected a whole number, found {value!r}")
    if positive and number <= 0:
        _fail(where, f"{value!r} is not above 0")
    return number


def _dig(data: Any, *keys: str) -> Any:
    """data[k1][k2]...: None where a level is missing or not a mapping."""
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def split_spec(arg: str) -> tuple[Path, dict[str, int] | None]:
    """`FILE` or `FILE@input_len=L,output_len=O,batch_size=B` (vLLM's argument names)."""
    match = _SPEC.match(arg)
    if match is None or Path(arg).exists():
        return Path(arg), None
    lengths: dict[str, int] = {}
    for item in match.group("args").split(","):
        key, value = item.split("=", 1)
        if key not in LENGTH_KEYS:
            _fail(arg, f"unknown length {key!r} after '@' (expected {', '.join(LENGTH_KEYS)})")
        lengths[key] = int(_num(value, f"{match.group('path')}@{key}", whole=True))
    return Path(match.group("path")), lengths


class _Reader:
    def __init__(self, card: ModelCard, tp: int, kv_tokens: int | None, out: Readings):
        self.card, self.tp, self.kv_tokens, self.out = card, tp, kv_tokens, out

    def within_window(self, tokens: float, where: str, what: str = "tokens") -> None:
        window = self.card.max_context
        if window is not None and tokens > window:
            _fail(where, f"{tokens:,.0f} {what} is beyond {self.card.name}'s window of {window:,}")

    def check_model(self, name: Any, where: str) -> None:
        """A differently named model is worth a warning, not a refusal (dummy weights, local paths)."""
        if isinstance(name, str) and self.card.name.lower() not in name.lower():
            warn(where, f"measured {name!r}, fitted as {self.card.name}")

    # --- vllm bench latency -------------------------------------------------------------------------------

    def latency(self, file: str, latencies: Any, key: str, args: dict[str, Any] | None,
                spec: dict[str, int] | None, args_where: str) -> None:
        if not isinstance(latencies, list) or not latencies:
            _fail(f"{file}: {key}", "expected a non-empty list of seconds")
        values = tuple(_num(x, f"{file}: {key}[{i}]") for i, x in enumerate(latencies))
        lengths: dict[str, int] = {}
        if args is not None:
            for name in LENGTH_KEYS:
                if name in args:
                    lengths[name] = int(_num(args[name], f"{args_where}: {name}", whole=True))
            if args.get("n", 1) != 1 or args.get("use_beam_search"):
                _fail(args_where, f"n = {args.get('n')}, use_beam_search = {args.get('use_beam_search')}: "
                      "calibrate reads runs with one sequence per prompt (n 1, no beam search)")
            tp = args.get("tensor_parallel_size")
            if tp is not None and tp != self.tp:
                _fail(f"{args_where}: tensor_parallel_size", f"the run used tp {tp}, calibrating tp {self.tp}")
            self.check_model(args.get("model"), args_where)
        for name, value in (spec or {}).items():
            if name in lengths and lengths[name] != value:
                _fail(f"{file}@{name}", f"{value} given, but {args_where} says {lengths[name]}")
            lengths[name] = value
        missing = [name for name in LENGTH_KEYS if name not in lengths]
        if missing:
            _fail(file, f"a vLLM latency result does not record its lengths ({', '.join(missing)} missing): give "
                  f"them as {file}@input_len=L,output_len=O,batch_size=B, or keep the {Path(file).stem}{_SIDECAR} "
                  "that vLLM writes beside it with SAVE_TO_PYTORCH_BENCHMARK_FORMAT=1")
        L, O, b = lengths["input_len"], lengths["output_len"], lengths["batch_size"]
        self.within_window(L + O, f"{file}: input_len + output_len")
        run = LatencyRun(file, L, O, b, values)
        self.out.runs.append(run)
        if O == 1:
            self.out.prefill.extend(PrefillSample(L, x / b, file) for x in values)
            share = "" if b == 1 else f" (latency / {b}: one prompt's share)"
            self.out.described.append((file, f"vllm bench latency: {len(values)} iterations of batch {b} x {L:,} "
                                             f"tokens, output 1 -> prefill at {L:,}{share}"))
        else:
            self.out.described.append((file, f"vllm bench latency: {len(values)} iterations of batch {b} x {L:,} "
                                             f"tokens, output {O} -> decode step at batch {b}"))

    def pytorch_records(self, file: str, data: list, spec: dict[str, int] | None) -> None:
        for i, record in enumerate(data):
            metric = _dig(record, "metric")
            if _dig(metric, "name") == "latency":
                args = _dig(record, "benchmark", "extra_info", "args")
                if not isinstance(args, dict):
                    _fail(f"{file}: [{i}].benchmark.extra_info.args", "missing: the run's arguments")
                self.latency(file, metric.get("benchmark_values"), f"[{i}].metric.benchmark_values", args, spec,
                             f"{file}: [{i}].benchmark.extra_info.args")
                return
        _fail(file, "PyTorch-format benchmark records without a 'latency' metric (not a vllm bench latency run)")

    # --- vllm bench serve ---------------------------------------------------------------------------------

    def serving(self, file: str, data: dict) -> None:
        for key in ("completed", "mean_ttft_ms"):
            if key not in data:
                _fail(file, f"a vLLM serving result without {key!r}")
        concurrency, rate = data.get("max_concurrency"), data.get("request_rate")
        unbounded = rate in ("inf", math.inf) or rate is None
        if concurrency is not None and _num(concurrency, f"{file}: max_concurrency") > 1:
            _fail(f"{file}: max_concurrency", f"{concurrency}: requests queue behind each other, so TTFT is not a "
                  "prefill time; measure with --max-concurrency 1")
        if concurrency is None and unbounded:
            _fail(f"{file}: request_rate", "inf with no max_concurrency: every request is sent at once and TTFT "
                  "includes queueing; measure with --max-concurrency 1")
        if concurrency is None:
            warn(f"{file}: max_concurrency", f"none (request_rate {rate}): TTFT may include queueing")
        completed = int(_num(data["completed"], f"{file}: completed", whole=True))
        if "input_lens" in data and "ttfts" in data:
            lens, ttfts = data["input_lens"], data["ttfts"]
            errors = (data.get("errors") or [""] * len(ttfts)) if isinstance(ttfts, list) else None
            if not (isinstance(lens, list) and isinstance(ttfts, list) and isinstance(errors, list)
                    and len(lens) == len(ttfts) == len(errors)):
                _fail(f"{file}: input_lens, ttfts, errors", "expected lists of one length (one entry per request)")
            ok = [i for i, error in enumerate(errors) if not error]
            if not ok:
                _fail(f"{file}: errors", "no request succeeded")
            samples = []
            for i in ok:
                L = int(_num(lens[i], f"{file}: input_lens[{i}]", whole=True))
                self.within_window(L, f"{file}: input_lens[{i}]")
                samples.append(PrefillSample(L, _num(ttfts[i], f"{file}: ttfts[{i}]"), file))
            self.out.prefill.extend(samples)
            mean_input = sum(s.tokens for s in samples) / len(samples)
            lengths = sorted({s.tokens for s in samples})
            shown = ", ".join(f"{x:,}" for x in lengths[:4]) + (", ..." if len(lengths) > 4 else "")
            what = f"{len(samples)} requests' TTFT -> prefill at {shown}"
        else:
            if "total_input_tokens" not in data:
                _fail(file, "a vLLM serving result without 'total_input_tokens' (nor per-request 'input_lens')")
            if completed < 1:
                _fail(f"{file}: completed", "no request succeeded")
            mean_input = _num(data["total_input_tokens"], f"{file}: total_input_tokens") / completed
            L = round(mean_input)
            self.within_window(L, f"{file}: total_input_tokens / completed")
            self.out.prefill.append(PrefillSample(L, _num(data["mean_ttft_ms"], f"{file}: mean_ttft_ms") / 1000,
                                                  file))
            what = f"mean TTFT of {completed} requests -> prefill at the mean input {L:,}"
        self.check_model(data.get("model_id"), f"{file}: model_id")
        tpot = data.get("mean_tpot_ms")
        outputs = data.get("total_output_tokens")
        if concurrency == 1 and tpot and outputs and completed and outputs / completed > 1:
            kv = mean_input + outputs / completed / 2
            self.within_window(kv, f"{file}: mean input + output / 2", "KV tokens")
            self.out.steps.append(StepSample(1, kv, _num(tpot, f"{file}: mean_tpot_ms") / 1000, file))
            what += f"; mean TPOT -> step at batch 1 over {kv:,.0f} KV tokens"
        self.out.described.append((file, f"vllm bench serve at concurrency {concurrency or 'unbounded'}: {what}"))

    # --- CSV ----------------------------------------------------------------------------------------------

    def table(self, file: str, text: str) -> None:
        reader = csv.DictReader(io.StringIO(text))
        columns = [c.strip() for c in reader.fieldnames or []]
        reader.fieldnames = columns
        prefill = {"input_tokens", "prefill_seconds"} <= set(columns)
        steps = {"batch", "step_seconds"} <= set(columns)
        if not (prefill or steps):
            _fail(file, "a CSV needs the columns input_tokens,prefill_seconds and/or batch,step_seconds (found: "
                  f"{','.join(columns) or 'none'})")
        counts = [0, 0]
        bad: list[str] = []
        for number, row in enumerate(reader, start=2):
            try:
                if prefill and any((row.get(k) or "").strip() for k in ("input_tokens", "prefill_seconds")):
                    tokens = _num(row["input_tokens"], f"{file}: row {number}, input_tokens", whole=True)
                    self.within_window(tokens, f"{file}: row {number}, input_tokens")
                    self.out.prefill.append(PrefillSample(
                        int(tokens), _num(row["prefill_seconds"], f"{file}: row {number}, prefill_seconds"), file))
                    counts[0] += 1
                if steps and any((row.get(k) or "").strip() for k in ("batch", "step_seconds")):
                    batch = _num(row["batch"], f"{file}: row {number}, batch", whole=True)
                    raw_kv = (row.get("kv_tokens") or "").strip()
                    if raw_kv:
                        kv = _num(raw_kv, f"{file}: row {number}, kv_tokens", whole=True)
                    elif self.kv_tokens is not None:
                        kv = self.kv_tokens
                    else:
                        _fail(f"{file}: row {number}", "a step time needs its KV length: a kv_tokens column or "
                              "--kv-tokens")
                    self.within_window(kv, f"{file}: row {number}, kv_tokens", "KV tokens")
                    self.out.steps.append(StepSample(
                        int(batch), kv, _num(row["step_seconds"], f"{file}: row {number}, step_seconds"), file))
                    counts[1] += 1
            except _Bad as exc:
                bad.append(str(exc))
        self.out.problems.extend(bad)
        if not any(counts) and not bad:
            _fail(file, "no rows")
        parts = [f"{counts[0]} prefill rows"] * bool(counts[0]) + [f"{counts[1]} step rows"] * bool(counts[1])
        self.out.described.append((file, "CSV: " + ", ".join(parts)))


def _documents(text: str, file: str) -> list[tuple[str, Any]]:
    """One JSON document, or several, one per line (what --append-result writes), each with its label."""
    try:
        return [(file, json.loads(text))]
    except json.JSONDecodeError as exc:
        lines = [(i, line) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]
        if exc.msg != "Extra data" or len(lines) < 2:
            _fail(file, f"line {exc.lineno}: JSON syntax error: {exc.msg}")
        documents = []
        for number, line in lines:
            try:
                documents.append((f"{file} (line {number})", json.loads(line)))
            except json.JSONDecodeError as inner:
                _fail(f"{file}: line {number}", f"JSON syntax error: {inner.msg}")
        return documents


def _read_file(arg: str, reader: _Reader, given: set[Path]) -> None:
    path, spec = split_spec(arg)
    file = str(path)
    try:
        text = read_text(path)
    except InputError as exc:
        raise _Bad(str(exc)) from None
    head = text.lstrip()[:1]
    if path.suffix.lower() == ".csv" or (path.suffix.lower() != ".json" and head not in ("{", "[")):
        if spec is not None:
            _fail(arg, "lengths after '@' belong to vLLM latency results, not to a CSV")
        reader.table(file, text)
        return
    if path.name.endswith(_SIDECAR) and path.with_name(path.name[:-len(_SIDECAR)] + ".json").resolve() in given:
        _fail(file, f"the same run as {path.name[:-len(_SIDECAR)]}.json, given too: give one of them")
    for label, data in _documents(text, file):
        if isinstance(data, dict) and "mean_ttft_ms" in data:   # serving results may carry `latencies` too
            if spec is not None:
                _fail(arg, "lengths after '@' belong to vLLM latency results; a serving result records its own")
            reader.serving(label, data)
        elif isinstance(data, dict) and "latencies" in data:
            sidecar = path.with_name(path.stem + _SIDECAR)
            args = None
            if sidecar.exists():
                try:
                    records = json.loads(read_text(sidecar))
                except json.JSONDecodeError as exc:
                    _fail(str(sidecar), f"line {exc.lineno}: JSON syntax error: {exc.msg}")
                except InputError as exc:
                    raise _Bad(str(exc)) from None
                found = [r for r in records if _dig(r, "metric", "name") == "latency"] \
                    if isinstance(records, list) else []
                args = _dig(found[0], "benchmark", "extra_info", "args") if found else None
            reader.latency(label, data["latencies"], "latencies", args if isinstance(args, dict) else None, spec,
                           str(sidecar))
        elif isinstance(data, list) and data and all(isinstance(r, dict) and "metric" in r for r in data):
            reader.pytorch_records(label, data, spec)
        else:
            _fail(label, "neither a vLLM latency result (no 'latencies' key) nor a vLLM serving result (no "
                  "'mean_ttft_ms' key)")


def read_measurements(args: list[str], card: ModelCard, tp: int, kv_tokens: int | None = None) -> Readings:
    """Every measurement in the files named by `args` (see the module docstring), with one line per problem."""
    out = Readings()
    reader = _Reader(card, tp, kv_tokens, out)
    given = set()
    for arg in args:
        try:
            given.add(split_spec(arg)[0].resolve())
        except _Bad:
            pass
    for arg in args:
        out.files.append(arg)
        try:
            _read_file(arg, reader, given)
        except _Bad as exc:
            out.problems.append(str(exc))
    return out

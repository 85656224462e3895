"""`kvplan calibrate`: a user's measurements turned into a measured profile (MODEL.md §3.2) and measured load
paths (§4), written as a catalog that `extends` the one given.

The measurements and what each format contributes are read by planner/measurements.py (its docstring names the
vLLM versions and keys followed). The fit:
- prefill: every measurement at one length counts once; the profile's `prefill_s` point there is their median.
  The points must grow with length (MODEL.md §3.2 interpolates them piecewise-linearly).
- decode: a `vllm bench latency` run with output_len O > 1 and batch b gives, per iteration, a step of
  (latency - prefill) / (O - 1) over input_len + O/2 KV tokens; the prefill is the median of an output_len 1 run at
  the same input_len and batch where one was given, else b · T(input_len) from the fitted prefill profile (through
  costmodel.prefill_seconds). Steps measured at another KV length than the profile states (--kv-tokens, default
  the measurements' median) are scaled by the roofline's step time there over its step time at theirs, which is
  the ratio of KV bytes read that §3.2 scales by. The `decode_step_s` point at each batch is the median.
- beside the roofline of the same (model, GPU, tp) on the catalog's first offering with that GPU: per length the
  ratio measured / roofline and the implied MFU, F(L, 0) / (seconds · tp · tflops); per batch the ratio and the
  implied MBU (the catalog's decode_mbu scaled by roofline / measured).

Measured load bandwidth (--load-bandwidth TIER=GBPS, GB/s from the tier into the GPU, e.g. from LMCache or fio):
- remote tiers and host memory: the tier's `read_gbps`, the cap MODEL.md §4 takes the minimum with the path
  into the instance. Host memory's path is the GPU's PCIe link (pcie_gbps · tp, a hardware figure); a measured
  host-to-GPU rate is the engine's copy path (pinned buffers, chunking) and below that link, so it is a cap on
  the tier, not a change to the GPU's spec. Measured at one tp, it caps larger tps too (conservative there).
- local NVMe: the offerings' `local_nvme_gbps`. The disk is the path into the instance, and the catalog's figure
  for it is an estimate (often a random-read floor far below sequential reads): a measurement must be able to
  raise it, which a cap on the tier (a minimum) cannot. Written on the offerings it was measured on (--offering;
  required where several offerings with the calibrated GPU have local NVMe, as their drives differ).
"""

from __future__ import annotations

import dataclasses
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..inputs.catalog import Catalog, ModelCard, Offering, Tier, bundled_dir, extend, parse_catalog, resolve_catalog_path
from ..costmodel import (Demand, Fleet, Settings, build_fleet, build_tiers, evaluate, prefill_flops,
                        prefill_seconds, step_seconds, tp_versions)
from ..inputs.errors import InputError
from ..inputs.measurements import LatencyRun, Readings, StepSample
from ..inputs.profiles import Profile

CONTEXT_TOKENS = 10_000   # the context whose load time --load-bandwidth shows (the example)


class BadMeasurements(Exception):
    """Bad or inconsistent measurements: one line each."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = list(problems)


def measured_by(as_of: str) -> str:
    return f"measured by the user (kvplan calibrate, {as_of})"


@dataclass(frozen=True)
class Target:
    """What is calibrated: a model on a GPU at a tensor-parallel size, on a catalog."""
    card: ModelCard
    catalog: Catalog
    gpu: str
    tp: int
    offering: Offering   # the first offering with that GPU running that tp: its roofline is compared

    @property
    def label(self) -> str:
        return f"{self.card.name} on {self.gpu} at tp {self.tp}"

    def fleet(self, profiles: tuple[Profile, ...] = ()) -> tuple[Fleet, int]:
        """The fleet of the catalog with these profiles only (none: the roofline), and the compared pool."""
        catalog = dataclasses.replace(self.catalog, profiles=profiles)
        fleet = build_fleet(self.card, catalog, "on_demand")
        return fleet, fleet.pool(self.offering.name, self.tp)


def target(catalog: Catalog, card: ModelCard, gpu: str, tp: int) -> Target:
    if tp & (tp - 1):
        raise InputError(f"--tp {tp}", "expected a power of two")
    selling = [o for o in catalog.offerings if o.gpu.name == gpu]
    if not selling:
        sold = sorted({o.gpu.name for o in catalog.offerings})
        raise InputError(f"--gpu {gpu}", f"no offering of catalog {catalog.name} has this GPU (GPUs there: "
                         f"{', '.join(sold)})")
    for offering in selling:
        if tp in tp_versions(card, offering.gpus, offering.gpu.hbm_gb):
            return Target(card, catalog, gpu, tp, offering)
    sizes = sorted({t for o in selling for t in tp_versions(card, o.gpus, o.gpu.hbm_gb)})
    raise InputError(f"--tp {tp}", f"{card.name} on {gpu} runs at tp {', '.join(map(str, sizes)) or 'none'} in "
                     f"{catalog.name} (its weights within 80% of the GPUs' memory, up to the instance's GPUs)")


# --- the fit -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PrefillRow:
    tokens: int
    n: int               # measurements at this length
    seconds: float       # their median
    roofline_s: float
    ratio: float         # seconds / roofline_s
    mfu: float           # implied: F(L, 0) / (seconds · tp · tflops)
    sources: tuple[str, ...]


@dataclass(frozen=True)
class StepRow:
    batch: int
    n: int
    seconds: float       # median, at the profile's kv_tokens
    roofline_s: float
    ratio: float
    mbu: float           # implied: decode_mbu · roofline_s / seconds
    sources: tuple[str, ...]


@dataclass(frozen=True)
class Fit:
    profile: Profile
    prefill: tuple[PrefillRow, ...]
    steps: tuple[StepRow, ...]
    notes: tuple[str, ...]   # how decode runs were read, what the profile replaces


def _groups(items: list, key) -> dict[int, list]:
    groups: dict[int, list] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return dict(sorted(groups.items()))


def _sources(items: list) -> tuple[str, ...]:
    return tuple(dict.fromkeys(item.source for item in items))


def decode_samples(runs: list[LatencyRun], tgt: Target, prefill: Profile,
                   problems: list[str], notes: list[str]) -> list[StepSample]:
    """Step samples from latency runs with output_len > 1 (see the module docstring)."""
    fleet, g = tgt.fleet((prefill,))
    samples = []
    for run in runs:
        if run.output_len == 1:
            continue
        L, O, b = run.input_len, run.output_len, run.batch_size
        matched = [x for r in runs if r.output_len == 1 and (r.input_len, r.batch_size) == (L, b)
                   for x in r.latencies]
        if matched:
            before = statistics.median(matched)
            how = "median of the output-1 run at that length and batch"
        else:
            before = b * float(prefill_seconds(tgt.card, fleet, [g], [L])[0][0])
            how = f"{b} x the fitted prefill at {L:,}"
        notes.append(f"{run.source}: batch prefill {before:.4g} s ({how}), then {O - 1} steps")
        short = [x for x in run.latencies if x <= before]
        if short:
            problems.append(f"{run.source}: output_len {O} at batch {b}: {short[0]:.4g} s is not longer than the "
                            f"batch's prefill ({before:.4g} s, {how}): no decode time left")
            continue
        samples.extend(StepSample(b, L + O / 2, (x - before) / (O - 1), run.source) for x in run.latencies)
    return samples


def fit(readings: Readings, tgt: Target, as_of: str, kv_tokens: int | None = None) -> Fit:
    """The profile the measurements give, beside the roofline; BadMeasurements lists every problem."""
    problems = list(readings.problems)
    card, tp = tgt.card, tgt.tp
    by_length = _groups(readings.prefill, lambda s: s.tokens)
    if not by_length and not problems:
        problems.append("no prefill measurement: a profile needs prefill seconds at one length at least (a latency "
                        "run with output_len 1, a serving run, or input_tokens,prefill_seconds rows)")
    medians = {L: statistics.median(s.seconds for s in items) for L, items in by_length.items()}
    lengths = list(medians)
    for a, b in zip(lengths, lengths[1:]):
        if medians[b] <= medians[a]:
            verb = "fall" if medians[b] < medians[a] else "do not grow"
            problems.append(f"prefill seconds {verb} with length: {medians[b]:.4g} s at {b:,} tokens "
                            f"({', '.join(_sources(by_length[b]))}) after {medians[a]:.4g} s at {a:,} "
                            f"({', '.join(_sources(by_length[a]))})")
    if problems:
        raise BadMeasurements(problems)
    files = ", ".join(readings.files)
    profile = Profile(card.name, tgt.gpu, tp, tuple(lengths), tuple(medians[L] for L in lengths),
                      source=measured_by(as_of), as_of=as_of)
    notes: list[str] = []
    steps = list(readings.steps) + decode_samples(readings.runs, tgt, profile, problems, notes)
    roof, g = tgt.fleet()
    step_rows: list[StepRow] = []
    if steps:
        kv = kv_tokens if kv_tokens is not None else round(statistics.median(s.kv_tokens for s in steps))
        if card.max_context is not None and kv > card.max_context:
            raise BadMeasurements(problems + [f"--kv-tokens {kv}: {kv:,} KV tokens is beyond {card.name}'s window of "
                                              f"{card.max_context:,}"])
        # a step measured over other KV lengths: scaled by the roofline's step time at kv over its time there
        batch = np.array([s.batch for s in steps], dtype=float)
        at_kv = step_seconds(card, roof, np.full(len(steps), g), batch, np.full(len(steps), float(kv)))[0]
        at_own = step_seconds(card, roof, np.full(len(steps), g), batch, [s.kv_tokens for s in steps])[0]
        scaled = [dataclasses.replace(s, seconds=s.seconds * float(a / o)) for s, a, o in zip(steps, at_kv, at_own)]
        by_batch = _groups(scaled, lambda s: s.batch)
        step_medians = {b: statistics.median(s.seconds for s in items) for b, items in by_batch.items()}
        batches = list(step_medians)
        for a, b in zip(batches, batches[1:]):
            if step_medians[b] < step_medians[a]:
                problems.append(f"decode step seconds fall with batch: {step_medians[b]:.4g} s at batch {b} "
                                f"({', '.join(_sources(by_batch[b]))}) after {step_medians[a]:.4g} s at batch {a} "
                                f"({', '.join(_sources(by_batch[a]))}), at {kv:,} KV tokens")
        if problems:
            raise BadMeasurements(problems)
        profile = dataclasses.replace(profile, decode_kv_tokens=int(kv), decode_batches=tuple(batches),
                                      decode_seconds=tuple(step_medians[b] for b in batches))
        roof_steps = step_seconds(card, roof, np.full(len(batches), g), np.array(batches, dtype=float),
                                  np.full(len(batches), float(kv)))[0]
        mbu = tgt.offering.efficiency["decode_mbu"]
        step_rows = [StepRow(b, len(by_batch[b]), step_medians[b], float(r), step_medians[b] / float(r),
                             mbu * float(r) / step_medians[b], _sources(by_batch[b]))
                     for b, r in zip(batches, roof_steps)]
    if problems:
        raise BadMeasurements(problems)
    roof_prefill = prefill_seconds(card, roof, np.full(len(lengths), g), np.array(lengths, dtype=float))[0]
    tflops = tgt.offering.gpu.tflops
    prefill_rows = tuple(
        PrefillRow(L, len(by_length[L]), medians[L], float(r), medians[L] / float(r),
                   float(prefill_flops(card, L, 0)) / (medians[L] * tp * tflops * 1e12), _sources(by_length[L]))
        for L, r in zip(lengths, roof_prefill))
    for old in tgt.catalog.profiles:
        if old.key == profile.key:
            notes.append(f"replaces {tgt.catalog.name}'s profile for {tgt.label} ({old.source or 'no source'})")
    profile = dataclasses.replace(profile, source=f"{measured_by(as_of)}: {files}")
    return Fit(profile, prefill_rows, tuple(step_rows), tuple(notes))


# --- measured load bandwidth --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Bandwidth:
    """One --load-bandwidth: where the measured GB/s is written (MODEL.md §4; see the module docstring)."""
    tier: Tier
    gbps: float
    field: str                   # "read_gbps" (on the tier) or "local_nvme_gbps" (on the offerings)
    offerings: tuple[str, ...]   # where it was measured: written there (local NVMe), shown there (all)


def bandwidths(specs: tuple[str, ...], tgt: Target, offerings: tuple[str, ...]) -> list[Bandwidth]:
    catalog = tgt.catalog
    names = {o.name for o in catalog.offerings}
    for name in offerings:
        if name not in names:
            raise InputError(f"--offering {name}", f"no offering of that name in {catalog.name}")
        offering = catalog.offering(name)
        if offering.gpu.name != tgt.gpu or tgt.tp not in tp_versions(tgt.card, offering.gpus, offering.gpu.hbm_gb):
            raise InputError(f"--offering {name}", f"does not run {tgt.label}")
    shown = offerings or tuple(o.name for o in catalog.offerings if o.gpu.name == tgt.gpu
                               and tgt.tp in tp_versions(tgt.card, o.gpus, o.gpu.hbm_gb))
    tiers = {t.name: t for t in catalog.tiers}
    result: list[Bandwidth] = []
    for spec in specs:
        name, sep, value = spec.partition("=")
        where = f"--load-bandwidth {spec}"
        if not sep:
            raise InputError(where, "expected TIER=GBPS, e.g. local_nvme=3.2")
        if name not in tiers:
            raise InputError(where, f"unknown tier {name!r} (tiers of {catalog.name}: {', '.join(tiers)})")
        tier = tiers[name]
        try:
            gbps = float(value)
        except ValueError:
            raise InputError(where, f"expected GB/s, found {value!r}") from None
        if not np.isfinite(gbps) or gbps <= 0:
            raise InputError(where, f"expected GB/s above 0, found {value!r}")
        if tier.kind == "hbm":
            raise InputError(where, "a cache in HBM loads in no time in the model (MODEL.md §4): nothing to set")
        if any(b.tier.name == name for b in result):
            raise InputError(where, f"tier {name} given twice")
        if tier.kind == "local_nvme":
            nvme = tuple(n for n in shown if catalog.offering(n).local_nvme_gb)
            if not nvme:
                raise InputError(where, f"none of {', '.join(shown) or 'the offerings'} has local NVMe")
            if len(nvme) > 1 and not offerings:  # instance types differ in drives: say which one was measured
                raise InputError(where, f"measured on which instance? give --offering (with local NVMe and "
                                 f"{tgt.gpu}: {', '.join(nvme)})")
            result.append(Bandwidth(tier, gbps, "local_nvme_gbps", nvme))
        else:
            result.append(Bandwidth(tier, gbps, "read_gbps", shown))
    return result


@dataclass(frozen=True)
class LoadRow:
    tier: str
    offering: str
    figure: str                # the catalog's figure before -> the measured one
    load_before_s: float       # nan: this tier cannot load into this offering
    load_after_s: float
    prefill_s: float           # prefilling the same context instead, on the calibrated catalog
    tokens: int
    size_gb: float             # its KV cache


def _figure_before(b: Bandwidth, catalog: Catalog) -> str:
    if b.field == "read_gbps":
        return f"read_gbps {b.tier.read_gbps:g}" if b.tier.read_gbps is not None else "read_gbps none"
    figures = sorted({f"{catalog.offering(n).local_nvme_gbps:g}" for n in b.offerings
                      if catalog.offering(n).local_nvme_gbps is not None})
    return f"local_nvme_gbps {'/'.join(figures) or 'none'}"


def load_rows(card: ModelCard, before: Catalog, after: Catalog, measured: list[Bandwidth], tp: int) -> list[LoadRow]:
    """The load time of a CONTEXT_TOKENS context (the model's window, if shorter) from each measured tier into
    each offering it was measured on, before and after (costmodel.evaluate), and its prefill on the GPU."""
    tokens = min(CONTEXT_TOKENS, card.max_context or CONTEXT_TOKENS)
    demand = Demand(*(np.array([v], dtype=float) for v in (tokens, 0, 1, 1, 1, np.inf, np.inf)),
                    count=np.array([1]))
    settings = Settings("provisioned", 730.0, 1.0, False)
    rows = []
    fleets = {id(c): (build_fleet(card, c, "on_demand"), build_tiers(c)) for c in (before, after)}
    for b in measured:
        for name in b.offerings:
            loads = []
            for catalog in (before, after):
                fleet, tiers = fleets[id(catalog)]
                g, t = fleet.pool(name, tp), tiers.index(b.tier.name)
                option = evaluate(card, fleet, tiers, demand, settings, [0], [g], [t], [0])
                loads.append(float(option.load_s[0]) if option.available[0] else np.nan)
                size_gb = float(option.stored_gb[0])
            fleet = fleets[id(after)][0]
            prefill = float(prefill_seconds(card, fleet, [fleet.pool(name, tp)], [tokens])[0][0])
            rows.append(LoadRow(b.tier.name, name, f"{_figure_before(b, before)} -> {b.gbps:g}", loads[0], loads[1],
                                prefill, tokens, size_gb))
    return rows


# --- the catalog written -------------------------------------------------------------------------------------

def extends_ref(catalog_ref: str, out: Path) -> str:
    """How the written catalog names its base: a bundled name as it is, a path relative to the written file
    (with a '/' so that catalog.extend reads it as a path)."""
    base = resolve_catalog_path(catalog_ref)
    if base.resolve() == (bundled_dir() / f"{catalog_ref}.yaml").resolve():
        return catalog_ref
    ref = os.path.relpath(base.resolve(), out.resolve().parent)
    return ref if "/" in ref else f"./{ref}"


def document(tgt: Target, ref: str, profile: Profile | None, measured: list[Bandwidth], as_of: str,
             note: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": f"{tgt.catalog.name}-calibrated", "extends": ref,
                           "description": f"{tgt.catalog.name} with the user's measurements laid over it"}
    if profile is not None:
        doc["profiles"] = [{**profile.as_yaml(), "note": note}]
    for b in measured:
        figure = {"value": b.gbps, "source": measured_by(as_of), "as_of": as_of,
                  "note": f"GB/s from {b.tier.name} into {tgt.gpu} at tp {tgt.tp}, on {', '.join(b.offerings)}"}
        if b.field == "read_gbps":
            doc.setdefault("tiers", []).append({"name": b.tier.name, "read_gbps": figure})
        else:
            doc.setdefault("offerings", []).extend({"name": n, "local_nvme_gbps": dict(figure)} for n in b.offerings)
    return doc


def document_text(doc: dict[str, Any], as_of: str, files: list[str]) -> str:
    head = [f"# Written by `kvplan calibrate` ({as_of}): {doc['extends']} with measured figures laid over it",
            "# (MODEL.md §3.2 profiles, §4 load paths). Measurements: " + (", ".join(files) or "none") + "."]
    return "\n".join(head) + "\n" + yaml.safe_dump(doc, sort_keys=False, width=120, allow_unicode=True)


def parse_document(doc: dict[str, Any], catalog_ref: str, models: dict[str, ModelCard]) -> Catalog:
    """The catalog the document gives, before it is written (its base named by absolute path, so that nothing
    depends on where it will be written)."""
    base = str(resolve_catalog_path(catalog_ref).resolve())
    return parse_catalog(extend({**doc, "extends": base}, base), base, models)

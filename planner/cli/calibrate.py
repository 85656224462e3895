"""`kvplan calibrate`: measurements a user already has (vLLM benchmark JSON, CSV, load bandwidths) into a
catalog that extends another with a measured profile (planner/calibrate.py)."""

from __future__ import annotations

import datetime
import math
import sys
from pathlib import Path

import click

from ..analyses.calibrate import (BadMeasurements, Fit, LoadRow, Target, bandwidths, document, document_text, extends_ref,
                        fit, load_rows, parse_document, target)
from ..inputs.catalog import load_catalog, load_models, resolve_catalog_path
from .common import command, write_atomic
from ..inputs.errors import InputError
from ..inputs.measurements import Readings, read_measurements
from ..present.summary import table


def _s(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.4g}"


def _fit_text(tgt: Target, readings: Readings, result: Fit) -> list[str]:
    eff = tgt.offering.efficiency
    gpu = tgt.offering.gpu
    lines = [f"kvplan calibrate: {tgt.label}, against catalog {tgt.catalog.name}'s roofline on "
             f"{tgt.offering.name} ({gpu.tflops:g} TFLOPS at prefill_mfu {eff['prefill_mfu']:g}; "
             f"{gpu.hbm_gbps:g} GB/s at decode_mbu {eff['decode_mbu']:g})", "", "measurements"]
    width = max(len(f) for f, _ in readings.described)
    lines += [f"  {f.ljust(width)}  {what}" for f, what in readings.described]
    lines += ["", "prefill: the median of the measurements at each length (MODEL.md §3.2 interpolates between "
              "them, and past the last follows the roofline's shape)",
              table(["TOKENS", "N", "MEASURED_s", "ROOFLINE_s", "RATIO", "IMPLIED_MFU"],
                    [[f"{r.tokens:,}", r.n, f"{r.seconds:.4g}", f"{r.roofline_s:.4g}", f"{r.ratio:.2f}",
                      f"{r.mfu:.3f}"] for r in result.prefill])]
    if result.steps:
        lines += ["", f"decode step: the median at each batch, over {result.profile.decode_kv_tokens:,} KV tokens "
                  "per sequence",
                  table(["BATCH", "N", "MEASURED_s", "ROOFLINE_s", "RATIO", "IMPLIED_MBU"],
                        [[r.batch, r.n, f"{r.seconds:.4g}", f"{r.roofline_s:.4g}", f"{r.ratio:.2f}", f"{r.mbu:.3f}"]
                         for r in result.steps])]
    if result.notes:
        lines += [""] + [f"note: {n}" for n in result.notes]
    return lines


def _load_text(rows: list[LoadRow], tgt: Target) -> list[str]:
    first = rows[0]
    return ["", f"loads with the measured bandwidth: a {first.tokens:,}-token context of {tgt.card.name} "
            f"({first.size_gb:.3g} GB of KV cache) at tp {tgt.tp} (— : this tier cannot load into that offering)",
            table(["TIER", "OFFERING", "FIGURE (GB/s)", "LOAD_BEFORE_s", "LOAD_AFTER_s", "PREFILL_s"],
                  [[r.tier, r.offering, r.figure, _s(r.load_before_s), _s(r.load_after_s), _s(r.prefill_s)]
                   for r in rows])]


@click.command("calibrate")
@click.argument("measurements", nargs=-1)
@click.option("--catalog", "catalog_ref", required=True, help="The catalog to extend: a bundled name or a path.")
@click.option("--model", required=True, help="The model card measured (catalogs/models.yaml).")
@click.option("--gpu", required=True, help="The GPU measured, as the catalog names it (e.g. H100).")
@click.option("--tp", type=click.IntRange(min=1), default=1, show_default=True,
              help="Tensor-parallel size of the measured runs.")
@click.option("--kv-tokens", type=click.IntRange(min=1), help="KV tokens per sequence of CSV step rows without a "
              "kv_tokens column, and the length the profile states step times at (default: the measurements' "
              "median).")
@click.option("--load-bandwidth", "load_bandwidth", multiple=True, metavar="TIER=GBPS",
              help="Measured GB/s from a tier into the GPU (repeat per tier): a tier's read_gbps, or for local_nvme "
              "the offerings' local_nvme_gbps.")
@click.option("--offering", "offerings", multiple=True, help="Where --load-bandwidth was measured (repeat; default: "
              "every offering with the GPU that runs this tp; local_nvme needs it where several have NVMe).")
@click.option("--out", type=click.Path(path_type=Path), help="Write the calibrated catalog here (without it, only "
              "the comparison is printed).")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@click.option("--as-of", help="Date the measurements carry (default: today).")
@command
def calibrate_command(measurements: tuple[str, ...], catalog_ref: str, model: str, gpu: str, tp: int,
                      kv_tokens: int | None, load_bandwidth: tuple[str, ...], offerings: tuple[str, ...],
                      out: Path | None, force: bool, as_of: str | None, quiet: bool) -> None:
    """Fit a measured profile for MODEL on GPU at tp from MEASUREMENTS (vllm bench latency --output-json files,
    vllm bench serve --save-result files, or CSV input_tokens,prefill_seconds / batch,step_seconds[,kv_tokens]),
    print it beside the roofline, and write a catalog that extends --catalog with it. A latency JSON whose
    lengths are not in a FILE.pytorch.json beside it is given as FILE@input_len=L,output_len=O,batch_size=B."""
    if not measurements and not load_bandwidth:
        raise InputError("kvplan calibrate", "nothing to calibrate: give measurement files and/or --load-bandwidth")
    if out is not None and out.exists() and not force:
        raise InputError(str(out), "exists; pass --force to overwrite it")
    if out is not None and out.resolve() == resolve_catalog_path(catalog_ref).resolve():
        raise InputError(str(out), "is the catalog being extended; write the calibrated one elsewhere")
    models = load_models()
    if model not in models:
        raise InputError(f"--model {model}", f"unknown model (known: {', '.join(sorted(models))})")
    card = models[model]
    catalog = load_catalog(catalog_ref, models)
    tgt = target(catalog, card, gpu, tp)
    measured = bandwidths(load_bandwidth, tgt, offerings)
    date = as_of or datetime.date.today().isoformat()
    lines: list[str] = []
    result = None
    readings = Readings()
    if measurements:
        readings = read_measurements(list(measurements), card, tp, kv_tokens)
        try:
            result = fit(readings, tgt, date, kv_tokens)
        except BadMeasurements as exc:
            for problem in exc.problems:
                click.echo(f"error: {problem}", err=True)
            sys.exit(2)
        lines += _fit_text(tgt, readings, result)
    else:
        lines.append(f"kvplan calibrate: load bandwidth for {tgt.label} on catalog {catalog.name}")
    path = out if out is not None else Path("calibrated.yaml")
    note = "the median of the measurements at each length and at each batch (kvplan calibrate)"
    doc = document(tgt, extends_ref(catalog_ref, path), None if result is None else result.profile, measured, date,
                   note)
    after = parse_document(doc, catalog_ref, models)
    if measured:
        lines += _load_text(load_rows(card, catalog, after, measured, tp), tgt)
    if out is not None:
        write_atomic(out, document_text(doc, date, readings.files))
        written = load_catalog(str(out), models)
        if result is not None and result.profile.key not in {p.key for p in written.profiles}:
            raise RuntimeError(f"{out}: the written catalog lost the profile")
        what = [f"profile {tgt.label}"] * (result is not None) + [f"{b.tier.name} {b.field}" for b in measured]
        lines += ["", f"wrote {out}: extends {doc['extends']} with {', '.join(what)}"]
    else:
        lines += ["", "no --out: nothing written"]
    click.echo("\n".join(lines))



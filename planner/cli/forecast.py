"""`kvplan forecast`: a horizon of months planned at once, with its tables, JSON, CSVs and cost chart."""

from __future__ import annotations

import dataclasses

import io
import json
from pathlib import Path

import click
import pandas as pd

from ..analyses.forecast import forecast, parse_budget, parse_growth
from ..analyses.horizon import COMMITMENTS
from ..inputs.catalog import load_catalog, load_models
from ..inputs.errors import InputError
from ..inputs.fields import read_text
from ..inputs.workload import load_workload
from ..present.charts import forecast_chart
from ..present.summary import forecast_summary, spreadsheet_safe
from .common import command, progress_printer, slo_policy_option, solver_options, write_atomic


@click.command("forecast")
@click.argument("workload", type=click.Path(path_type=Path))
@click.option("--catalog", "catalog_ref", required=True, help="A bundled catalog's name or a catalog YAML path.")
@click.option("--months", type=click.IntRange(1, 120), default=12, show_default=True)
@click.option("--growth", help="Monthly growth of reuses_per_month (and of background traffic), e.g. 5%/month.")
@click.option("--reuses", "reuses_file", type=click.Path(path_type=Path),
              help="A long table of forecasts: CSV with id, month, reuses (instead of reuses_m1... columns).")
@click.option("--budget", help="A cap on each month's cost, e.g. 250000/month.")
@click.option("--commitments", default="", help="Comma-separated: reserved_1y, reserved_3y, spot.")
@click.option("--spot-share", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="At most this share of an offering's instances may be spot (with --commitments spot).")
@solver_options(time_limit=600.0, time_limit_help="Seconds for the horizon's solves, shared among them.")
@slo_policy_option
@click.option("--json", "as_json", is_flag=True, help="Print the forecast as JSON.")
@click.option("--out", type=click.Path(path_type=Path), help="Write forecast.json, months.csv, fleet.csv, "
              "placements.csv and cost.png here.")
@click.option("--force", is_flag=True, help="Overwrite a forecast already in --out.")
@command
def forecast_command(workload: Path, catalog_ref: str, months: int, growth: str | None, reuses_file: Path | None,
                     budget: str | None, commitments: str, spot_share: float, solver: str, gap: float,
                     time_limit: float, slo_policy: str | None, as_json: bool, out: Path | None, force: bool,
                     quiet: bool) -> None:
    """Plan a horizon of months at once: fleet, commitments and placement per month, under an optional budget."""
    if out is not None and (out / "forecast.json").exists() and not force:
        raise InputError(str(out / "forecast.json"), "exists; pass --force to overwrite it")
    chosen = tuple(c.strip() for c in commitments.split(",") if c.strip())
    for c in chosen:
        if c not in COMMITMENTS:
            raise InputError(f"--commitments {commitments}", f"unknown commitment {c!r} (expected "
                             f"{', '.join(COMMITMENTS)})")
    models = load_models()
    work = load_workload(workload, models)
    if slo_policy is not None:
        work = dataclasses.replace(work, slo_policy=slo_policy)
    catalog = load_catalog(catalog_ref, models)
    table = None
    if reuses_file is not None:
        table = pd.read_csv(io.StringIO(read_text(reuses_file)), dtype=str)
    result = forecast(work, catalog, months=months, growth=None if growth is None else parse_growth(growth),
                      table=table, table_file=str(reuses_file or ""), commitments=chosen, spot_share=spot_share,
                      budget=None if budget is None else parse_budget(budget), solver=solver, gap=gap,
                      time_limit=time_limit, progress=progress_printer(quiet))
    if out is not None:
        _write_forecast(out, result, forecast_chart)
    click.echo(json.dumps(result, indent=1) if as_json else forecast_summary(result, work, catalog.name))


def _write_forecast(out: Path, result: dict, chart) -> None:
    months = pd.DataFrame([{"month": m["month"], **m["breakdown_usd"], "total": m["total_usd"], "moves": m["moves"]}
                           for m in result["months"]])
    fleet = pd.DataFrame([{"month": m["month"], **f} for m in result["months"] for f in m["fleet"]])
    placements = pd.DataFrame([{"id": c, "month": i + 1, "tier": t, "offering": o}
                               for i, p in enumerate(result["placements"])
                               for c, t, o in zip(result["context_ids"], p["tier"], p["offering"])])
    if not placements.empty:
        placements["id"] = placements["id"].map(spreadsheet_safe)
    write_atomic(out / "months.csv", months.to_csv(index=False))
    write_atomic(out / "fleet.csv", fleet.to_csv(index=False))
    write_atomic(out / "placements.csv", placements.to_csv(index=False))
    out.mkdir(parents=True, exist_ok=True)
    chart(result, out / "cost.png")
    write_atomic(out / "forecast.json", json.dumps(result, indent=1) + "\n")

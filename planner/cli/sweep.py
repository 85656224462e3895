"""`kvplan sweep`: many scenarios planned in full, their quantiles and sensitivities."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import pandas as pd

from ..analyses import scenarios, sweep
from ..inputs.catalog import load_models
from ..inputs.errors import InputError
from ..present.charts import sweep_chart
from ..present.summary import sweep_summary_text
from .common import command, slo_policy_option, solver_options, write_atomic


def _read_results(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def _write_results(frame: pd.DataFrame, path: Path) -> None:
    """The table as Parquet (if asked for) and always as CSV beside it, each written whole then renamed."""
    csv = path.with_suffix(".csv")
    write_atomic(csv, frame.to_csv(index=False))
    if path.suffix == ".parquet":
        tmp = path.with_name(f".{path.name}.tmp")
        frame.to_parquet(tmp, index=False)
        tmp.replace(path)


@click.command("sweep")
@click.argument("workload", type=click.Path(path_type=Path))
@click.option("--catalog", "catalog_ref", required=True, help="The catalog scenarios start from (name or path).")
@click.option("--scenarios", "scenarios_file", required=True, type=click.Path(path_type=Path),
              help="The scenarios YAML: named overrides, a grid, random draws (see planner/scenarios.py).")
@click.option("--samples", type=click.IntRange(min=1), help="Random draws (overrides the file's random.samples).")
@click.option("--workers", type=click.IntRange(min=1), help="Processes on this machine (default: its cores, up to 8).")
@click.option("--ray", "ray_address", help="Run the scenarios on this existing Ray cluster (e.g. 10.0.0.5:6379) "
              "instead of this machine's processes.")
@click.option("--out", type=click.Path(path_type=Path), help="Results table: .parquet (and .csv beside it) or .csv. "
              "Scenarios already in it are not planned again (resume).")
@solver_options(time_limit=300.0, time_limit_help="Seconds for each scenario's solve.", solver=False)
@slo_policy_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@command
def sweep_command(workload: Path, catalog_ref: str, scenarios_file: Path, samples: int | None, workers: int | None,
                  ray_address: str | None, out: Path | None, gap: float, time_limit: float,
                  slo_policy: str | None, as_json: bool, quiet: bool) -> None:
    """Plan WORKLOAD under every scenario of a scenarios file; P10/P50/P90 of the cost and a tornado table."""
    if out is not None and out.suffix not in (".parquet", ".csv"):
        raise InputError(f"--out {out}", "expected a .parquet or .csv file")
    if out is not None and out.suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise InputError(f"--out {out}", "Parquet needs pyarrow: pip install 'kvplan[parquet]' (or use .csv)")
    todo = scenarios.load_scenarios(scenarios_file, samples)
    base = scenarios.load_base(workload, catalog_ref, scenarios_file)
    if slo_policy is not None and isinstance(base.workload_data, dict):
        base.workload_data["slo_policy"] = slo_policy
    scenarios.apply(base, todo[0], load_models())   # a bad workload or catalog is reported once, before any work
    rows: list[dict] = []
    if out is not None and out.exists():
        previous = _read_results(out)
        known = {s.id for s in todo}
        rows = [r for r in previous.to_dict(orient="records") if r["scenario"] in known]
        have = {r["scenario"] for r in rows}
        todo_now = [s for s in todo if s.id not in have]
        if not quiet:
            click.echo(f"resuming: {len(rows)} scenarios already in {out}, {len(todo_now)} to plan", err=True)
    else:
        todo_now = todo
    if ray_address is not None and workers is not None:
        raise InputError("--workers/--ray", "give one: processes here, or a Ray cluster")
    workers = workers or sweep.default_workers()
    if not quiet:
        click.echo(f"planning {len(todo_now)} scenarios " + (f"on the Ray cluster at {ray_address}..." if ray_address
                   else f"on {workers} worker(s)..."), err=True)
    bar = click.progressbar(length=len(todo_now), file=sys.stderr, label="scenarios") if not quiet and todo_now else None

    def done(row: dict) -> None:
        rows.append(row)
        if bar is not None:
            bar.update(1)
        if out is not None and len(rows) % 10 == 0:   # a sweep stopped midway resumes from here
            _write_results(sweep.ordered(rows, todo), out)

    if bar is not None:
        bar.__enter__()
    try:
        if ray_address is not None:
            sweep.run_ray(ray_address, base, todo_now, gap, time_limit, done)
        else:
            sweep.run_local(base, todo_now, workers, gap, time_limit, done)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    frame = sweep.ordered(rows, todo)
    summary = sweep.sweep_summary(frame)
    if out is not None:
        _write_results(frame, out)
        write_atomic(out.with_suffix(".summary.json"), json.dumps(summary, indent=1) + "\n")
        sweep_chart(frame, summary, out.with_suffix(".png"))
        if not quiet:
            click.echo(f"wrote {out}" + (f", {out.with_suffix('.csv')}" if out.suffix == ".parquet" else "")
                       + f", {out.with_suffix('.summary.json')} and {out.with_suffix('.png')}", err=True)
    click.echo(json.dumps(summary, indent=1) if as_json else sweep_summary_text(summary))

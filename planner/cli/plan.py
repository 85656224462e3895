"""`kvplan plan`, `kvplan evaluate` and `kvplan compare`: a plan (or one robust fleet for many scenarios), a saved
plan re-priced, and a workload planned on several catalogs."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import click

from ..analyses import scenarios
from ..analyses.compare import compare
from ..analyses.robust import parse_objective, robust_plan
from ..inputs.catalog import PRICINGS, bundled_names, load_catalog, load_models
from ..inputs.errors import InputError
from ..inputs.fields import Section, load_yaml
from ..inputs.workload import MODES, load_workload
from ..plan.files import reprice
from ..plan.runner import make_plan
from ..present.summary import comparison, contexts_frame, plan_summary, table
from .common import command, progress_printer, slo_policy_option, solver_options, write_atomic


def plan_text(plan: dict) -> str:
    """The plan as JSON: indented, except that each context is one line (a plan may hold a million)."""
    contexts = plan.get("contexts")
    if not contexts:
        return json.dumps(plan, indent=1, sort_keys=False, allow_nan=False) + "\n"
    marker = "\u0000contexts\u0000"
    head = json.dumps({**plan, "contexts": marker}, indent=1, sort_keys=False, allow_nan=False)
    import orjson  # a million rows: json.dumps takes 9 s here, orjson 1 s

    rows = orjson.dumps(contexts)[1:-1]
    if rows.count(b"},{") == len(contexts) - 1:  # rows hold plain values: "},{" occurs only between them
        rows = rows.replace(b"},{", b"},\n  {")
    else:  # some string holds "},{": row by row
        rows = b",\n  ".join([orjson.dumps(row) for row in contexts])
    rows = rows.decode()
    return head.replace(json.dumps(marker), "[\n  " + rows + "\n ]", 1) + "\n"


@click.command("plan")
@click.argument("workload", type=click.Path(path_type=Path))
@click.option("--catalog", "catalog_ref", required=True,
              help="A bundled catalog's name (aws, gcp, azure, lambda, paper-2025) or a catalog YAML path.")
@click.option("--mode", type=click.Choice(MODES), help="Override the workload's mode.")
@solver_options(time_limit=300.0, method=True,
                time_limit_help="Seconds for the plan's solve (and as many for each baseline); on expiry the best "
                "plan found is returned with its gap.")
@slo_policy_option
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON instead of the summary.")
@click.option("--out", type=click.Path(path_type=Path), help="Write plan.json and contexts.csv to this folder.")
@click.option("--force", is_flag=True, help="Overwrite a plan already in --out.")
@click.option("--no-baselines", is_flag=True, help="Skip pricing the baselines (faster).")
@click.option("--budget", type=click.FloatRange(min=0), help="USD per month; a plan above it is refused (exit 1) "
              "with what it would take.")
@click.option("--timing", is_flag=True, help="Record the solver's wall time in the plan (then plans of the same "
              "inputs are no longer byte-identical).")
@click.option("--scenarios", "scenarios_file", type=click.Path(path_type=Path),
              help="With --robust: the scenarios the one fleet must serve (see kvplan sweep).")
@click.option("--robust", help="expected | worst | cvar:ALPHA: one fleet for every scenario, placed per scenario, "
              "minimising the expected cost, the worst case or the CVaR; with each scenario's regret.")
@command
def plan_command(workload: Path, catalog_ref: str, mode: str | None, solver: str, time_limit: float, gap: float,
                 as_json: bool, out: Path | None, force: bool, no_baselines: bool, budget: float | None, timing: bool,
                 method: str, scenarios_file: Path | None, robust: str | None, slo_policy: str | None,
                 quiet: bool) -> None:
    """Plan WORKLOAD (a workload YAML) on a catalog: the cheapest placement and fleet that meet the SLOs."""
    if (robust is None) != (scenarios_file is None):
        raise InputError("--robust/--scenarios", "give both: the scenarios and the robust objective")
    if robust is not None:
        _robust_plan(workload, catalog_ref, scenarios_file, robust, solver, gap, time_limit, as_json, out, force,
                     quiet)
        return
    if out is not None and (out / "plan.json").exists() and not force:
        raise InputError(str(out / "plan.json"), "exists; pass --force to overwrite it")
    models = load_models()
    work = load_workload(workload, models)
    if mode is not None:
        work = dataclasses.replace(work, mode=mode)
    catalog = load_catalog(catalog_ref, models)
    if not quiet:
        click.echo(f"planning {len(work.contexts)} contexts on {catalog.name} ({len(catalog.offerings)} offerings, "
                   f"{len(catalog.tiers)} tiers) with {solver}...", err=True)
    result = make_plan(work, catalog, solver=solver, gap=gap, time_limit=time_limit, baselines=not no_baselines,
                       progress=progress_printer(quiet), timing=timing, budget=budget, method=method,
                       slo_policy=slo_policy)
    if out is not None:
        write_atomic(out / "contexts.csv", contexts_frame(result).to_csv(index=False))
        write_atomic(out / "plan.json", plan_text(result))
        if not quiet:
            click.echo(f"wrote {out / 'plan.json'} and {out / 'contexts.csv'}", err=True)
    click.echo(plan_text(result) if as_json else plan_summary(result), nl=not as_json)
    if result["violations"]:
        sys.exit(1)


@click.command("evaluate")
@click.argument("plan_file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the re-priced totals as JSON.")
@command
def evaluate_command(plan_file: Path, as_json: bool, quiet: bool) -> None:
    """Re-price a saved plan with the analytical model alone (no solver) and check every constraint."""
    plan = load_yaml(plan_file)  # JSON is YAML; one safe loader with line numbers for syntax errors
    _, priced = reprice(plan, str(plan_file))
    stored = Section(plan, str(plan_file)).number("total_usd", None, minimum=None)
    result = {"total_usd": round(priced.total, 6),
              "breakdown_usd": {k: round(v, 6) for k, v in priced.breakdown.items()},
              "plan_total_usd": stored,
              "matches": stored is not None and abs(priced.total - stored) < 0.005,
              "violations": priced.violations}
    if as_json:
        click.echo(json.dumps(result, indent=1))
    else:
        click.echo(f"re-priced total: ${priced.total:,.2f} per month (plan says "
                   f"{'—' if stored is None else f'${stored:,.2f}'}: "
                   f"{'matches' if result['matches'] else 'DIFFERS'})")
        for key, value in priced.breakdown.items():
            click.echo(f"  {key:<9} ${value:,.2f}")
        click.echo("constraints: all hold" if not priced.violations else "VIOLATIONS:\n  "
                   + "\n  ".join(priced.violations))
    if priced.violations or not result["matches"]:
        sys.exit(1)


@click.command("compare")
@click.argument("workload", type=click.Path(path_type=Path))
@click.option("--catalog", "catalogs", multiple=True, help="A catalog to compare (repeat); default: all bundled.")
@click.option("--pricing", type=click.Choice(PRICINGS), help="Override the workload's pricing.")
@solver_options(time_limit=300.0, time_limit_help="Seconds for each catalog's plan.")
@slo_policy_option
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print the rows as CSV.")
@command
def compare_command(workload: Path, catalogs: tuple[str, ...], pricing: str | None, solver: str, time_limit: float,
                    gap: float, slo_policy: str | None, as_json: bool, as_csv: bool, quiet: bool) -> None:
    """Plan WORKLOAD on several catalogs and print one table, cheapest first."""
    models = load_models()
    work = load_workload(workload, models)
    if slo_policy is not None:
        work = dataclasses.replace(work, slo_policy=slo_policy)
    rows = compare(work, list(catalogs) or bundled_names(), models, pricing=pricing, solver=solver, gap=gap,
                   time_limit=time_limit, progress=progress_printer(quiet))
    if as_json:
        click.echo(json.dumps(rows, indent=1))
    elif as_csv:
        import pandas as pd

        click.echo(pd.DataFrame(rows).to_csv(index=False), nl=False)
    else:
        click.echo(comparison(rows, work, pricing or work.pricing))


def _robust_plan(workload: Path, catalog_ref: str, scenarios_file: Path, robust: str, solver: str, gap: float,
                 time_limit: float, as_json: bool, out: Path | None, force: bool, quiet: bool) -> None:
    """`kvplan plan WORKLOAD --scenarios FILE --robust OBJECTIVE`: one fleet for every scenario."""
    if out is not None and (out / "robust.json").exists() and not force:
        raise InputError(str(out / "robust.json"), "exists; pass --force to overwrite it")
    objective, alpha = parse_objective(robust)
    result = robust_plan(scenarios.load_base(workload, catalog_ref, scenarios_file),
                         scenarios.load_scenarios(scenarios_file), objective, alpha, load_models(), solver=solver,
                         gap=gap, time_limit=time_limit, progress=progress_printer(quiet))
    if out is not None:
        write_atomic(out / "robust.json", json.dumps(result, indent=1) + "\n")
    if as_json:
        click.echo(json.dumps(result, indent=1))
        return
    fleet = " + ".join(f"{f['instances']}x {f['offering']}" for f in result["fleet"])
    rows = [[r["scenario"], f"${r['robust_usd']:,.2f}", f"${r['own_optimum_usd']:,.2f}", f"${r['regret_usd']:,.2f}",
             r["own_fleet"]] for r in result["scenarios"]]
    click.echo(f"kvplan robust plan ({result['objective']}): {fleet}\n"
               f"{result['objective']} cost ${result['objective_usd']:,.2f} per month ({result['status']})\n\n"
               + table(["scenario", "robust fleet", "own optimum", "regret", "own fleet"], rows, indent=""))

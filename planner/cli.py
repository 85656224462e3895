"""The `kvplan` command line. Exit codes: 0 ok, 1 infeasible or unsolved, 2 bad input."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import click

from . import __version__
from .catalog import load_catalog, load_models
from .errors import Infeasible, InputError
from .fields import Section, load_yaml
from .plan import make_plan, reprice
from .report import contexts_frame, summary
from .workload import MODES, load_workload


def _setup_logging(quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    logger = logging.getLogger("kvplan")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.ERROR if quiet else logging.WARNING)
    logger.propagate = False


def command(func):
    """Shared options and error handling: one line per error, no traceback unless --debug."""
    @click.option("--debug", is_flag=True, help="Show tracebacks.")
    @click.option("--quiet", "-q", is_flag=True, help="No warnings or progress on stderr.")
    @functools.wraps(func)
    def wrapper(*args, debug: bool, quiet: bool, **kwargs):
        _setup_logging(quiet)
        try:
            return func(*args, quiet=quiet, **kwargs)
        except InputError as exc:
            if debug:
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except Infeasible as exc:
            if debug:
                raise
            click.echo(f"infeasible: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as exc:  # a bug: say so in one line, keep the traceback for --debug
            if debug:
                raise
            click.echo(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
                       err=True)
            sys.exit(3)
    return wrapper


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def plan_text(plan: dict) -> str:
    return json.dumps(plan, indent=1, sort_keys=False, allow_nan=False) + "\n"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kvplan")
def main() -> None:
    """kvplan: plan where LLM KV caches live and which GPUs to rent, at least monthly cost under SLOs."""


@main.command("plan")
@click.argument("workload", type=click.Path(path_type=Path))
@click.option("--catalog", "catalog_ref", required=True,
              help="A bundled catalog's name (aws, paper-2025) or a catalog YAML path.")
@click.option("--mode", type=click.Choice(MODES), help="Override the workload's mode.")
@click.option("--solver", type=click.Choice(["highs", "cbc"]), default="highs", show_default=True)
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), default=300.0, show_default=True,
              help="Seconds per solve; on expiry the best plan found is returned with its gap.")
@click.option("--gap", type=click.FloatRange(min=0, max=1), default=1e-4, show_default=True,
              help="Relative optimality gap at which the solver stops.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON instead of the summary.")
@click.option("--out", type=click.Path(path_type=Path), help="Write plan.json and contexts.csv to this folder.")
@click.option("--force", is_flag=True, help="Overwrite a plan already in --out.")
@click.option("--no-baselines", is_flag=True, help="Skip pricing the baselines (faster).")
@command
def plan_command(workload: Path, catalog_ref: str, mode: str | None, solver: str, time_limit: float, gap: float,
                 as_json: bool, out: Path | None, force: bool, no_baselines: bool, quiet: bool) -> None:
    """Plan WORKLOAD (a workload YAML) on a catalog: the cheapest placement and fleet that meet the SLOs."""
    if out is not None and (out / "plan.json").exists() and not force:
        raise InputError(str(out / "plan.json"), "exists; pass --force to overwrite it")
    models = load_models()
    work = load_workload(workload, models)
    if mode is not None:
        import dataclasses
        work = dataclasses.replace(work, mode=mode)
    catalog = load_catalog(catalog_ref, models)
    if not quiet:
        click.echo(f"planning {len(work.contexts)} contexts on {catalog.name} ({len(catalog.offerings)} offerings, "
                   f"{len(catalog.tiers)} tiers) with {solver}...", err=True)
    result = make_plan(work, catalog, solver=solver, gap=gap, time_limit=time_limit, baselines=not no_baselines,
                       progress=(lambda message: None) if quiet else (lambda message: click.echo(message, err=True)))
    if out is not None:
        write_atomic(out / "contexts.csv", contexts_frame(result).to_csv(index=False))
        write_atomic(out / "plan.json", plan_text(result))
        if not quiet:
            click.echo(f"wrote {out / 'plan.json'} and {out / 'contexts.csv'}", err=True)
    click.echo(plan_text(result) if as_json else summary(result), nl=not as_json)
    if result["violations"]:
        sys.exit(1)


@main.command("evaluate")
@click.argument("plan_file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the re-priced totals as JSON.")
@command
def evaluate_command(plan_file: Path, as_json: bool, quiet: bool) -> None:
    """Re-price a saved plan with the analytical model alone (no solver) and check every constraint."""
    plan = load_yaml(plan_file)  # JSON is YAML; one safe loader with line numbers for syntax errors
    if not isinstance(plan, dict) or "inputs" not in plan:
        raise InputError(str(plan_file), "not a kvplan plan (no 'inputs' key)")
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

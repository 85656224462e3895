"""The `kvplan` command line. Exit codes: 0 ok, 1 infeasible or unsolved, 2 bad input."""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import click

from . import __version__
from .catalog import PRICINGS, bundled_dir, known_gpus, load_catalog, load_models
from .compare import compare
from .errors import Infeasible, InputError
from .fields import Section, load_yaml
from .plan import METHODS, SCALE_CLASSES, make_plan, reprice
from .report import comparison, contexts_frame, spreadsheet_safe, summary, table
from .skypilot import import_offerings, read_csvs
from .validate import sanity_warnings
from .workload import MODES, load_workload


def _setup_logging(quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    logger = logging.getLogger("kvplan")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.ERROR if quiet else logging.WARNING)


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
        except MemoryError:  # not a bug: the problem is too large for this machine (unsolved, exit 1)
            if debug:
                raise
            click.echo("out of memory: the problem does not fit in this machine's memory (at scale, --method scale "
                       "plans in far less)", err=True)
            sys.exit(1)
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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kvplan")
def main() -> None:
    """kvplan: plan where LLM KV caches live and which GPUs to rent, at least monthly cost under SLOs."""


@main.command("plan")
@click.argument("workload", type=click.Path(path_type=Path))
@click.option("--catalog", "catalog_ref", required=True,
              help="A bundled catalog's name (aws, gcp, azure, lambda, paper-2025) or a catalog YAML path.")
@click.option("--mode", type=click.Choice(MODES), help="Override the workload's mode.")
@click.option("--solver", type=click.Choice(["highs", "cbc"]), default="highs", show_default=True)
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), default=300.0, show_default=True,
              help="Seconds for the plan's solve (and as many for each baseline); on expiry the best plan found is returned with its gap.")
@click.option("--gap", type=click.FloatRange(min=0, max=1), default=1e-4, show_default=True,
              help="Relative optimality gap at which the solver stops.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON instead of the summary.")
@click.option("--out", type=click.Path(path_type=Path), help="Write plan.json and contexts.csv to this folder.")
@click.option("--force", is_flag=True, help="Overwrite a plan already in --out.")
@click.option("--no-baselines", is_flag=True, help="Skip pricing the baselines (faster).")
@click.option("--budget", type=click.FloatRange(min=0), help="USD per month; a plan above it is refused (exit 1) "
              "with what it would take.")
@click.option("--timing", is_flag=True, help="Record the solver's wall time in the plan (then plans of the same "
              "inputs are no longer byte-identical).")
@click.option("--method", type=click.Choice(METHODS), default="auto", show_default=True,
              help="exact: one program over every context class and option; scale: the engine for many contexts "
              f"(a per-context plan with a proven lower bound); auto: scale above {SCALE_CLASSES:,} context classes.")
@click.option("--scenarios", "scenarios_file", type=click.Path(path_type=Path),
              help="With --robust: the scenarios the one fleet must serve (see kvplan sweep).")
@click.option("--robust", help="expected | worst | cvar:ALPHA: one fleet for every scenario, placed per scenario, "
              "minimising the expected cost, the worst case or the CVaR; with each scenario's regret.")
@command
def plan_command(workload: Path, catalog_ref: str, mode: str | None, solver: str, time_limit: float, gap: float,
                 as_json: bool, out: Path | None, force: bool, no_baselines: bool, budget: float | None, timing: bool,
                 method: str, scenarios_file: Path | None, robust: str | None, quiet: bool) -> None:
    """Plan WORKLOAD (a workload YAML) on a catalog: the cheapest placement and fleet that meet the SLOs."""
    if (robust is None) != (scenarios_file is None):
        raise InputError("--robust/--scenarios", "give both: the scenarios and the robust objective")
    if robust is not None:
        from .cli_sweep import robust_plan_command

        robust_plan_command(workload, catalog_ref, scenarios_file, robust, solver, gap, time_limit, as_json, out,
                            force, quiet)
        return
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
                       progress=(lambda message: None) if quiet else (lambda message: click.echo(message, err=True)),
                       timing=timing, budget=budget, method=method)
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


# --- catalogs ------------------------------------------------------------------------------------------------

def _bundled_names() -> list[str]:
    return sorted(p.stem for p in bundled_dir().glob("*.yaml") if p.stem not in ("models", "gpus"))


@main.group("catalogs")
def catalogs_group() -> None:
    """List, show, validate and import provider catalogs."""


@catalogs_group.command("list")
@command
def catalogs_list(quiet: bool) -> None:
    """The bundled catalogs: name, provider, region, date, offerings and tiers."""
    models = load_models()
    rows = []
    for name in _bundled_names():
        c = load_catalog(name, models)
        rows.append([c.name, c.provider, c.region or "—", c.as_of, len(c.offerings), len(c.tiers)])
    click.echo(table(["name", "provider", "region", "as_of", "offerings", "tiers"], rows, indent=""))


def _figure(value, estimated: bool) -> str:
    if value is None:
        return "—"
    return (f"{value:,.0f}" if value >= 100 else f"{value:.4g}") + ("*" if estimated else "")


@catalogs_group.command("show")
@click.argument("name")
@click.option("--gpu", help="Only offerings with this GPU.")
@command
def catalogs_show(name: str, gpu: str | None, quiet: bool) -> None:
    """Offerings and storage tiers of catalog NAME (a bundled name or a path). * marks an estimated figure."""
    catalog = load_catalog(name, load_models())
    estimated = set(catalog.estimated)
    click.echo(f"{catalog.name}: {catalog.provider} {catalog.region}, as of {catalog.as_of}, {catalog.currency}\n")
    rows = []
    for i, o in enumerate(catalog.offerings):
        if gpu and o.gpu.name != gpu:
            continue
        est = {key for key in ("host_memory_gb", "local_nvme_gb", "local_nvme_gbps", "network_gbps",
                               "block_storage_gbps") if f"offerings[{i}].{key}" in estimated}
        p = o.prices
        rows.append([o.gpu.name, o.gpus, o.name, f"{o.gpu.hbm_gb:.0f}", _figure(o.host_memory_gb, "host_memory_gb" in est),
                     _figure(o.local_nvme_gb, "local_nvme_gb" in est), _figure(o.local_nvme_gbps, "local_nvme_gbps" in est),
                     _figure(o.network_gbps, "network_gbps" in est), _figure(o.block_storage_gbps, "block_storage_gbps" in est),
                     f"${p['on_demand']:,.3f}", *(f"${p[k]:,.3f}" if k in p else "—"
                                                  for k in ("spot", "reserved_1y", "reserved_3y"))])
    click.echo(table(["GPU", "QTY", "INSTANCE", "GPU_GB", "HOST_GB", "NVME_GB", "NVME_GB/s", "NET_Gbit/s",
                      "BLOCK_Gbit/s", "ON_DEMAND/h", "SPOT/h", "1Y/h", "3Y/h"], rows, indent=""))
    rows = []
    for i, t in enumerate(catalog.tiers):
        def est(key: str, i: int = i) -> bool:
            return f"tiers[{i}].{key}" in estimated
        if t.attached:
            rows.append([t.name, t.kind, "in instance", "—", "—", "—", "—", "path"])
            continue
        rows.append([t.name, t.kind, f"${t.price_gb_month:g}", f"${t.read_request_price:.3g}",
                     f"${t.write_request_price:.3g}", f"${t.retrieval_per_gb + t.transfer_per_gb:g}",
                     _figure(t.first_byte_latency_s * 1e3, est("first_byte_latency_s")),
                     _figure(t.read_gbps, est("read_gbps"))])
    click.echo("")
    click.echo(table(["TIER", "KIND", "$/GB-MONTH", "$/GET", "$/PUT", "$/GB READ", "FIRST_BYTE_ms", "READ_GB/s"],
                     rows, indent=""))
    if estimated:
        click.echo(f"\n* estimated ({len(estimated)} figures in this catalog)")


@catalogs_group.command("validate")
@click.argument("path")
@command
def catalogs_validate(path: str, quiet: bool) -> None:
    """Check a catalog: schema errors (exit 2), then sanity warnings (spot above on-demand, zero prices, GPU
    counts no cloud sells, storage priced per TB, missing sources)."""
    catalog = load_catalog(path, load_models())
    found = sanity_warnings(catalog)
    for line in found:
        click.echo(f"warning: {catalog.path}: {line}")
    click.echo(f"{catalog.path}: {len(catalog.offerings)} offerings, {len(catalog.tiers)} tiers, "
               f"{len(catalog.estimated)} estimated figures, {len(found)} warnings")


@catalogs_group.command("import-skypilot")
@click.argument("csvs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--provider", required=True, help="aws, gcp, azure, lambda, ... (gcp adds host and GPU rows).")
@click.option("--region", required=True, help="The region to import, as the CSV names it.")
@click.option("--name", help="Catalog name (default: PROVIDER-REGION).")
@click.option("--as-of", help="Date of the CSV's prices (default: today).")
@click.option("--out", type=click.Path(path_type=Path), help="Write the catalog YAML here (default: stdout).")
@command
def catalogs_import(csvs: tuple[Path, ...], provider: str, region: str, name: str | None, as_of: str | None,
                    out: Path | None, quiet: bool) -> None:
    """Turn SkyPilot catalog CSVs (vms.csv) into catalog offerings: the cheapest zone per instance type, joined
    with the known GPU specs. Unknown GPUs are reported and left out. Add tiers, or `extends:` a catalog."""
    import datetime

    import yaml

    frame = read_csvs(list(csvs))
    known = set(known_gpus())
    result = import_offerings(frame, region, known, provider)
    if not result.offerings:
        raise InputError(", ".join(map(str, csvs)), f"no priced GPU offering in region {region!r}")
    date = as_of or datetime.date.today().isoformat()
    for offering in result.offerings:
        offering["as_of"] = date
    catalog = {"name": name or f"{provider}-{region}", "provider": provider, "region": region, "currency": "USD",
               "as_of": date, "offerings": result.offerings, "tiers": []}
    text = yaml.safe_dump(catalog, sort_keys=False, width=120)
    for gpu, types in sorted(result.unknown_gpus.items()):
        click.echo(f"warning: unknown GPU {gpu!r} (not in catalogs/gpus.yaml), left out: {', '.join(types)}",
                   err=True)
    for instance_type in result.unpriced:
        click.echo(f"warning: {instance_type}: no usable price in {region}, left out", err=True)
    if not quiet:
        click.echo(f"{result.rows_read} rows read, {result.types_in_region} instance types in {region}, "
                   f"{len(result.offerings)} offerings written", err=True)
    if out is None:
        click.echo(text, nl=False)
    else:
        write_atomic(out, text)


# --- compare -------------------------------------------------------------------------------------------------

@main.command("compare")
@click.argument("workload", type=click.Path(path_type=Path))
@click.option("--catalog", "catalogs", multiple=True, help="A catalog to compare (repeat); default: all bundled.")
@click.option("--pricing", type=click.Choice(PRICINGS), help="Override the workload's pricing.")
@click.option("--solver", type=click.Choice(["highs", "cbc"]), default="highs", show_default=True)
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), default=300.0, show_default=True)
@click.option("--gap", type=click.FloatRange(min=0, max=1), default=1e-4, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print the rows as CSV.")
@command
def compare_command(workload: Path, catalogs: tuple[str, ...], pricing: str | None, solver: str, time_limit: float,
                    gap: float, as_json: bool, as_csv: bool, quiet: bool) -> None:
    """Plan WORKLOAD on several catalogs and print one table, cheapest first."""
    models = load_models()
    work = load_workload(workload, models)
    rows = compare(work, list(catalogs) or _bundled_names(), models, pricing=pricing, solver=solver, gap=gap,
                   time_limit=time_limit,
                   progress=(lambda message: None) if quiet else (lambda message: click.echo(message, err=True)))
    if as_json:
        click.echo(json.dumps(rows, indent=1))
    elif as_csv:
        import pandas as pd

        click.echo(pd.DataFrame(rows).to_csv(index=False), nl=False)
    else:
        click.echo(comparison(rows, work, pricing or work.pricing))


# --- forecast ------------------------------------------------------------------------------------------------

@main.command("forecast")
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
@click.option("--solver", type=click.Choice(["highs", "cbc"]), default="highs", show_default=True)
@click.option("--gap", type=click.FloatRange(min=0, max=1), default=1e-4, show_default=True)
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), default=600.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the forecast as JSON.")
@click.option("--out", type=click.Path(path_type=Path), help="Write forecast.json, months.csv, fleet.csv, "
              "placements.csv and cost.png here.")
@click.option("--force", is_flag=True, help="Overwrite a forecast already in --out.")
@command
def forecast_command(workload: Path, catalog_ref: str, months: int, growth: str | None, reuses_file: Path | None,
                     budget: str | None, commitments: str, spot_share: float, solver: str, gap: float,
                     time_limit: float, as_json: bool, out: Path | None, force: bool, quiet: bool) -> None:
    """Plan a horizon of months at once: fleet, commitments and placement per month, under an optional budget."""
    import pandas as pd

    from .forecast import COMMITMENTS, forecast, parse_budget, parse_growth
    from .report import forecast_chart, forecast_summary

    if out is not None and (out / "forecast.json").exists() and not force:
        raise InputError(str(out / "forecast.json"), "exists; pass --force to overwrite it")
    chosen = tuple(c.strip() for c in commitments.split(",") if c.strip())
    for c in chosen:
        if c not in COMMITMENTS:
            raise InputError(f"--commitments {commitments}", f"unknown commitment {c!r} (expected "
                             f"{', '.join(COMMITMENTS)})")
    models = load_models()
    work = load_workload(workload, models)
    catalog = load_catalog(catalog_ref, models)
    table = None
    if reuses_file is not None:
        from .fields import read_text

        table = pd.read_csv(io.StringIO(read_text(reuses_file)), dtype=str)
    result = forecast(work, catalog, months=months, growth=None if growth is None else parse_growth(growth),
                      table=table, table_file=str(reuses_file or ""), commitments=chosen, spot_share=spot_share,
                      budget=None if budget is None else parse_budget(budget), solver=solver, gap=gap,
                      time_limit=time_limit,
                      progress=(lambda message: None) if quiet else (lambda message: click.echo(message, err=True)))
    if out is not None:
        _write_forecast(out, result, forecast_chart)
    click.echo(json.dumps(result, indent=1) if as_json else forecast_summary(result, work, catalog.name))


def _write_forecast(out: Path, result: dict, chart) -> None:
    import pandas as pd

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


from .cli_workload import workload  # noqa: E402  (last: it imports `command` from this module)
main.add_command(workload)
from .cli_report import breakeven_command, explain_command, report  # noqa: E402
main.add_command(report)
main.add_command(breakeven_command)
main.add_command(explain_command)
from .cli_sweep import sweep_command  # noqa: E402
main.add_command(sweep_command)
from . import cli_calibrate  # noqa: E402,F401  (registers `kvplan calibrate` on main)

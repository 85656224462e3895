"""`kvplan report`, `kvplan explain` and `kvplan breakeven`: explaining a plan, and the paper's break-even."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from ..analyses import breakeven, explain
from ..inputs.catalog import load_catalog, load_models
from ..inputs.errors import InputError
from ..inputs.fields import load_yaml
from ..plan.files import saved_inputs, saved_placement
from ..plan.options import prepare
from ..plan.pricing import price
from ..present.charts import breakeven_chart
from ..present.report import markdown, parts, to_html
from ..present.summary import table
from .common import command, solver_options, write_atomic


def _load_plan(path: Path) -> dict:
    return load_yaml(path)  # JSON is YAML; one safe loader with line numbers for syntax errors


@click.command("report")
@click.argument("plan_file", type=click.Path(path_type=Path))
@click.option("--html", "html_path", type=click.Path(path_type=Path), help="Write a self-contained HTML report here.")
@click.option("--md", "md_path", type=click.Path(path_type=Path), help="Write the same numbers as Markdown here.")
@command
def report_command(plan_file: Path, html_path: Path | None, md_path: Path | None, quiet: bool) -> None:
    """Turn a saved plan (plan.json) into a report: charts and tables in HTML, tables in Markdown."""
    if html_path is None and md_path is None:
        raise InputError("kvplan report", "name at least one of --html FILE and --md FILE")
    plan = _load_plan(plan_file)
    workload, catalog = saved_inputs(plan, str(plan_file))
    sections = parts(plan, workload, catalog)
    title = f"kvplan report: {workload.name or plan_file.stem} on {catalog.name}"
    for path, text in ((html_path, to_html(sections, title) if html_path else ""),
                       (md_path, markdown(sections) if md_path else "")):
        if path is not None:
            write_atomic(path, text)
            if not quiet:
                click.echo(f"wrote {path}", err=True)


@click.command("breakeven")
@click.option("--model", "model_name", required=True, help="A model card's name (catalogs/models.yaml).")
@click.option("--catalog", "catalog_ref", required=True, help="A bundled catalog's name or a catalog YAML path.")
@click.option("--tokens", default="1000..100000", show_default=True,
              help="Context lengths: LOW..HIGH (1-2-5 steps), LOW..HIGH:N (N log-spaced) or a comma list.")
@click.option("--offering", help="The offering to price GPU time on (default: the cheapest to recompute on).")
@click.option("--prompt-tokens", type=click.IntRange(min=0), default=100, show_default=True)
@click.option("--output-tokens", type=click.IntRange(min=0), default=50, show_default=True)
@click.option("--ttft-slo", type=click.FloatRange(min=0, min_open=True), help="Mark options over this TTFT (s).")
@click.option("--reuses-per-hour", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="The reuse rate of the cost-ratio column (recompute cost / stored cost).")
@click.option("--hours-per-month", type=click.FloatRange(min=0, min_open=True), default=730.0, show_default=True,
              help="The period storage is paid for (the paper's T).")
@click.option("--pricing", default="on_demand", show_default=True, help="The catalog price to use.")
@click.option("--delay", is_flag=True, help="Add each option's end-to-end delay per request (TTFT + output tokens "
              "× TPOT) and one context's cost over the period at --reuses-per-hour, stored and recomputed.")
@click.option("--plot", type=click.Path(path_type=Path), help="Write the break-even chart here (PNG or SVG); with "
              "--delay, beside the delay and cost per length.")
@click.option("--csv", "as_csv", is_flag=True, help="Print the table as CSV.")
@command
def breakeven_command(model_name: str, catalog_ref: str, tokens: str, offering: str | None, prompt_tokens: int,
                      output_tokens: int, ttft_slo: float | None, reuses_per_hour: float, hours_per_month: float,
                      pricing: str, delay: bool, plot: Path | None, as_csv: bool, quiet: bool) -> None:
    """For each storage tier: the reuse rate above which storing a context's KV cache beats recomputing it
    (with --delay: and each option's end-to-end delay and cost, by context length)."""
    models = load_models()
    if model_name not in models:
        raise InputError("--model", f"unknown model {model_name!r} (known: {', '.join(sorted(models))})")
    card = models[model_name]
    catalog = load_catalog(catalog_ref, models)
    try:
        lengths = breakeven.parse_range(tokens)
    except ValueError as exc:
        raise InputError("--tokens", str(exc)) from None
    setting = breakeven.Setting(prompt_tokens, output_tokens, 1.0, ttft_slo or np.inf, np.inf, hours_per_month,
                                pricing)
    names = [o.name for o in catalog.offerings]
    if offering is None:
        g = breakeven.default_offering(card, catalog, setting)
        if g < 0:
            raise InputError(f"--catalog {catalog_ref}", f"no offering can serve {card.name}")
    elif offering not in names:
        raise InputError("--offering", f"unknown offering {offering!r} in {catalog.name}")
    else:
        g = names.index(offering)
    frame = breakeven.breakeven_table(card, catalog, lengths, g, setting, reuses_per_hour, delay)
    if frame.empty:
        raise InputError("--offering", f"{names[g]} cannot serve {card.name} (or reach any tier)")
    if as_csv:
        click.echo(frame.to_csv(index=False), nl=False)
    else:
        click.echo(f"kvplan breakeven: {card.name} on {names[g]} ({catalog.name}, {pricing}), GPU time paid per use; "
                   f"prompt {prompt_tokens}, output {output_tokens} tokens; storage paid over {hours_per_month:g} h\n")
        rows = [[f"{r.tokens:,}", r.tier, "never" if not np.isfinite(r.breakeven_per_hour)
                 else f"{r.breakeven_per_hour:.4g}", f"{r.ttft_stored_s:.3f}", f"{r.ttft_recompute_s:.3f}",
                 "yes" if r.within_slo else "no", f"{r.cost_ratio:.2f}"] for r in frame.itertuples()]
        headers = ["tokens", "tier", "break-even reuses/h", "TTFT stored (s)", "TTFT recompute (s)", "within SLO",
                   f"cost ratio at {reuses_per_hour:g}/h"]
        if delay:
            for row, r in zip(rows, frame.itertuples()):
                row += [f"{r.delay_stored_s:.3f}", f"{r.delay_recompute_s:.3f}", f"{r.delay_ratio:.2f}",
                        f"${r.usd_per_month_stored:.6f}", f"${r.usd_per_month_recompute:.6f}"]
            headers += ["delay stored (s)", "delay recompute (s)", "delay ratio", "USD stored", "USD recompute"]
        click.echo(table(headers, rows, indent=""))
        if delay:
            click.echo(f"\ndelay: TTFT + {output_tokens} output tokens × TPOT, per request; USD: one context over "
                       f"{hours_per_month:g} h at {reuses_per_hour:g} reuses/h ({reuses_per_hour * hours_per_month:g} "
                       f"reuses), cache built once")
    if plot is not None:
        breakeven_chart(frame, f"{card.name} on {names[g]} ({catalog.name})", plot)
        if not quiet:
            click.echo(f"wrote {plot}", err=True)


@click.command("explain")
@click.argument("plan_file", type=click.Path(path_type=Path))
@click.option("--context", "context_id", help="Explain this context's choice (its id).")
@click.option("--capacity", is_flag=True, help="Explain the fleet's capacities: use, and what one instance more "
              "or fewer would change.")
@click.option("--resolve", type=click.IntRange(min=0), default=0, show_default=True,
              help="With --context: re-solve the plan with the context forced onto each of its N cheapest other "
              "options. With --capacity: any N > 0 re-solves the placement with one instance more and fewer.")
@click.option("--all", "show_all", is_flag=True, help="List every option, those outside SLO included.")
@solver_options(time_limit=120.0, time_limit_help="Seconds for each re-solve.", gap=False)
@click.option("--json", "as_json", is_flag=True, help="Print the explanation as JSON.")
@command
def explain_command(plan_file: Path, context_id: str | None, capacity: bool, resolve: int, show_all: bool,
                    solver: str, time_limit: float, as_json: bool, quiet: bool) -> None:
    """Explain a saved plan: one context's options and choice (--context ID), or its capacities (--capacity)."""
    if (context_id is None) == (not capacity):
        raise InputError("kvplan explain", "name one of --context ID and --capacity")
    plan = _load_plan(plan_file)
    model = prepare(*saved_inputs(plan, str(plan_file)))
    placement = saved_placement(plan, str(plan_file), model)
    priced = price(model, placement)
    if capacity:
        frame = explain.capacity(model, placement, priced, resolve > 0, solver, time_limit)
        if as_json:
            click.echo(frame.to_json(orient="records", indent=1))
            return
        click.echo(_capacity_text(frame, priced.total))
        return
    result = explain.context(model, placement, priced, context_id)
    frame = result["options"]
    if resolve:
        candidates = frame[(frame["verdict"] == "ok") & ~frame["chosen"]].sort_values(
            ["usd_margin", "offering", "tier"]).head(resolve)
        frame["resolved_total_usd"] = None
        for index, row in candidates.iterrows():
            if not quiet:
                click.echo(f"re-solving with {context_id} on {row['tier']} / {row['offering']}...", err=True)
            frame.loc[index, "resolved_total_usd"] = explain.resolved_total(
                model, context_id, row["offering"], row["tier"], solver=solver, time_limit=time_limit)
    if as_json:
        out = {**result, "plan_total_usd": priced.total, "options": frame.to_dict(orient="records")}
        click.echo(json.dumps(out, indent=1, default=_json_default))
        return
    click.echo(_context_text(result, frame, priced.total, show_all))


def _json_default(value):
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    raise TypeError(type(value).__name__)


def _context_text(result: dict, frame, total: float, show_all: bool) -> str:
    chosen, flip = result["chosen"], result["flip"]
    slo = f"TTFT SLO {result['ttft_slo_s']:g} s" + (f", TPOT SLO {result['tpot_slo_s'] * 1000:g} ms"
                                                     if np.isfinite(result["tpot_slo_s"]) else "")
    lines = [f"kvplan explain: context {result['context']} ({result['tokens']:,} tokens, "
             f"{_reuse_rate(result['reuses_per_month'])} reuses/month, {slo})", "",
             f"Chosen: {chosen['tier']} on {chosen['offering']}: ${chosen['usd_margin']:,.4f} a month at the margin "
             f"(${chosen['usd_in_plan']:,.4f} in the plan, with its share of the fleet)",
             f"Why:    {result['why']}"]
    if flip is None:
        lines.append("Flip:   no reuse rate (within a factor of 10,000) makes another option on this fleet cheaper "
                     "at the margin")
    else:
        direction = "rise above" if flip["reuses_per_month"] > result["reuses_per_month"] else "fall below"
        factor = flip["reuses_per_month"] / result["reuses_per_month"] if result["reuses_per_month"] else None
        change = "" if factor is None else f" (×{factor:,.3g})" if factor >= 2 else f" ({factor - 1:+.1%})"
        lines.append(f"Flip:   reuse would have to {direction} {_reuse_rate(flip['reuses_per_month'])}/month{change} for "
                     f"{flip['to']['tier']} on {flip['to']['offering']} to cost less at the margin")
    shown = frame if show_all else frame[frame["verdict"] == "ok"]
    shown = shown.assign(blocked=shown["needs"] != "").sort_values(["blocked", "usd_margin", "offering", "tier"],
                                                                    na_position="last")
    resolved = "resolved_total_usd" in frame
    held = bool((frame["load_gpu_s"] > 0).any())  # loads that hold the GPU (load_blocks_gpu) count as GPU time
    rows = []
    for r in shown.itertuples():
        row = [r.offering, r.tp, r.tier, f"{r.ttft_s:.3f}", *([f"{r.load_gpu_s:.3f}"] if held else []), r.verdict,
               f"${r.usd_direct:,.4f}", _money(r.usd_full_gpu), _money(r.usd_margin), r.needs,
               "<- chosen" if r.chosen else ""]
        if resolved:
            value = r.resolved_total_usd
            row.append("" if value is None or pd_isna(value) else f"${value:,.2f} ({value - total:+,.2f})")
        rows.append(row)
    headers = ["offering", "tp", "tier", "TTFT (s)", *(["load GPU-s"] if held else []), "verdict", "direct",
               "GPU at full price", "at the margin", "needs", ""]
    if resolved:
        headers.append("plan total if forced")
    hidden = len(frame) - len(shown)
    lines += ["", f"Options{'' if show_all else ' within SLO'} (USD a month. direct: storage, network, requests"
              "; GPU at full price: plus its GPU time at the instance's price per unit of GPU "
              "capacity; at the margin: plus GPU time only where the rented GPUs have no room for it):",
              table(headers, rows)]
    if hidden:
        lines.append(f"  ({hidden} options outside SLO or not available: --all lists them)")
    if held:
        lines.append("  load GPU-s: the GPU-seconds a request's cache load holds the replica's GPUs (load_blocks_gpu: "
                     "a serial pipeline), counted in its GPU time")
    return "\n".join(lines)


def _reuse_rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _money(value) -> str:
    return "—" if value is None or pd_isna(value) else f"${value:,.4f}"


def pd_isna(value) -> bool:
    import pandas as pd

    return bool(pd.isna(value))


def _capacity_text(frame, total: float) -> str:
    if frame.empty:
        return "kvplan explain: the plan rents no instances (per_use mode, or nothing to serve)"
    rows = []
    for r in frame.itertuples():
        more = "" if r.one_more_usd is None or pd_isna(r.one_more_usd) else f"{r.one_more_usd:+,.2f}"
        fewer = "" if r.one_fewer_usd is None or pd_isna(r.one_fewer_usd) else f"{r.one_fewer_usd:+,.2f}"
        if "one_fewer_usd" in frame and r.instances > 0 and fewer == "" and r.one_more_usd is not None \
                and not pd_isna(r.one_more_usd):
            fewer = "no plan"
        rows.append([r.offering, r.instances, r.resource, f"{r.used:,.4g}", f"{r.capacity:,.4g}", f"{r.share:.1%}",
                     "yes" if r.binding else "", f"${r.instance_usd:,.2f}", more, fewer])
    text = table(["offering", "instances", "resource", "used", "capacity", "share", "binding", "instance/month",
                  "total if one more", "total if one fewer"], rows, indent="")
    note = ("\n(total if one more / fewer: the change in the plan's monthly total when the placement is re-solved "
            "on the fleet with one instance of that offering more or fewer, HBM-cache states kept; the instance's "
            "price included. A placement saving larger than the instance's price would mean one more pays off.)")
    return f"kvplan explain: capacities of the plan (${total:,.2f} a month)\n\n" + text + note

"""`kvplan report`, `kvplan explain` and `kvplan breakeven`: explaining a plan, and the paper's break-even."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from .catalog import load_catalog, load_models
from .cli import command, write_atomic
from .errors import InputError
from .fields import load_yaml
from .report import table


def _load_plan(path: Path) -> dict:
    return load_yaml(path)  # JSON is YAML; one safe loader with line numbers for syntax errors


@click.command("report")
@click.argument("plan_file", type=click.Path(path_type=Path))
@click.option("--html", "html_path", type=click.Path(path_type=Path), help="Write a self-contained HTML report here.")
@click.option("--md", "md_path", type=click.Path(path_type=Path), help="Write the same numbers as Markdown here.")
@command
def report(plan_file: Path, html_path: Path | None, md_path: Path | None, quiet: bool) -> None:
    """Turn a saved plan (plan.json) into a report: charts and tables in HTML, tables in Markdown."""
    from .document import markdown, parts, to_html
    from .plan import saved_inputs

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
@click.option("--plot", type=click.Path(path_type=Path), help="Write the break-even chart here (PNG or SVG).")
@click.option("--csv", "as_csv", is_flag=True, help="Print the table as CSV.")
@command
def breakeven_command(model_name: str, catalog_ref: str, tokens: str, offering: str | None, prompt_tokens: int,
                      output_tokens: int, ttft_slo: float | None, reuses_per_hour: float, hours_per_month: float,
                      pricing: str, plot: Path | None, as_csv: bool, quiet: bool) -> None:
    """For each storage tier: the reuse rate above which storing a context's KV cache beats recomputing it."""
    from . import breakeven

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
    frame = breakeven.table(card, catalog, lengths, g, setting, reuses_per_hour)
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
        click.echo(table(["tokens", "tier", "break-even reuses/h", "TTFT stored (s)", "TTFT recompute (s)",
                          "within SLO", f"cost ratio at {reuses_per_hour:g}/h"], rows, indent=""))
    if plot is not None:
        _breakeven_chart(frame, f"{card.name} on {names[g]} ({catalog.name})", plot)
        if not quiet:
            click.echo(f"wrote {plot}", err=True)


def _breakeven_chart(frame, title: str, path: Path) -> None:
    """Break-even reuse rate per tier against context length (log-log), tiers that never break even left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for tier, group in frame.groupby("tier", sort=False):
        finite = group[np.isfinite(group["breakeven_per_hour"]) & (group["breakeven_per_hour"] > 0)]
        if len(finite):
            ax.plot(finite["tokens"], finite["breakeven_per_hour"], marker="o", markersize=3, label=tier)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("context tokens")
    ax.set_ylabel("break-even reuses per hour")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None} if path.suffix.lower() == ".png" else {"Date": None})
    plt.close(fig)

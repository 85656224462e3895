"""`kvplan workload`: workloads from request traces, reuse forecasts from history."""

from __future__ import annotations

import io
import shlex
from pathlib import Path

import click
import pandas as pd
import yaml

from ..inputs.catalog import ModelCard, load_catalog, load_models
from ..inputs.errors import InputError, warn
from ..inputs.fields import read_text
from ..inputs.fromtrace import WINDOW_S, TraceWorkload, azure_workload, mooncake_workload
from ..inputs.history import METHODS, forecast_reuses, read_history
from ..inputs.traces import read_azure, read_mooncake
from ..inputs.workload import MONTHLY, default_name, load_workload
from ..plan.runner import unmet_slo
from .common import command, write_atomic


@click.group("workload", context_settings={"help_option_names": ["-h", "--help"]})
def workload_group() -> None:
    """Build workloads from request traces and reuse forecasts from history."""


@workload_group.command("from-trace")
@click.argument("trace_format", metavar="FORMAT", type=click.Choice(["mooncake", "azure"]))
@click.argument("trace", type=click.Path(path_type=Path))
@click.option("--model", required=True, help="The model served: a card in catalogs/models.yaml.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("workload.yaml"), show_default=True,
              help="The workload YAML; its contexts go to a CSV beside it (NAME.contexts.csv).")
@click.option("--force", is_flag=True, help="Overwrite an existing workload.")
@click.option("--name", help="The workload's name (default: as kvplan names a workload file).")
@click.option("--slo-ttft", type=click.FloatRange(min=0, min_open=True), default=3.0, show_default=True,
              help="Seconds to first token.")
@click.option("--slo-tpot", type=click.FloatRange(min=0, min_open=True), help="Seconds per output token.")
@click.option("--hours-per-month", type=click.FloatRange(min=0, min_open=True), default=730.0, show_default=True,
              help="The trace's rates are scaled from its span to this many hours.")
@click.option("--window", type=click.FloatRange(min=0, min_open=True), default=WINDOW_S, show_default=True,
              help="Seconds per window for peak-to-mean: the busiest window's requests over the mean.")
@click.option("--min-reuses", type=click.IntRange(min=1), default=1, show_default=True,
              help="mooncake: a prefix is a context when at least this many later requests read it; the "
              "readers of rarer ones become background traffic.")
@click.option("--writes-per-month", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="mooncake: how often each context's cache is written (built).")
@click.option("--limit", type=click.IntRange(min=1), help="Read only the trace's first N requests.")
@click.option("--catalog", "catalog_ref", help="Say how many requests could meet the SLO on none of this catalog's "
              "offerings (a bundled name or a path).")
@command
def from_trace(trace_format: str, trace: Path, model: str, out: Path, force: bool, name: str | None,
               slo_ttft: float, slo_tpot: float | None, hours_per_month: float, window: float, min_reuses: int,
               writes_per_month: float, limit: int | None, catalog_ref: str | None, quiet: bool) -> None:
    """A request TRACE as a workload that `kvplan plan` runs as is.

    FORMAT mooncake: JSON lines with 512-token prefix hashes (hash_ids), whose shared prefixes become contexts;
    azure: CSV of arrivals and lengths, background traffic alone. Prints a summary."""
    contexts_path = out.with_name(f"{out.stem}.contexts.csv")
    for path in (out, contexts_path):
        if path.exists() and not force:
            raise InputError(str(path), "exists; pass --force to overwrite it")
    models = load_models()
    if model not in models:
        raise InputError(f"--model {model}", f"unknown model (known: {', '.join(sorted(models))})")
    card = models[model]
    if trace_format == "mooncake":
        frame = read_mooncake(trace)
        built = mooncake_workload(frame.head(limit) if limit else frame, card, hours_per_month=hours_per_month,
                                  min_reuses=min_reuses, writes_per_month=writes_per_month, window_s=window,
                                  where=str(trace))
    else:
        frame = read_azure(trace)
        built = azure_workload(frame.head(limit) if limit else frame, card, hours_per_month=hours_per_month,
                               window_s=window, where=str(trace))
    options = [f"--model {model}", f"--slo-ttft {slo_ttft:g}"]
    options += [f"--slo-tpot {slo_tpot:g}"] if slo_tpot is not None else []
    options += [f"--hours-per-month {hours_per_month:g}"] if hours_per_month != 730 else []
    options += [f"--window {window:g}"] if window != WINDOW_S else []
    if trace_format == "mooncake":
        options += [f"--min-reuses {min_reuses}"] if min_reuses != 1 else []
        options += [f"--writes-per-month {writes_per_month:g}"] if writes_per_month != 1 else []
    options += [f"--limit {limit}"] if limit else []
    options += [f"--name {shlex.quote(name)}"] if name else []
    made_by = f"kvplan workload from-trace {trace_format} {trace.name} {' '.join(options)}"
    lines = _trace_summary(trace_format, trace.name, built, card)
    settings = {"name": name or default_name(str(out)), "model": model, "mode": "provisioned",
                "hours_per_month": hours_per_month, "peak_to_mean": round(built.peak_to_mean, 3),
                "pricing": "on_demand", "slo": {"ttft_s": slo_ttft, **({"tpot_s": slo_tpot} if slo_tpot else {})}}
    if built.traffic is not None:
        settings["traffic"] = dict(built.traffic.__dict__)
    if not built.contexts.empty:
        settings["contexts_file"] = contexts_path.name
        write_atomic(contexts_path, built.contexts.to_csv(index=False))
    header = "".join(f"# {line}\n" for line in [f"Made by: {made_by}", *lines])
    write_atomic(out, header + yaml.safe_dump(settings, sort_keys=False, default_flow_style=None, width=120))
    written = load_workload(out, models)  # what `kvplan plan` reads: a bug here must not pass unnoticed
    if catalog_ref is not None:
        catalog = load_catalog(catalog_ref, models)
        unmet = unmet_slo(written, catalog)
        lines.append(f"SLO on {catalog.name}: every context can meet it on some offering" if not unmet.contexts else
                     f"SLO on {catalog.name}: {_count(unmet.contexts, 'context')} ({unmet.requests_per_month:,.0f} "
                     f"requests a month) cannot meet it on any offering, at any tensor-parallel size; furthest off: "
                     f"{unmet.worst} (plan with --slo-policy best_effort, or loosen --slo-ttft)")
    click.echo("\n".join(lines))
    if not quiet:
        written = [str(out)] + ([str(contexts_path)] if not built.contexts.empty else [])
        click.echo(f"wrote {' and '.join(written)}", err=True)


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 'es' if noun.endswith('x') else 's'}"


def _trace_summary(trace_format: str, trace_name: str, built: TraceWorkload, card: ModelCard) -> list[str]:
    kept = built.requests - built.dropped
    dropped = (f"{built.dropped:,} dropped (input and output above {card.name}'s max_context of "
               f"{card.max_context:,})"
               if built.dropped else "none above the model's max_context")
    lines = [f"{trace_format} trace {trace_name}: {built.requests:,} requests over {built.span_s:,.0f} s "
             f"({built.span_s / 3600:.2f} h); {dropped}",
             f"per month: {built.spans_per_month:,.3f} times the trace ({kept:,} requests -> "
             f"{kept * built.spans_per_month:,.0f} a month)"]
    if built.reusable_share is None:
        lines.append("contexts: none (this trace has no reuse signal); reusable prefill tokens: unknown")
    else:
        lines.append(f"contexts: {_count(len(built.contexts), 'prefix')} that an earlier request sent, read by "
                     f"{_count(built.reads, 'request')}; reusable prefill tokens: {built.reusable_share:.1%}")
    t = built.traffic
    lines.append("background: none" if t is None else
                 f"background: {_count(kept - built.reads, 'request')} -> {t.requests_per_month:,.0f} a month, "
                 f"mean prompt {t.prompt_tokens:,} and output {t.output_tokens:,} tokens")
    lines.append(f"peak-to-mean: {built.peak_to_mean:.2f} (the busiest {built.window_s:g} s window over the mean)")
    return lines


@workload_group.command("forecast")
@click.argument("history_file", metavar="HISTORY", type=click.Path(path_type=Path))
@click.option("--months", type=click.IntRange(1, 120), default=12, show_default=True, help="Months to forecast.")
@click.option("--choose", type=click.Choice(["overall", "per-context"]), default="overall", show_default=True,
              help="One method for every context, or each context's own best (fits its noise more easily).")
@click.option("--contexts", "contexts_file", type=click.Path(path_type=Path),
              help="A contexts CSV to add the reuses_m1... columns to (they replace any it has).")
@click.option("--out", type=click.Path(path_type=Path), help="Write the CSV here (default: stdout, with the "
              "summary on stderr).")
@click.option("--force", is_flag=True, help="Overwrite --out.")
@command
def workload_forecast_command(history_file: Path, months: int, choose: str, contexts_file: Path | None, out: Path | None,
                     force: bool, quiet: bool) -> None:
    """Forecast monthly reuses from a HISTORY of them.

    HISTORY is a CSV of month, id, reuses. Each context's next months are forecast by the method a backtest on
    the history finds best, as the reuses_m1... columns `kvplan forecast` reads."""
    if out is not None and out.exists() and not force:
        raise InputError(str(out), "exists; pass --force to overwrite it")
    history = read_history(history_file)
    result = forecast_reuses(history, months, per_context=choose == "per-context")
    table = result.reuses if contexts_file is None else _merge(contexts_file, result.reuses.drop(columns="method"))
    lines = [f"history {history_file.name}: {_count(len(history.ids), 'context')}, "
             f"{_count(len(history.months), 'month')} ({history.months[0]} to {history.months[-1]})",
             f"backtest: forecasts 1 to {months} months ahead from every month with {result.min_history} or more "
             f"months of history before it, {result.points:,} points",
             "backtest error (WAPE = sum |forecast - actual| / sum actual):"]
    for method in METHODS:
        error = result.errors.get(method)
        lines.append(f"  {method:<15} " + ("not tested (too short a history)" if error is None else f"{error:.2%}"))
    counts = result.reuses["method"].value_counts()
    chosen = ", ".join(f"{m} for {_count(counts[m], 'context')}" for m in METHODS if m in counts)
    caveat = ", optimistic: chosen on the same points" if choose == "per-context" else ""
    lines.append(f"chosen {'per context' if choose == 'per-context' else 'overall'}: {chosen} (backtest WAPE "
                 f"{result.chosen_error:.2%}{caveat})")
    if result.too_short:
        lines.append(f"{_count(result.too_short, 'context')} with too short a history for the chosen method: "
                     "forecast by their last value")
    text = table.to_csv(index=False)  # ids as written: this is kvplan's input, not a report
    if out is None:
        click.echo(text, nl=False)
        if not quiet:
            click.echo("\n".join(lines), err=True)
    else:
        write_atomic(out, text)
        click.echo("\n".join(lines))
        if not quiet:
            click.echo(f"wrote {out}", err=True)


def _merge(contexts_file: Path, forecasts: pd.DataFrame) -> pd.DataFrame:
    """The contexts CSV, cells as written, with its monthly columns replaced by the forecasts; a context without
    history keeps its reuses_per_month every month."""
    contexts = pd.read_csv(io.StringIO(read_text(contexts_file)), dtype=str, keep_default_na=False)
    if "id" not in contexts.columns or "reuses_per_month" not in contexts.columns:
        raise InputError(str(contexts_file), "not a contexts CSV (expected id, tokens, reuses_per_month, ...)")
    contexts = contexts.drop(columns=[c for c in contexts.columns if MONTHLY.match(c)])
    ids = contexts["id"].str.strip()
    unknown = sorted(set(forecasts["id"]) - set(ids))
    if unknown:
        warn(str(contexts_file), f"{len(unknown)} context(s) of the history are not in it, left out "
             f"(first: {unknown[0]!r})")
    monthly = forecasts.set_index("id").reindex(ids)
    without = monthly.isna().all(axis=1).to_numpy()
    if without.any():
        warn(str(contexts_file), f"{int(without.sum())} context(s) have no history and keep reuses_per_month "
             f"every month (first: {ids[without].iloc[0]!r})")
    steady = pd.to_numeric(contexts["reuses_per_month"], errors="coerce").to_numpy()
    for column in monthly.columns:
        contexts[column] = monthly[column].fillna(pd.Series(steady, index=monthly.index)).to_numpy()
    return contexts

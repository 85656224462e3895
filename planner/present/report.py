"""A saved plan as a document for the people who pay for it: self-contained HTML with charts, and Markdown with
the same numbers as tables.

Every section is built once, as (title, text, table, chart); both renderings come from those sections, so the
two carry the same figures. Charts are matplotlib figures inlined as SVG (no scripts, no network, text kept as
text), drawn deterministically (fixed hash salt, no date).
"""

from __future__ import annotations

import html
import io
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..analyses import breakeven
from ..inputs.catalog import Catalog
from ..inputs.workload import Workload
from .summary import usd

MAX_POINTS = 20_000     # TTFT chart: up to this many distinct (TTFT, SLO, tier) points, else a 2-D histogram


@dataclass
class Part:
    """One section: a heading, a sentence, a table (headers, rows of strings) and a chart (SVG), any of them."""
    key: str
    title: str
    text: str = ""
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    chart: str = ""          # inline SVG
    caption: str = ""


def parts(plan: dict, workload: Workload, catalog: Catalog) -> list[Part]:
    """The document's sections, from a plan and the inputs it carries."""
    import matplotlib

    matplotlib.use("Agg")
    with matplotlib.rc_context({"svg.hashsalt": "kvplan", "svg.fonttype": "none", "font.size": 9}):
        return [_summary(plan), _baselines(plan), _components(plan), _fleet(plan), _tiers(plan), _ttft(plan),
                _breakeven(plan, workload, catalog)]


def _svg(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def _new_figure(width: float = 7.0, height: float = 3.2):
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def _pair(names: list[str], left_values, left_label: str, right_values, right_label: str, colors: tuple[str, str]):
    """Two horizontal bar charts side by side over the same names."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, sharey=True, figsize=(7.0, 0.7 + 0.35 * len(names)))
    y = np.arange(len(names))
    left.barh(y, left_values, color=colors[0])
    left.set_yticks(y, names)
    left.invert_yaxis()
    left.set_xlabel(left_label)
    right.barh(y, right_values, color=colors[1])
    right.set_xlabel(right_label)
    fig.tight_layout()
    return _svg(fig)


def _summary(plan: dict) -> Part:
    cat, solver = plan["catalog"], plan["solver"]
    gap = "—" if solver["gap"] is None else f"{solver['gap']:.4%}"
    text = (f"Workload {plan['inputs']['workload']['name']}: model {plan['model']} on {cat['name']} "
            f"({cat['region'] or cat['provider']}, prices as of {cat['as_of']}), {plan['mode']}, {plan['pricing']} "
            f"pricing, {plan['hours_per_month']:g} hours a month, {len(plan['contexts']):,} contexts.")
    rows = [["total per month", usd(plan["total_usd"])],
            ["solver", f"{solver['name']}: {solver['status']}"],
            ["lower bound", usd(solver["lower_bound_usd"])],
            ["gap", gap]]
    if plan["violations"]:
        rows.append(["violations", "; ".join(plan["violations"])])
    return Part("summary", "Plan", text, ["figure", "value"], rows)


def _baselines(plan: dict) -> Part:
    names, totals, rows = ["this plan"], [plan["total_usd"]], []
    for name, b in plan["baselines"].items():
        if b["feasible"]:
            ratio = b.get("savings_ratio")
            rows.append([name, usd(b["total_usd"]), usd(b["savings_usd"]), "—" if ratio is None else f"{ratio:.2f}x"])
            names.append(name)
            totals.append(b["total_usd"])
        else:
            rows.append([name, "infeasible", b.get("reason", ""), ""])
    part = Part("baselines", "Total against each baseline",
                "Each baseline is the cheapest plan under its own restriction (MODEL.md §8)." if rows else
                "The plan was made without baselines (--no-baselines).",
                ["baseline", "USD/month", "plan saves", "baseline/plan"] if rows else [], rows)
    if rows:
        fig, ax = _new_figure(7.0, 0.5 + 0.32 * len(names))
        y = np.arange(len(names))
        ax.barh(y, totals, color=["#1b7837"] + ["#9e9e9e"] * (len(names) - 1))
        ax.set_yticks(y, names)
        ax.invert_yaxis()
        ax.set_xlabel("USD per month")
        for i, value in enumerate(totals):
            ax.annotate(usd(value), (value, i), xytext=(3, 0), textcoords="offset points", va="center")
        ax.margins(x=0.25)
        fig.tight_layout()
        part.chart, part.caption = _svg(fig), "Monthly total of the plan and of each feasible baseline."
    return part


def _components(plan: dict) -> Part:
    total = plan["total_usd"]
    items = list(plan["breakdown_usd"].items())
    rows = [[k, usd(v), f"{v / total:.1%}" if total else "—"] for k, v in items]
    rows.append(["total", usd(total), "100.0%" if total else "—"])
    fig, ax = _new_figure(7.0, 1.8)
    ax.barh(np.arange(len(items)), [v for _, v in items], color="#2166ac")
    ax.set_yticks(np.arange(len(items)), [k for k, _ in items])
    ax.invert_yaxis()
    ax.set_xlabel("USD per month")
    for i, (_, value) in enumerate(items):
        ax.annotate(usd(value), (value, i), xytext=(3, 0), textcoords="offset points", va="center")
    ax.margins(x=0.25)
    fig.tight_layout()
    return Part("components", "Cost by component", "The lines add up to the plan's total.",
                ["component", "USD/month", "share"], rows, _svg(fig), "Monthly cost by component.")


def _fleet(plan: dict) -> Part:
    rows = []
    for r in plan["fleet"]:
        util = r.get("gpu_utilization_peak")
        rows.append([r["offering"], str(r["instances"]), f"{r['gpus']} (tp {r['tp']})", f"${r['price_per_hour']:,.4g}",
                     "yes" if r["hbm_cache"] else "no", f"{r['contexts']:,}", f"{r['background_share']:.0%}",
                     "—" if util is None else f"{util:.0%}", usd(r["usd"])])
    part = Part("fleet", "Fleet by offering",
                "Instances rented for the month, the contexts each offering serves and its peak GPU utilisation."
                if plan["mode"] == "provisioned" else "GPU time is paid per use (per_use mode): no instances.",
                ["offering", "instances", "GPUs", "$/h", "HBM cache", "contexts", "background", "peak util",
                 "USD/month"], rows)
    if plan["fleet"]:
        part.chart = _pair([r["offering"] + (f" tp{r['tp']}" if r["gpus"] > 1 else "") for r in plan["fleet"]], [r["instances"] for r in plan["fleet"]],
                           "instances", [r["usd"] for r in plan["fleet"]], "USD per month", ("#762a83", "#2166ac"))
        part.caption = "Instances and monthly cost per offering."
    return part


def _tiers(plan: dict) -> Part:
    rows = [[r["tier"], r["kind"], f"{r['contexts']:,}", f"{r['gb']:,.1f}", usd(r["usd"])]
            + ([str(r["nodes"])] if "nodes" in r else [""]) for r in plan["tiers"]]
    chart = _pair([r["tier"] for r in plan["tiers"]], [r["contexts"] for r in plan["tiers"]], "contexts",
                  [r["gb"] for r in plan["tiers"]], "GB stored", ("#1b7837", "#b35806"))
    return Part("tiers", "Contexts and GB per tier",
                "Where the KV caches live; recompute keeps none. USD is storage, network and requests of the tier.",
                ["tier", "kind", "contexts", "GB", "USD/month", "nodes"], rows, chart,
                "Contexts and stored GB per tier.")


def _ttft(plan: dict) -> Part:
    frame = pd.DataFrame(plan["contexts"], columns=["tier", "tokens", "ttft_s", "slo_s"])
    frame["share"] = frame["ttft_s"] / frame["slo_s"]
    rows = []
    for tier, group in frame.groupby("tier", sort=False):
        slack = group["slo_s"] - group["ttft_s"]
        rows.append([tier, f"{len(group):,}", f"{group['ttft_s'].median():.3f}", f"{group['ttft_s'].max():.3f}",
                     f"{group['share'].max():.1%}", f"{slack.min():.3f}"])
    # one point per class of contexts with the same tier, length and share of the SLO
    points = frame.groupby(["tier", "tokens", "share"], sort=True).size().reset_index(name="contexts")
    fig, ax = _new_figure(7.0, 3.6)
    if len(points) <= MAX_POINTS:
        for tier, group in points.groupby("tier", sort=False):
            ax.scatter(group["tokens"], group["share"], s=8 + 6 * np.log1p(group["contexts"]), alpha=0.6,
                       label=tier, edgecolors="none")
        ax.legend(fontsize=7, markerscale=0.8, loc="best")
        caption = "Each context class's TTFT as a share of its SLO (size: contexts); at or below 100%: met."
    else:
        ax.hexbin(points["tokens"], points["share"], C=points["contexts"], reduce_C_function=np.sum, xscale="log",
                  gridsize=40, cmap="viridis", mincnt=1, rasterized=True)
        caption = "TTFT as a share of its SLO, contexts per cell; at or below 100%: met."
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_ylim(0, max(1.1, float(points["share"].max()) * 1.05) if len(points) else 1.1)
    ax.yaxis.set_major_formatter(lambda value, _: f"{value:.0%}")
    ax.set_xlabel("context tokens")
    ax.set_ylabel("TTFT / SLO")
    fig.tight_layout()
    return Part("ttft", "TTFT against SLO", "Time to first token of every context beside its SLO, per tier.",
                ["tier", "contexts", "median TTFT (s)", "max TTFT (s)", "max TTFT / SLO", "least slack (s)"], rows,
                _svg(fig), caption)


def _breakeven(plan: dict, workload: Workload, catalog: Catalog) -> Part:
    """Which choice is cheapest by context length × reuse rate, on the offering serving most contexts."""
    card = workload.model
    used = [r for r in plan["fleet"] if r["contexts"] > 0] or plan["fleet"]
    names = [o.name for o in catalog.offerings]
    if used:
        offering = names.index(max(used, key=lambda r: (r["contexts"], r["usd"]))["offering"])
    else:
        offering = breakeven.default_offering(card, catalog, breakeven.Setting(pricing=workload.pricing))
    frame = workload.contexts
    setting = breakeven.Setting(prompt_tokens=int(frame["prompt_tokens"].median()) if len(frame) else 0,
                                output_tokens=int(frame["output_tokens"].median()) if len(frame) else 0,
                                ttft_slo_s=workload.ttft_slo_s, tpot_slo_s=workload.tpot_slo_s or np.inf,
                                hours_per_month=workload.hours_per_month, pricing=workload.pricing)
    tokens = np.unique(np.round(np.geomspace(500, min(card.max_context or 200_000, 200_000), 40)).astype(np.int64))
    per_hour = np.geomspace(1e-4, 1e3, 57)
    lengths = [t for t in (1_000, 10_000, 100_000) if t <= tokens.max()]
    table = breakeven.breakeven_table(card, catalog, np.array(lengths), offering, setting)
    rows = [[f"{r.tokens:,}", r.tier, _breakeven_rate(r.breakeven_per_hour), f"{r.ttft_stored_s:.3f}",
             f"{r.ttft_recompute_s:.3f}", "yes" if r.within_slo else "no"] for r in table.itertuples()]

    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(1, 2, sharey=True, figsize=(7.5, 3.6))
    maps = [breakeven.cheapest_map(card, catalog, offering, tokens, per_hour * workload.hours_per_month, setting,
                                   without) for without in ((), breakeven.ATTACHED)]
    tier_names = maps[0][1]
    cmap = ListedColormap(["#ffffff"] + [plt.get_cmap("tab10")(i % 10) for i in range(len(tier_names))])
    for ax, (best, _), title in zip(axes, maps, ("every tier", "without HBM, host memory and local NVMe")):
        ax.pcolormesh(per_hour, tokens, best + 1, cmap=cmap, vmin=-0.5, vmax=len(tier_names) + 0.5,
                      shading="nearest", rasterized=True)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("reuses per hour")
        ax.set_title(title, fontsize=8)
    axes[0].set_ylabel("context tokens")
    present = sorted(set(np.concatenate([m[0].ravel() for m in maps]).tolist()))
    fig.legend(handles=[Patch(color=cmap(i + 1), label=tier_names[i] if i >= 0 else "no option within SLO")
                        for i in present], fontsize=7, loc="lower center", ncol=min(len(present), 5))
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    text = (f"Cheapest choice for one context on {names[offering]}, GPU time paid per use, prompt "
            f"{setting.prompt_tokens} and output {setting.output_tokens} tokens (the plan's medians), the workload's "
            "SLOs. HBM, host memory and local NVMe come with the instance (no storage price, limited space), so "
            "the right-hand map shows the choice once they are full. The table gives the reuse rate above which "
            "storing on each tier costs less than recomputing.")
    return Part("breakeven", "Break-even map", text,
                ["tokens", "tier", "break-even reuses/hour", "TTFT stored (s)", "TTFT recompute (s)", "within SLO"],
                rows, _svg(fig), "Cheapest choice by context length and reuse rate.")


def _breakeven_rate(value: float) -> str:
    return "never" if not np.isfinite(value) else f"{value:.4g}"


# --- renderings -----------------------------------------------------------------------------------------------

def markdown(sections: list[Part]) -> str:
    out = ["# kvplan report", ""]
    for part in sections:
        out += [f"## {part.title}", ""]
        if part.text:
            out += [part.text, ""]
        if part.headers:
            out.append("| " + " | ".join(part.headers) + " |")
            out.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(part.headers))) + "|")
            out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in part.rows]
            out.append("")
    return "\n".join(out)


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #eee; text-align: right; }
th:first-child, td:first-child { text-align: left; }
figure.chart { margin: 0.8em 0; } figure.chart svg { max-width: 100%; height: auto; }
figcaption { font-size: 0.85em; color: #555; }
"""


def to_html(sections: list[Part], title: str) -> str:
    e = html.escape
    body = [f"<h1>{e(title)}</h1>"]
    for part in sections:
        body.append(f'<section id="{part.key}">')
        body.append(f"<h2>{e(part.title)}</h2>")
        if part.text:
            body.append(f"<p>{e(part.text)}</p>")
        if part.headers:
            body.append(f'<table class="numbers" data-section="{part.key}"><thead><tr>'
                        + "".join(f"<th>{e(h)}</th>" for h in part.headers) + "</tr></thead><tbody>")
            body += ["<tr>" + "".join(f"<td>{e(cell)}</td>" for cell in row) + "</tr>" for row in part.rows]
            body.append("</tbody></table>")
        if part.chart:
            body.append(f'<figure class="chart" id="chart-{part.key}">{part.chart}'
                        f"<figcaption>{e(part.caption)}</figcaption></figure>")
        body.append("</section>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{e(title)}</title><style>{_STYLE}</style></head><body>\n" + "\n".join(body)
            + "\n</body></html>\n")

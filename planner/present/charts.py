"""Charts written as files (matplotlib, Agg): the forecast's monthly cost, a sweep's totals and tornado, and the
break-even rates. Every bar and line is drawn whole inside its axes, and legends sit clear of the data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def forecast_figure(result: dict):
    """Monthly cost stacked by component (a matplotlib Figure): every bar whole below the top of the axes, the
    legend beside the axes, clear of the bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    months = [m["month"] for m in result["months"]]
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=120)
    bottom = np.zeros(len(months))
    for component in ("compute", "storage", "network", "requests"):
        values = np.array([m["breakdown_usd"][component] for m in result["months"]], dtype=float)
        ax.bar(months, values, bottom=bottom, label=component)
        bottom = bottom + values
    # Each stacked bar's bottom is a sticky edge of matplotlib's autoscaling, which can stop the axis just below
    # the tops of the tallest stacks: the limit comes from the totals instead, with a margin above them.
    top = float(bottom.max(initial=0.0))
    ax.set_ylim(0.0, top * 1.05 if top > 0 else 1.0)
    ax.set_xlabel("month")
    ax.set_ylabel("USD per month")
    ax.set_title("Monthly cost by component")
    ax.set_xticks(months)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return fig


def forecast_chart(result: dict, path) -> None:
    """forecast_figure as a PNG."""
    import matplotlib.pyplot as plt

    fig = forecast_figure(result)
    fig.savefig(path, format="png")
    plt.close(fig)


def sweep_chart(frame: pd.DataFrame, s: dict, path) -> None:
    """The totals' distribution with P10/P50/P90, beside the tornado."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = frame[frame["total_usd"].notna()] if "total_usd" in frame else frame.iloc[0:0]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    if len(ok):
        left.hist(ok["total_usd"], bins=min(40, max(5, len(ok) // 5)), color="#2166ac")
        for q in s["quantiles"]:
            left.axvline(q["total_usd"], color="black", linewidth=0.8)
            left.annotate(f"P{round(q['quantile'] * 100)}", (q["total_usd"], 1), xytext=(2, 2),
                          textcoords="offset points", fontsize=7)
    left.set_xlabel("USD per month")
    left.set_ylabel("scenarios")
    tornado = s["tornado"][:10][::-1]
    y = np.arange(len(tornado))
    for i, t in enumerate(tornado):
        low, high = sorted((t["total_low_usd"], t["total_high_usd"]))
        right.barh(i, high - low, left=low, color="#b35806")
    right.set_yticks(y, [t["parameter"] for t in tornado])
    right.set_xlabel("mean USD per month at each end")
    right.set_title("sensitivity", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def breakeven_chart(frame, title: str, path: Path) -> None:
    """Break-even reuse rate per tier against context length (log-log), tiers that never break even left out;
    where the frame has delays (breakeven --delay), each option's end-to-end delay per request and cost per
    context beside it, recompute drawn once. A tier keeps its colour in every panel; one legend, beside them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    delays = "delay_stored_s" in frame
    colours = {tier: f"C{i % 10}" for i, tier in enumerate(frame["tier"].unique())}
    fig, axes = plt.subplots(1, 3 if delays else 1, figsize=(15 if delays else 7, 4), dpi=120, squeeze=False)
    if delays:
        _option_panel(axes[0][0], frame, colours, "delay_{}_s", "end-to-end delay per request (s)")
        _option_panel(axes[0][1], frame, colours, "usd_per_month_{}", "USD per context over the period")
    ax = axes[0][-1]
    for tier, group in frame.groupby("tier", sort=False):
        finite = group[np.isfinite(group["breakeven_per_hour"]) & (group["breakeven_per_hour"] > 0)]
        if len(finite):
            ax.plot(finite["tokens"], finite["breakeven_per_hour"], marker="o", markersize=3, label=tier,
                    color=colours[tier])
    ax.set_xscale("log")
    ax.set_yscale("log")
    # plain numbers (0.01, 1.5) rather than powers of ten: the minor ticks are labelled too within a decade
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.5)))
    ax.set_xlabel("context tokens")
    ax.set_ylabel("break-even reuses per hour")
    handles, labels = axes[0][0].get_legend_handles_labels()
    ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              borderaxespad=0.0)  # beside the lines
    if delays:
        fig.suptitle(title, fontsize=9)
    else:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None} if path.suffix.lower() == ".png" else {"Date": None})
    plt.close(fig)


def _option_panel(ax, frame, colours: dict, column: str, label: str) -> None:
    """One line per option against context length: recompute (the same on every tier's rows) and each tier.
    `column` names the frame's columns with {} for 'stored' or 'recompute'."""
    recompute = frame.drop_duplicates("tokens")
    ax.plot(recompute["tokens"], recompute[column.format("recompute")], marker="s", markersize=3, color="black",
            label="recompute")
    for tier, group in frame.groupby("tier", sort=False):
        ax.plot(group["tokens"], group[column.format("stored")], marker="o", markersize=3, label=tier,
                color=colours[tier])
    tokens = frame["tokens"]
    if tokens.max() > 10 * tokens.min():  # lengths over decades: log-log, as the break-even panel
        ax.set_xscale("log")
        ax.set_yscale("log")
    else:
        values = np.concatenate([frame[column.format("recompute")], frame[column.format("stored")]])
        top = float(np.nanmax(values[np.isfinite(values)], initial=0.0))
        ax.set_ylim(0.0, top * 1.08 if top > 0 else 1.0)
    ax.set_xlabel("context tokens")
    ax.set_ylabel(label)

"""Readable views of a plan: the terminal summary and the per-context CSV."""

from __future__ import annotations

import pandas as pd


def _usd(value: float | None) -> str:
    return "—" if value is None else f"${value:,.2f}"


def table(headers: list[str], rows: list[list], indent: str = "  ") -> str:
    cells = [[str(c) for c in row] for row in [headers] + rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for r, row in enumerate(cells):
        parts = [cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)]
        lines.append(indent + "  ".join(parts).rstrip())
        if r == 0:
            lines.append(indent + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summary(plan: dict) -> str:
    cat, solver = plan["catalog"], plan["solver"]
    gap = "—" if solver["gap"] is None else f"{solver['gap']:.4%}"
    out = [
        f"kvplan plan: {plan['inputs']['workload']['name']} — model {plan['model']} on {cat['name']} "
        f"({cat['region'] or cat['provider']}, as of {cat['as_of']}), {plan['mode']}, {plan['pricing']}, "
        f"{plan['hours_per_month']:g} h/month",
        "",
        f"Total: {_usd(plan['total_usd'])} per month   (solver {solver['name']}: {solver['status']}, gap {gap}, "
        f"lower bound {_usd(solver['lower_bound_usd'])}"
        + (")" if solver["seconds"] is None else f", {solver['seconds']:.2f} s)"),
        "",
        "Cost by component",
        table(["component", "USD/month", "share"],
               [[k, _usd(v), f"{v / plan['total_usd']:.1%}" if plan["total_usd"] else "—"]
                for k, v in plan["breakdown_usd"].items()]),
        "",
        "Fleet",
    ]
    fleet_rows = []
    for row in plan["fleet"]:
        util = row.get("gpu_utilization_peak")
        fleet_rows.append([row["offering"], row["instances"], f"{row['gpus']} (tp {row['tp']})",
                           f"${row['price_per_hour']:,.4g}", "yes" if row["hbm_cache"] else "no",
                           row["contexts"], f"{row['background_share']:.0%}",
                           "—" if util is None else f"{util:.0%}", _usd(row["usd"])])
    out.append(table(["offering", "instances", "GPUs", "$/h", "HBM cache", "contexts", "background",
                       "peak util", "USD/month"], fleet_rows))
    out += ["", "Contexts per tier",
            table(["tier", "kind", "contexts", "GB", "USD/month"],
                   [[r["tier"], r["kind"], r["contexts"], f"{r['gb']:,.1f}", _usd(r["usd"])] for r in plan["tiers"]])]
    if plan["baselines"]:
        rows = []
        for name, b in plan["baselines"].items():
            if b["feasible"]:
                ratio = b.get("savings_ratio")
                rows.append([name, _usd(b["total_usd"]), _usd(b["savings_usd"]),
                             "—" if ratio is None else f"{ratio:.2f}x"])
            else:
                rows.append([name, "infeasible", b.get("reason", ""), ""])
        out += ["", "Baselines (each the cheapest plan under its own restriction)",
                table(["baseline", "USD/month", "plan saves", "baseline/plan"], rows)]
    if plan["violations"]:
        out += ["", "VIOLATIONS:"] + [f"  {v}" for v in plan["violations"]]
    if plan["notes"]:
        out += ["", "Notes:"] + [f"  - {n}" for n in plan["notes"]]
    return "\n".join(out)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def contexts_frame(plan: dict) -> pd.DataFrame:
    """Per-context rows; ids a spreadsheet would run as formulas are prefixed with a quote."""
    frame = pd.DataFrame(plan["contexts"])
    if not frame.empty:
        frame["id"] = frame["id"].map(spreadsheet_safe)
    return frame


def spreadsheet_safe(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA_START) else text


def comparison(rows: list[dict], workload, pricing: str) -> str:
    """The compare table: one line per catalog, cheapest first; why a catalog cannot serve, where it cannot."""
    head = (f"kvplan compare: {workload.name} — model {workload.model.name}, {workload.mode}, {pricing} pricing, "
            f"{len(workload.contexts)} contexts\n")
    lines = []
    for r in rows:
        if r["total_usd"] is None:
            lines.append([r["catalog"], r["region"] or "—", "infeasible", "", "", "", "", r["reason"], "", ""])
            continue
        ratio = r["savings_ratio"]
        lines.append([r["catalog"], r["region"] or "—", _usd(r["total_usd"]), _usd(r["compute_usd"]),
                      _usd(r["storage_usd"]), _usd(r["network_usd"] + r["requests_usd"]), r["fleet"], r["tiers"],
                      _usd(r["all_recompute_usd"]), "—" if ratio is None else f"{ratio:.2f}x"])
    return head + table(["catalog", "region", "total/month", "compute", "storage", "network+req", "fleet",
                         "contexts per tier", "all-recompute", "saving"], lines, indent="")


def forecast_summary(result: dict, workload, catalog_name: str) -> str:
    rows = []
    for month in result["months"]:
        b = month["breakdown_usd"]
        fleet = ", ".join(
            f"{f['offering']} x{sum(f[k] for k in ('on_demand', 'spot', 'reserved_1y', 'reserved_3y'))}"
            + "".join(f" ({f[k]} {k})" for k in ("spot", "reserved_1y", "reserved_3y") if f[k]) for f in month["fleet"])
        tiers = ", ".join(f"{t} {n}" for t, n in month["contexts_per_tier"].items())
        rows.append([month["month"], _usd(b["compute"]), _usd(b["storage"]), _usd(b["network"]), _usd(b["requests"]),
                     _usd(month["total_usd"]), fleet, tiers, month["moves"]])
    gap = "—" if result["gap"] is None else f"{result['gap']:.4%}"
    lines = [f"kvplan forecast: {workload.name} — model {workload.model.name} on {catalog_name}, "
             f"{len(result['months'])} months", "",
             table(["month", "compute", "storage", "network", "requests", "total", "fleet", "contexts per tier",
                    "moves"], rows), "",
             f"Horizon total: {_usd(result['total_usd'])}   (solver {result['solver']}: {result['status']}, gap {gap})"]
    if result["commitments_beyond_horizon_usd"]:
        lines.append(f"Reserved instances committed beyond the horizon: {_usd(result['commitments_beyond_horizon_usd'])}")
    for p in result["purchases"]:
        lines.append(f"  buy {p['instances']} x {p['offering']} {p['commitment']} in month {p['month']}")
    if "all_on_demand_usd" in result:
        lines.append(f"All on-demand: {_usd(result['all_on_demand_usd'])}; the chosen commitments save "
                     f"{_usd(result['commitment_savings_usd'])} (commitments counted for their whole term)")
    return "\n".join(lines)


def forecast_chart(result: dict, path) -> None:
    """Monthly cost stacked by component, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    months = [m["month"] for m in result["months"]]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    bottom = [0.0] * len(months)
    for component in ("compute", "storage", "network", "requests"):
        values = [m["breakdown_usd"][component] for m in result["months"]]
        ax.bar(months, values, bottom=bottom, label=component)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_xlabel("month")
    ax.set_ylabel("USD per month")
    ax.set_title("Monthly cost by component")
    ax.set_xticks(months)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)

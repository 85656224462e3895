"""Readable text: the terminal summaries of a plan, a comparison, a forecast and a sweep, their tables, and
the per-context CSV."""

from __future__ import annotations

import pandas as pd


def usd(value: float | None) -> str:
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


def plan_summary(plan: dict) -> str:
    cat, solver = plan["catalog"], plan["solver"]
    gap = "—" if solver["gap"] is None else f"{solver['gap']:.4%}"
    out = [
        f"kvplan plan: {plan['inputs']['workload']['name']} — model {plan['model']} on {cat['name']} "
        f"({cat['region'] or cat['provider']}, as of {cat['as_of']}), {plan['mode']}, {plan['pricing']}, "
        f"{plan['hours_per_month']:g} h/month",
        "",
        f"Total: {usd(plan['total_usd'])} per month   (solver {solver['name']}: {solver['status']}, gap {gap}, "
        f"lower bound {usd(solver['lower_bound_usd'])}"
        + (")" if solver["seconds"] is None else f", {solver['seconds']:.2f} s)"),
        "",
        "Cost by component",
        table(["component", "USD/month", "share"],
               [[k, usd(v), f"{v / plan['total_usd']:.1%}" if plan["total_usd"] else "—"]
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
                           "—" if util is None else f"{util:.0%}", usd(row["usd"])])
    out.append(table(["offering", "instances", "GPUs", "$/h", "HBM cache", "contexts", "background",
                       "peak util", "USD/month"], fleet_rows))
    out += ["", "Contexts per tier",
            table(["tier", "kind", "contexts", "GB", "USD/month"],
                   [[r["tier"], r["kind"], r["contexts"], f"{r['gb']:,.1f}", usd(r["usd"])] for r in plan["tiers"]])]
    if plan["baselines"]:
        rows = []
        for name, b in plan["baselines"].items():
            if b["feasible"]:
                ratio = b.get("savings_ratio")
                rows.append([name, usd(b["total_usd"]), usd(b["savings_usd"]),
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
        lines.append([r["catalog"], r["region"] or "—", usd(r["total_usd"]), usd(r["compute_usd"]),
                      usd(r["storage_usd"]), usd(r["network_usd"] + r["requests_usd"]), r["fleet"], r["tiers"],
                      usd(r["all_recompute_usd"]), "—" if ratio is None else f"{ratio:.2f}x"])
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
        rows.append([month["month"], usd(b["compute"]), usd(b["storage"]), usd(b["network"]), usd(b["requests"]),
                     usd(month["total_usd"]), fleet, tiers, month["moves"]])
    gap = "—" if result["gap"] is None else f"{result['gap']:.4%}"
    lines = [f"kvplan forecast: {workload.name} — model {workload.model.name} on {catalog_name}, "
             f"{len(result['months'])} months", "",
             table(["month", "compute", "storage", "network", "requests", "total", "fleet", "contexts per tier",
                    "moves"], rows), "",
             f"Horizon total: {usd(result['total_usd'])}   (solver {result['solver']}: {result['status']}, gap {gap})"]
    if result["commitments_beyond_horizon_usd"]:
        lines.append(f"Reserved instances committed beyond the horizon: {usd(result['commitments_beyond_horizon_usd'])}")
    for p in result["purchases"]:
        lines.append(f"  buy {p['instances']} x {p['offering']} {p['commitment']} in month {p['month']}")
    if "all_on_demand_usd" in result:
        lines.append(f"All on-demand: {usd(result['all_on_demand_usd'])}; the chosen commitments save "
                     f"{usd(result['commitment_savings_usd'])} (commitments counted for their whole term)")
    return "\n".join(lines)


def sweep_summary_text(s: dict) -> str:
    lines = [f"{s['planned']} of {s['scenarios']} scenarios planned"
             + (" (" + ", ".join(f"{v} {k}" for k, v in s["not_planned"].items()) + ")" if s["not_planned"] else "")]
    if s["unproven"]["scenarios"]:
        lines.append(f"{s['unproven']['scenarios']} of them stopped before the gap was proven (largest gap "
                     f"{s['unproven']['largest_gap']:.2%}): their totals may be that much above their optima")
    if s["quantiles"]:
        lines += ["", "Monthly cost", table(["quantile", "USD/month", "scenario", "fleet", "tiers"],
                                            [[f"P{round(q['quantile'] * 100)}", f"${q['total_usd']:,.2f}",
                                              q["scenario"], q["fleet"], q["tiers"]] for q in s["quantiles"]])]
    if s["tornado"]:
        lines += ["", "Sensitivity (tornado: mean total at each end of the parameter's range)",
                  table(["parameter", "low end", "total", "high end", "total", "swing", "Spearman"],
                        [[t["parameter"], t["low"], f"${t['total_low_usd']:,.2f}", t["high"],
                          f"${t['total_high_usd']:,.2f}", f"${t['swing_usd']:,.2f}",
                          "—" if t["spearman"] is None else f"{t['spearman']:+.2f}"] for t in s["tornado"]])]
    return "\n".join(lines)

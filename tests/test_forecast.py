"""Forecasts across months (MODEL.md §7): one month equals a plan; reserving pays off exactly when the committed
price times the term is below the on-demand cost of the months it covers; moves are charged once; a steady
workload keeps its placement; the CLI writes its files and explains a budget that is too small."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from planner.analyses.forecast import forecast, monthly_reuses, parse_budget, parse_growth
from planner.cli import main
from planner.inputs.catalog import load_catalog, load_models, parse_catalog
from planner.inputs.errors import Infeasible
from planner.inputs.workload import parse_workload
from planner.plan.runner import make_plan

ROOT = Path(__file__).resolve().parent.parent
MODELS = load_models()
H = 730


def box_catalog(on_demand=10.0, reserved_1y=None, tiers=()):
    prices = {"on_demand": on_demand, **({"reserved_1y": reserved_1y} if reserved_1y is not None else {})}
    return parse_catalog({"name": "box", "as_of": "2026-11-26", "offerings": [
        {"name": "box", "gpu": "L40S", "gpus": 1, "price_per_hour": prices, "host_memory_gb": 64,
         "network_gbps": 25}], "tiers": list(tiers)}, "box.yaml", MODELS)


def workload(contexts, mode="provisioned", **extra):
    return parse_workload({"model": "Llama-3.1-8B", "mode": mode, "slo": {"ttft_s": 30.0}, "contexts": contexts,
                           **extra}, "w.yaml", MODELS, Path("."))


@pytest.fixture(params=["whole", "by_month"])
def method(request, monkeypatch):
    """Both ways a horizon is solved: as one program (small horizons) and month by month (large ones)."""
    if request.param == "by_month":
        monkeypatch.setattr("planner.analyses.horizon.WHOLE_PROGRAM_MAX_OPTIONS", 0)
    return request.param


ONE = [{"id": "a", "tokens": 2000, "reuses_per_month": 1000, "prompt_tokens": 100, "output_tokens": 100}]


def test_growth_and_budget_parsing():
    assert parse_growth("5%/month") == pytest.approx(0.05)
    assert parse_growth("0.05") == pytest.approx(0.05)
    assert parse_budget("250000/month") == 250000 and parse_budget("$1,500") == 1500


def test_monthly_reuses_from_columns_table_and_growth():
    w = workload([dict(ONE[0], reuses_m1=1, reuses_m2=2, reuses_m3=3)])
    assert monthly_reuses(w, 3).tolist() == [[1, 2, 3]]
    table = pd.DataFrame({"id": ["a", "a"], "month": ["1", "2"], "reuses": ["7", "8"]})
    assert monthly_reuses(w, 2, table=table, table_file="t.csv").tolist() == [[7, 8]]
    grown = monthly_reuses(workload(ONE), 3, growth=0.1)
    assert grown[0] == pytest.approx([1000, 1100, 1210])


def test_a_one_month_forecast_equals_the_plan(method):
    w = parse_workload(yaml.safe_load((ROOT / "examples/chatbot-prompts/workload.yaml").read_text()) | {
        "contexts_file": str(ROOT / "examples/chatbot-prompts/contexts.csv")}, "w.yaml", MODELS, Path("/"))
    aws = load_catalog("aws", MODELS)
    plan = make_plan(w, aws, baselines=False)
    result = forecast(w, aws, months=1)
    assert result["total_usd"] == pytest.approx(plan["total_usd"], abs=0.005)
    assert result["months"][0]["moves"] == 0


@pytest.mark.parametrize("months,price,reserves", [
    (12, 9.9, True), (12, 10.1, False),   # a 12-month term inside a 12-month horizon: reserved < on-demand
    (6, 4.9, True), (6, 5.1, False),      # a 12-month term for 6 months of need: 12 · p < 6 · 10
])
def test_reserving_pays_off_exactly_when_the_term_costs_less(months, price, reserves, method):
    catalog = box_catalog(on_demand=10.0, reserved_1y=price)
    result = forecast(workload(ONE), catalog, months=months, commitments=("reserved_1y",), gap=1e-9)
    bought = sum(p["instances"] for p in result["purchases"])
    assert bought == (1 if reserves else 0)
    assert result["lower_bound_usd"] <= result["objective_usd"] * (1 + 1e-9)
    on_demand = months * 10.0 * H
    assert result["all_on_demand_usd"] == pytest.approx(on_demand)
    if reserves:
        assert result["objective_usd"] == pytest.approx(12 * price * H, rel=1e-9)
        assert result["total_usd"] == pytest.approx(months * price * H, rel=1e-9)
        assert result["commitments_beyond_horizon_usd"] == pytest.approx((12 - months) * price * H, rel=1e-9)
        assert result["commitment_savings_usd"] == pytest.approx(on_demand - 12 * price * H, rel=1e-9)
        assert all(m["fleet"][0]["reserved_1y"] == 1 and m["fleet"][0]["on_demand"] == 0 for m in result["months"])
    else:
        assert result["total_usd"] == pytest.approx(on_demand, rel=1e-9)
        assert result["commitment_savings_usd"] == pytest.approx(0, abs=1e-6)


OBJECT = {"name": "obj", "kind": "object", "price_gb_month": 0.023, "read_request_price": 4e-7,
          "write_request_price": 5e-3, "retrieval_per_gb": 0.0005, "first_byte_latency_s": 0.03, "read_gbps": 1.0,
          "object_tokens": 1000}


def test_a_move_into_a_tier_is_charged_once(method):
    """Reuse jumps in month 3: the context moves from recomputing to object storage once, paying one write
    (objects · PUT; the tier charges no transfer), and stays."""
    context = dict(ONE[0], tokens=20_000, reuses_m1=0.5, reuses_m2=0.5, reuses_m3=50_000, reuses_m4=50_000,
                   reuses_m5=50_000)
    result = forecast(workload([context], mode="per_use"), box_catalog(tiers=[OBJECT]), months=5, gap=1e-9)
    tiers = [p["tier"][0] for p in result["placements"]]
    assert tiers == ["recompute", "recompute", "obj", "obj", "obj"]
    moves = [m["moves"] for m in result["months"]]
    assert moves == [0, 0, 1, 0, 0]
    write = 20 * 5e-3  # 20,000 tokens in objects of 1,000
    assert result["months"][2]["moves_usd"] == pytest.approx(write)
    assert sum(m["moves_usd"] for m in result["months"]) == pytest.approx(write)


def test_a_steady_workload_keeps_its_placement(method):
    contexts = [dict(ONE[0], id=f"c{i}", tokens=3000 + 4000 * i, reuses_per_month=200 * (i + 1)) for i in range(6)]
    catalog = box_catalog(tiers=[OBJECT, {"name": "host", "kind": "host_memory"}, {"name": "hbm", "kind": "hbm"}])
    result = forecast(workload(contexts), catalog, months=4, gap=1e-9)
    first = result["placements"][0]
    assert all(p == first for p in result["placements"])
    assert [m["moves"] for m in result["months"]] == [0, 0, 0, 0]
    totals = [m["total_usd"] for m in result["months"]]
    assert max(totals) - min(totals) < 1e-6


def test_cli_forecast_writes_its_files(tmp_path):
    w = tmp_path / "w.yaml"
    w.write_text(yaml.safe_dump({"model": "Llama-3.1-8B", "slo": {"ttft_s": 30.0}, "contexts": ONE}))
    cat = tmp_path / "box.yaml"
    cat.write_text(yaml.safe_dump({"name": "box", "as_of": "2026-11-26", "offerings": [
        {"name": "box", "gpu": "L40S", "gpus": 1, "price_per_hour": {"on_demand": 10.0, "reserved_1y": 2.0},
         "host_memory_gb": 64, "network_gbps": 25, "source": "test", "as_of": "2026-11-26"}], "tiers": []}))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["forecast", str(w), "--catalog", str(cat), "--months", "3", "--growth",
                                       "5%/month", "--commitments", "reserved_1y", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert "Horizon total" in result.stdout and "buy 1 x box reserved_1y in month 1" in result.stdout
    for name in ("forecast.json", "months.csv", "fleet.csv", "placements.csv", "cost.png"):
        assert (out / name).exists(), name
    assert (out / "cost.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((out / "forecast.json").read_text())
    assert len(data["months"]) == 3
    assert pd.read_csv(out / "months.csv")["total"].sum() == pytest.approx(data["total_usd"])


def test_a_budget_too_small_names_the_months_and_the_cheapest_cap():
    contexts = [dict(ONE[0], reuses_per_month=1000)]
    with pytest.raises(Infeasible) as err:
        forecast(workload(contexts), box_catalog(), months=2, budget=5000.0, gap=1e-9)
    message = str(err.value)
    assert "over budget" in message and "month 1" in message and "month 2" in message
    assert f"${10 * H:,.2f}" in message  # the cheapest cap: one instance a month
    ok = forecast(workload(contexts), box_catalog(), months=2, budget=10 * H + 1, gap=1e-9)
    assert ok["total_usd"] == pytest.approx(2 * 10 * H)


def two_sizes_catalog(tiers=()):
    """Two instances of one GPU: a small one, and a big one with more host memory that costs more."""
    return parse_catalog({"name": "sizes", "as_of": "2026-11-26", "offerings": [
        {"name": "small", "gpu": "L40S", "gpus": 1, "price_per_hour": {"on_demand": 2.0}, "host_memory_gb": 16,
         "network_gbps": 25},
        {"name": "big", "gpu": "L40S", "gpus": 1, "price_per_hour": {"on_demand": 3.0}, "host_memory_gb": 256,
         "network_gbps": 25}], "tiers": list(tiers)}, "sizes.yaml", MODELS)


def test_growing_months_by_month_equal_their_own_plans(monkeypatch):
    from planner.analyses.horizon import no_cheaper

    """Month by month, a month whose every option costs no less than the month before inherits that month's
    bound and tries the month before's fleet first; the fleet must still grow when reuse does. Each month's
    cost equals the optimal plan of that month alone (moves aside), and the bound stays below the total."""
    import planner.analyses.horizon as horizon

    monkeypatch.setattr(horizon, "WHOLE_PROGRAM_MAX_OPTIONS", 0)
    easier = []
    monkeypatch.setattr(horizon, "no_cheaper", lambda *a: easier.append(no_cheaper(*a)) or easier[-1])
    contexts = [dict(ONE[0], id=f"c{i}", tokens=4000 + 6000 * i, reuses_per_month=10_000 * (i + 1))
                for i in range(8)]
    catalog = two_sizes_catalog(tiers=[{"name": "host", "kind": "host_memory"}, OBJECT])
    result = forecast(workload(contexts), catalog, months=4, growth=0.6, gap=1e-6)
    fleets = []
    for m, row in enumerate(result["months"]):
        grown = [dict(c, reuses_per_month=c["reuses_per_month"] * 1.6 ** m) for c in contexts]
        plan = make_plan(workload(grown), catalog, baselines=False, gap=1e-6)
        assert row["total_usd"] - row["moves_usd"] == pytest.approx(plan["total_usd"], rel=2e-6)
        fleets.append({f["offering"]: f["on_demand"] for f in row["fleet"]})
    assert easier == [True, True, True]
    assert fleets[0] != fleets[-1]  # the workload outgrew its first fleet
    moves = sum(row["moves_usd"] for row in result["months"])  # charged as they happen, outside the bound
    assert result["objective_usd"] - moves - 2e-6 * result["objective_usd"] <= result["lower_bound_usd"] \
        <= result["objective_usd"]


def test_a_month_inherits_a_bound_only_from_an_easier_month():
    from planner.analyses.horizon import build_horizon, no_cheaper

    contexts = [dict(ONE[0], id=f"c{i}", tokens=4000 + 6000 * i, reuses_m1=100.0, reuses_m2=150.0, reuses_m3=120.0)
                for i in range(3)]
    w = workload(contexts)
    catalog = two_sizes_catalog(tiers=[{"name": "host", "kind": "host_memory"}])
    reuses = monthly_reuses(w, 3)
    hz = build_horizon(w, catalog, 3, reuses, commitments=(), spot_share=0.0, budget=None, traffic_growth=0.0)
    unpaid = np.zeros((3, 2), dtype=np.int64)
    assert no_cheaper(hz, 1, unpaid)         # reuses grow: month 2 costs no less than month 1
    assert not no_cheaper(hz, 2, unpaid)     # they fall: month 3 may cost less than month 2
    paid = unpaid.copy()
    paid[1, 0] = 1                            # an instance already paid for in month 2 only
    assert not no_cheaper(hz, 1, paid)


def test_the_month_by_month_bound_prices_spot_at_its_share(monkeypatch):
    """At most half the instances may be spot: no instance-month costs less than 0.5 · 10 + 0.5 · 2 = $6/h, so
    the bound of one instance for two months is 2 · 730 · 6 (spot alone, $2/h, would give a third of that). One
    instance cannot be half spot: the plan runs it on demand."""
    monkeypatch.setattr("planner.analyses.horizon.WHOLE_PROGRAM_MAX_OPTIONS", 0)
    catalog = parse_catalog({"name": "box", "as_of": "2026-11-26", "offerings": [
        {"name": "box", "gpu": "L40S", "gpus": 1, "price_per_hour": {"on_demand": 10.0, "spot": 2.0},
         "host_memory_gb": 64, "network_gbps": 25}], "tiers": []}, "box.yaml", MODELS)
    result = forecast(workload(ONE), catalog, months=2, commitments=("spot",), spot_share=0.5, gap=1e-9)
    assert result["objective_usd"] == pytest.approx(2 * H * 10.0)
    assert result["lower_bound_usd"] == pytest.approx(2 * H * 6.0)


def test_the_cost_chart_shows_every_bar_whole_and_its_legend_clear_of_them():
    """A long context that must be stored (recomputing it misses its TTFT) on object storage whose requests cost
    far less than a millionth of the month: the stacked bars' top segments are tiny beside the compute, as in
    rag-docs (where matplotlib's autoscaling stopped the axis just below the tallest bars). Every bar lies within
    the axis limits, the tallest below the top; the legend's box overlaps no bar and lies within the figure."""
    import matplotlib.pyplot as plt

    from planner.present.charts import forecast_figure

    tier = {"name": "obj", "kind": "object", "price_gb_month": 0.023, "read_request_price": 4e-7,
            "write_request_price": 5e-6, "first_byte_latency_s": 0.03, "read_gbps": 2.0}
    contexts = [{"id": "long", "tokens": 60_000, "reuses_per_month": 500, "prompt_tokens": 50, "output_tokens": 50,
                 "ttft_slo_s": 8.0},
                {"id": "short", "tokens": 1_000, "reuses_per_month": 200_000, "prompt_tokens": 50,
                 "output_tokens": 50}]
    result = forecast(workload(contexts), box_catalog(tiers=[tier]), months=3, growth=0.5, gap=1e-6)
    totals = [m["total_usd"] for m in result["months"]]
    requests = [m["breakdown_usd"]["requests"] for m in result["months"]]
    assert 0 < max(requests) < 1e-5 * max(totals)   # the tiny top segments of the case above
    assert totals[-1] == max(totals)
    fig = forecast_figure(result)
    try:
        ax = fig.axes[0]
        bottom, top = ax.get_ylim()
        bars = [p for p in ax.patches if p.get_height() > 0]
        tops = [p.get_y() + p.get_height() for p in bars]
        assert len({p.get_x() for p in bars}) == len(totals)
        assert max(tops) == pytest.approx(max(totals), rel=1e-9)
        assert bottom <= min(p.get_y() for p in bars) and max(tops) < top
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        legend = ax.get_legend().get_window_extent(renderer)
        assert not any(legend.overlaps(p.get_window_extent(renderer)) for p in bars)
        assert fig.bbox.contains(legend.x0, legend.y0) and fig.bbox.contains(legend.x1, legend.y1)
    finally:
        plt.close(fig)

"""Plans of the bundled examples: SLOs and capacities hold, money adds up, re-pricing reproduces the total,
the plan beats every feasible baseline; classes, background traffic and determinism."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from planner.costmodel import tensor_parallel
from planner.inputs.catalog import load_catalog, load_models
from planner.inputs.errors import Infeasible
from planner.inputs.workload import load_workload, parse_workload
from planner.plan.files import reprice
from planner.plan.runner import make_plan

ROOT = Path(__file__).resolve().parent.parent
MODELS = load_models()
AWS = load_catalog("aws", MODELS)


@pytest.fixture(scope="module", params=["rag-docs", "chatbot-prompts"])
def example(request, example_plan):
    workload = load_workload(ROOT / "examples" / request.param / "workload.yaml", MODELS)
    return workload, example_plan(request.param)


def test_every_context_meets_its_slo(example):
    workload, plan = example
    tpot_default = workload.tpot_slo_s or math.inf
    assert len(plan["contexts"]) == len(workload.contexts)
    for row in plan["contexts"]:
        assert row["ttft_s"] <= row["slo_s"] * (1 + 1e-9)
        assert row["tpot_s"] <= (row["tpot_slo_s"] or tpot_default) * (1 + 1e-9)
    assert plan["violations"] == []
    assert plan["solver"]["status"] == "optimal" and plan["solver"]["gap"] <= 1e-4


def test_money_adds_up_to_the_cent(example):
    _, plan = example
    total = plan["total_usd"]
    assert sum(plan["breakdown_usd"].values()) == pytest.approx(total, abs=0.005)
    assert sum(f["usd"] for f in plan["fleet"]) + sum(t["usd"] for t in plan["tiers"]) == pytest.approx(total, abs=0.005)
    assert sum(c["usd"] for c in plan["contexts"]) + plan["background"]["usd"] == pytest.approx(total, abs=0.005)
    assert plan["breakdown_usd"]["compute"] == pytest.approx(sum(f["usd"] for f in plan["fleet"]), abs=0.005)
    for f in plan["fleet"]:  # provisioned: whole instances for the month
        assert f["usd"] == pytest.approx(f["instances"] * f["price_per_hour"] * 730, abs=0.005)
    assert plan["solver"]["objective_usd"] == pytest.approx(total, abs=0.005)


def test_attached_capacities_hold_by_hand(example):
    """Host memory and NVMe per offering, from the catalog's own figures and MODEL.md §5's fractions."""
    _, plan = example
    for f in plan["fleet"]:
        offering = AWS.offering(f["offering"])
        for tier, size, fraction in (("host_memory", offering.host_memory_gb, 0.5),
                                     ("local_nvme", offering.local_nvme_gb, 0.9)):
            stored = sum(c["gb"] for c in plan["contexts"] if c["offering"] == f["offering"] and c["tier"] == tier)
            assert stored <= f["instances"] * fraction * (size or 0) * (1 + 1e-9)
        hbm = sum(c["gb"] for c in plan["contexts"] if c["offering"] == f["offering"] and c["tier"] == "hbm")
        if hbm:
            card = MODELS[plan["model"]]
            tp = tensor_parallel(card, offering.gpus, offering.gpu.hbm_gb)
            space = tp * offering.gpu.hbm_gb * 1e9 - card.weight_bytes
            assert f["hbm_cache"]
            assert hbm <= f["instances"] * (offering.gpus // tp) * 0.5 * space / 1e9 * (1 + 1e-9)


def test_plan_never_costs_more_than_a_feasible_baseline(example):
    _, plan = example
    feasible = {k: b for k, b in plan["baselines"].items() if b["feasible"]}
    assert feasible, "at least one baseline is feasible"
    for name, baseline in feasible.items():
        assert plan["total_usd"] <= baseline["total_usd"] + 1e-6, name
    assert set(plan["baselines"]) == {"all_recompute", "rule_of_thumb"} | {t.name for t in AWS.tiers}


def test_repricing_a_saved_plan_reproduces_it(example, tmp_path):
    _, plan = example
    saved = json.loads(json.dumps(plan))  # through JSON, as a user's file would be
    _, priced = reprice(saved, "plan.json")
    assert priced.total == pytest.approx(plan["total_usd"], abs=0.005)
    assert priced.violations == []
    for key, value in priced.breakdown.items():
        assert value == pytest.approx(plan["breakdown_usd"][key], abs=0.005)


def test_repricing_finds_a_broken_plan(example):
    _, plan = example
    broken = json.loads(json.dumps(plan))
    broken["fleet"][0]["instances"] = 0
    _, priced = reprice(broken, "plan.json")
    assert priced.violations


def workload(contexts, **extra):
    data = {"model": "Llama-3.1-8B", "slo": {"ttft_s": 2.0}, "contexts": contexts, **extra}
    return parse_workload(data, "test.yaml", MODELS, Path("."))


def test_identical_contexts_as_a_class_plan_like_distinct_ones():
    base = {"tokens": 30_000, "reuses_per_month": 20_000, "prompt_tokens": 100, "output_tokens": 100}
    same = [{"id": f"s{i}", **base} for i in range(5)]
    # the same contexts made distinct by a negligible difference: five classes instead of one
    distinct = [{"id": f"d{i}", **base, "reuses_per_month": 20_000 + i * 1e-6} for i in range(5)]
    a = make_plan(workload(same), AWS, gap=1e-9, baselines=False)
    b = make_plan(workload(distinct), AWS, gap=1e-9, baselines=False)
    assert a["total_usd"] == pytest.approx(b["total_usd"], rel=1e-6)
    assert sorted(c["tier"] for c in a["contexts"]) == sorted(c["tier"] for c in b["contexts"])


def test_background_traffic_alone_is_sized_by_hand():
    """Only background requests: instances = ceil(peak GPU-seconds per second / (0.8 · GPUs)) on the cheapest
    offering that can serve them; compare with the plan."""
    traffic = {"requests_per_month": 20_000_000, "prompt_tokens": 1000, "output_tokens": 200}
    plan = make_plan(workload([], traffic=traffic, peak_to_mean=2.0), AWS, gap=1e-9, baselines=False)
    card = MODELS["Llama-3.1-8B"]
    best = math.inf
    for o in AWS.offerings:
        tp = tensor_parallel(card, o.gpus, o.gpu.hbm_gb)
        if tp == 0:
            continue
        rate = tp * o.gpu.tflops * 1e12 * 0.4
        prefill = (2 * card.params_b * 1e9 * 1000 + 4 * 32 * 32 * 128 * 1000 * 500) / rate
        if prefill > 2.0:
            continue
        space = tp * o.gpu.hbm_gb * 1e9 - card.weight_bytes
        batch = min(32, space // (card.kv_bytes_per_token * 1200))
        step = (card.weight_read_bytes + batch * card.kv_bytes_per_token * 1000) / (tp * o.gpu.hbm_gbps * 1e9 * 0.6)
        busy = tp * prefill + 200 * tp * step / batch
        load = 20_000_000 * 2.0 / (730 * 3600) * busy
        instances = math.ceil(load / (0.8 * (o.gpus // tp) * tp))
        best = min(best, instances * o.prices["on_demand"] * 730)
    assert plan["total_usd"] == pytest.approx(best, rel=1e-9)
    assert plan["background"]["usd"] == pytest.approx(plan["total_usd"], abs=0.005)


def test_infeasible_contexts_are_named_with_their_best_ttft():
    contexts = [{"id": "ok", "tokens": 2_000, "reuses_per_month": 10, "prompt_tokens": 10, "output_tokens": 10},
                {"id": "huge", "tokens": 120_000, "reuses_per_month": 1, "prompt_tokens": 10, "output_tokens": 10,
                 "ttft_slo_s": 0.0001}]
    with pytest.raises(Infeasible) as err:
        make_plan(workload(contexts), AWS)
    message = str(err.value)
    assert "huge" in message and "best TTFT" in message and "ok" not in message.replace("huge", "")


def test_max_instances_cap_is_explained():
    raw = {**AWS.raw, "offerings": [dict(o, max_instances=1) for o in AWS.raw["offerings"]]}
    from planner.inputs.catalog import parse_catalog
    capped = parse_catalog(raw, "capped.yaml", MODELS)
    traffic = {"requests_per_month": 2e9, "prompt_tokens": 1000, "output_tokens": 200}
    with pytest.raises(Infeasible, match="max_instances"):
        make_plan(workload([], traffic=traffic), capped, baselines=False)


def test_plans_are_deterministic():
    w = load_workload(ROOT / "examples" / "chatbot-prompts" / "workload.yaml", MODELS)
    a, b = make_plan(w, AWS, baselines=False), make_plan(w, AWS, baselines=False)
    a["solver"].pop("seconds"), b["solver"].pop("seconds")
    assert json.dumps(a) == json.dumps(b)


def test_spot_pricing_uses_spot_prices():
    w = load_workload(ROOT / "examples" / "chatbot-prompts" / "workload.yaml", MODELS)
    import dataclasses
    spot = make_plan(dataclasses.replace(w, pricing="spot"), AWS, baselines=False)
    for f in spot["fleet"]:
        assert f["price_per_hour"] == AWS.offering(f["offering"]).prices["spot"]
    assert np.isfinite(spot["total_usd"])


def test_contexts_from_parquet_plan_like_csv(tmp_path):
    import pandas as pd

    source = ROOT / "examples" / "chatbot-prompts"
    pd.read_csv(source / "contexts.csv").to_parquet(tmp_path / "contexts.parquet")
    settings = (source / "workload.yaml").read_text().replace("contexts_file: contexts.csv",
                                                              "contexts_file: contexts.parquet")
    (tmp_path / "workload.yaml").write_text(settings)
    from_parquet = load_workload(tmp_path / "workload.yaml", MODELS)
    from_csv = load_workload(source / "workload.yaml", MODELS)
    pd.testing.assert_frame_equal(from_parquet.contexts, from_csv.contexts)


REPRO = ROOT / "tests" / "data" / "repro" / "background-share"  # see its README.md


def test_a_background_share_within_the_solvers_tolerance_is_no_traffic():
    """Two offerings: a10g-x1-0 ($1.383/h, uncapped) and one a100-80gb-x1-1 at most ($4.727/h). Every option
    that costs the least GPU time on a10g-x1-0 (the cache in host memory or on NVMe) costs nothing else, so
    renting only a10g-x1-0 costs ceil(least load / one instance's capacity) instances. Context c4 cannot run on
    the single a100 (its least load there exceeds one instance's capacity), so a plan that rents the a100 still
    needs ceil(c4's load / capacity) a10g instances for c4 alone, and the a100 on top: dearer here."""
    from planner.plan.options import background_table, option_table, prepare

    workload = load_workload(REPRO / "workload.yaml", MODELS)
    catalog = load_catalog(str(REPRO / "catalog.yaml"), MODELS)
    model = prepare(workload, catalog)
    table, background = option_table(model), background_table(model)
    F, H = model.fleet, workload.hours_per_month
    a10g, a100 = F.names.index("a10g-x1-0"), F.names.index("a100-80gb-x1-1")

    def least_load(k, g):
        rows = np.flatnonzero((table.k == k) & (table.g == g) & table.allowed)
        return table.gpu_load[rows].min(), rows[table.gpu_load[rows] == table.gpu_load[rows].min()]

    load = 0.0
    for k, count in enumerate(model.demand.count):
        least, rows = least_load(k, a10g)
        assert (table.direct_usd[rows] == 0).any()  # the least-load option stores for free
        load += count * least
    load += background.gpu_load[(background.g == a10g) & background.allowed].min()
    instances = math.ceil(load / F.gpu_capacity[a10g])
    optimum = instances * F.price[a10g] * H
    c4 = model.context_class[list(workload.contexts["id"]).index("c4")]
    assert least_load(c4, a100)[0] > F.gpu_capacity[a100] * F.max_instances[a100]
    with_a100 = math.ceil(least_load(c4, a10g)[0] / F.gpu_capacity[a10g]) * F.price[a10g] + F.price[a100]
    assert with_a100 * H > optimum

    plan = make_plan(workload, catalog, baselines=False)
    assert plan["violations"] == []
    assert plan["fleet"] == [{**plan["fleet"][0], "offering": "a10g-x1-0", "instances": instances,
                              "hbm_cache": False, "background_share": 1.0}]
    assert plan["total_usd"] == pytest.approx(optimum, abs=0.005)

    from click.testing import CliRunner

    from planner.cli import main

    result = CliRunner().invoke(main, ["plan", str(REPRO / "workload.yaml"), "--catalog",
                                       str(REPRO / "catalog.yaml"), "--no-baselines", "-q"])
    assert result.exit_code == 0, result.output
    assert "VIOLATIONS" not in result.output and "a100-80gb-x1-1" not in result.output

"""`kvplan explain`: every option of a context, why the plan chose it (checked against re-solves with the context
forced elsewhere), the reuse rate at which it flips, and what the fleet's capacities are worth."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from planner.analyses import explain
from planner.cli import main
from planner.inputs.catalog import load_catalog, load_models
from planner.plan.files import saved_inputs, saved_placement
from planner.plan.options import prepare
from planner.plan.pricing import price
from planner.plan.runner import make_plan

ROOT = Path(__file__).resolve().parent.parent
MODELS = load_models()
AWS = load_catalog("aws", MODELS)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, rag_docs_head):
    """The first 80 documents of the rag-docs example, planned to a 1e-9 gap, saved and read back."""
    plan = json.loads(json.dumps(make_plan(rag_docs_head(80), AWS, gap=1e-9, baselines=False)))
    path = tmp_path_factory.mktemp("explain") / "plan.json"
    path.write_text(json.dumps(plan))
    model = prepare(*saved_inputs(plan, str(path)))
    placement = saved_placement(plan, str(path), model)
    return plan, path, model, placement, price(model, placement)


def test_every_option_is_listed_and_the_choice_is_the_plans(saved):
    plan, _, model, placement, priced = saved
    G, T = len(model.fleet.names), len(model.tiers.names)
    for row in plan["contexts"][:10]:
        result = explain.context(model, placement, priced, row["id"])
        options = result["options"]
        assert len(options) == G * T
        chosen = options[options["chosen"]]
        assert len(chosen) == 1
        assert (chosen["offering"].item(), chosen["tier"].item()) == (row["offering"], row["tier"])
        assert chosen["verdict"].item() == "ok"
        assert chosen["ttft_s"].item() == pytest.approx(row["ttft_s"], abs=1e-6)
        assert result["chosen"]["usd_in_plan"] == pytest.approx(row["usd"], abs=1e-6)
        # SLO verdicts by hand: over the TTFT SLO means "TTFT ... > SLO"
        over = options["ttft_s"] > row["slo_s"] * (1 + 1e-9)
        assert not options.loc[over, "verdict"].eq("ok").any()


def test_a_choice_forced_by_capacity_names_a_full_row(saved):
    plan, _, model, placement, priced = saved
    table = explain.capacity(model, placement, priced, resolve=False)
    forced = []
    for row in plan["contexts"]:
        result = explain.context(model, placement, priced, row["id"])
        if "needs more" in result["why"]:
            forced.append((result["why"], result["tokens"]))
    assert forced, "the 80-document plan has contexts kept off a full HBM cache"
    kv_bytes = MODELS["Llama-3.1-8B"].kv_bytes_per_token   # the rag-docs model
    for why, tokens in forced:
        resource, offering = why.split("needs more ")[1].split(" (")[0].split(" on ")
        line = table[(table["offering"] == offering) & (table["resource"] == resource)]
        if resource.endswith("_gb"):   # a memory: what is left of it cannot hold this context's KV cache
            assert line["capacity"].item() - line["used"].item() < tokens * kv_bytes / 1e9
        else:
            assert line["share"].item() >= 0.99 and line["binding"].item()


def test_explain_agrees_with_resolves(saved):
    """Forced back onto its own option, the re-solved plan costs what the plan costs. Forced elsewhere it costs no
    less (the plan is optimal); where the other option needs no change to the fleet, no more than the plan plus
    the difference of the two options' costs at the margin (moving the one context is such a plan)."""
    plan, _, model, placement, priced = saved
    total = plan["total_usd"]
    checked_margin = 0
    for row in plan["contexts"][:2]:
        result = explain.context(model, placement, priced, row["id"])
        options = result["options"]
        again = explain.resolved_total(model, row["id"], row["offering"], row["tier"])
        assert again == pytest.approx(total, rel=1e-6)
        chosen = options[options["chosen"]].iloc[0]
        others = options[(options["verdict"] == "ok") & ~options["chosen"]].sort_values("usd_margin").head(3)
        for other in others.itertuples():
            forced = explain.resolved_total(model, row["id"], other.offering, other.tier)
            assert forced is not None and forced >= total * (1 - 1e-6)
            if other.needs == "" and other.gpu_fits:
                assert forced <= total + other.usd_margin - chosen["usd_margin"] + 1e-6 * total
                checked_margin += 1
    assert checked_margin, "some alternative needed no change of fleet"


def test_the_flip_rate_is_where_the_choice_is_first_beaten(saved):
    """Just short of the flip rate the choice is still the cheapest option at the margin that needs no change of
    fleet; just past it, the option named is cheaper; and so at every rate between the context's own and the flip."""
    plan, _, model, placement, priced = saved
    flips = 0
    for row in plan["contexts"][:20]:
        result = explain.context(model, placement, priced, row["id"])
        flip = result["flip"]
        if flip is None:
            continue
        flips += 1
        options = result["options"]
        free = ((options["verdict"] == "ok") & (options["needs"] == "")).to_numpy()
        chosen = int(np.flatnonzero(options["chosen"].to_numpy())[0])
        to = int(np.flatnonzero(((options["offering"] == flip["to"]["offering"])
                                 & (options["tier"] == flip["to"]["tier"])).to_numpy())[0])
        i = model.workload.contexts["id"].tolist().index(row["id"])
        used, cap = explain._usage(model, placement, priced)
        room = cap - used
        room[placement.offering[i]] += explain._resource_use(model, priced.options.take(np.array([i])))[0]
        f, rate = result["reuses_per_month"], flip["reuses_per_month"]
        between = np.geomspace(f, rate, 30)[:-1] * (1 - 1e-6 if rate > f else 1 + 1e-6)
        cost = explain.margins(model, placement, i, np.r_[between, rate * (1 + 1e-6 if rate > f else 1 - 1e-6)],
                               room)
        assert free[to]
        assert np.all(np.where(free, cost[:-1], np.inf).min(axis=1) >= cost[:-1, chosen] * (1 - 1e-9) - 1e-12)
        assert cost[-1, to] < cost[-1, chosen]
    assert flips


def test_capacity_uses_and_one_more_or_fewer(saved):
    plan, _, model, placement, priced = saved
    table = explain.capacity(model, placement, priced, resolve=True)
    total = plan["total_usd"]
    for f in plan["fleet"]:
        g = model.fleet.pool(f["offering"], f["tp"])
        lines = table[table["offering"] == model.fleet.names[g]].set_index("resource")
        # GPU use by hand: the contexts' and background's peak loads, against instances · utilisation · GPUs
        load = priced.options.gpu_load[priced.options.g == g].sum()
        load += (priced.background_share * priced.background.gpu_load)[priced.background.g == g].sum()
        assert lines.loc["gpu", "used"] == pytest.approx(load, rel=1e-12)
        assert lines.loc["gpu", "capacity"] == pytest.approx(f["instances"] * model.fleet.gpu_capacity[g], rel=1e-12)
        more = lines["one_more_usd"].iloc[0]
        price_month = f["price_per_hour"] * 730
        assert lines["instance_usd"].iloc[0] == pytest.approx(price_month, rel=1e-12)
        # one more instance: the plan was optimal, so no cheaper; placement no dearer, so at most its price
        assert -1e-6 * total <= more <= price_month + 1e-6 * total


def test_cli_explain(saved):
    plan, path, *_ = saved
    runner = CliRunner()
    first = plan["contexts"][0]
    result = runner.invoke(main, ["explain", str(path), "--context", first["id"], "--resolve", "1", "-q"])
    assert result.exit_code == 0, result.output
    assert f"Chosen: {first['tier']} on {first['offering']}" in result.output
    assert "<- chosen" in result.output and "plan total if forced" in result.output
    as_json = runner.invoke(main, ["explain", str(path), "--context", first["id"], "--json"])
    data = json.loads(as_json.output)
    assert data["chosen"]["tier"] == first["tier"] and len(data["options"]) > 1
    capacity = runner.invoke(main, ["explain", str(path), "--capacity"])
    assert capacity.exit_code == 0 and "gpu" in capacity.output and plan["fleet"][0]["offering"] in capacity.output
    missing = runner.invoke(main, ["explain", str(path), "--context", "no-such-doc"])
    assert missing.exit_code == 2 and "no context with id 'no-such-doc'" in missing.output
    neither = runner.invoke(main, ["explain", str(path)])
    assert neither.exit_code == 2 and "--context" in neither.output

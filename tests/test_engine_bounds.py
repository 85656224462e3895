"""The engine's bound is a lower bound and its plan a plan (issue #23): on small instances of every bench family
(bench/families.py), exact optimum in hand, bound <= optimum <= plan and plan - optimum <= the reported gap;
where no plan exists, both methods say so with the same diagnosis. Every seed is counted."""

import copy

import pytest
import yaml

import families
from planner.inputs.catalog import bundled_dir, load_models, parse_catalog
from planner.inputs.errors import Infeasible
from planner.inputs.fields import load_yaml
from planner.inputs.workload import parse_workload
from planner.plan.runner import make_plan

MODELS = load_models()
# a few offerings of every kind the families bind: small and large L40S, an A10G, an H100, a 4-GPU instance
# (three tensor-parallel versions), with every aws tier
OFFERINGS = {"g5.xlarge", "g6e.xlarge", "g6e.4xlarge", "g6e.12xlarge", "p5.4xlarge"}
SEEDS = (0, 1)


def small_aws():
    raw = copy.deepcopy(load_yaml(bundled_dir() / "aws.yaml"))
    raw["offerings"] = [o for o in raw["offerings"] if o["name"] in OFFERINGS]
    return parse_catalog(raw, "aws-small", MODELS)


def instance(family: str, seed: int, n: int = 150):
    text, contexts = families.make(family, n, seed)
    data = yaml.safe_load(text)
    data.pop("contexts_file", None)
    data["contexts"] = [{k: (None if v != v else v) for k, v in row.items()} for row in contexts.to_dict("records")]
    return parse_workload(data, f"{family}-{seed}.yaml", MODELS, None)


def test_bound_optimum_plan_bracket_on_every_family():
    catalog = small_aws()
    compared, infeasible = 0, 0
    for family in families.FAMILIES:
        for seed in SEEDS:
            workload = instance(family, seed)
            try:
                exact = make_plan(workload, catalog, method="exact", gap=1e-6, baselines=False)
            except Infeasible as exact_says:
                with pytest.raises(Infeasible) as engine_says:
                    make_plan(workload, catalog, method="scale", baselines=False)
                assert str(engine_says.value).split(":")[0] == str(exact_says).split(":")[0], (family, seed)
                infeasible += 1
                continue
            engine = make_plan(workload, catalog, method="scale", baselines=False)
            optimum, plan, bound = exact["total_usd"], engine["total_usd"], engine["solver"]["lower_bound_usd"]
            assert exact["solver"]["status"] == "optimal" and engine["violations"] == [], (family, seed)
            assert bound <= optimum * (1 + 1e-6) + 0.01, (family, seed, bound, optimum)
            assert plan >= optimum - 0.01, (family, seed, plan, optimum)
            assert plan - optimum <= engine["solver"]["gap"] * plan + 0.01, (family, seed, plan, optimum)
            compared += 1
    assert compared + infeasible == len(families.FAMILIES) * len(SEEDS)
    assert compared >= 6  # the families plan at this size; a silent skip would show here

"""The exact program's first plan (solve.exact.first_plan): a plan of the whole program found on a few pools, handed
to the solver as its first incumbent. It must be a true plan (every row of the program holds at its values, and its
objective is what they cost), never below the optimum, and starting from it must not change the optimum."""

import numpy as np
import pulp
import pytest

from planner.plan.options import background_table, drop_dominated, option_table, prepare, problem_of
from planner.plan.runner import make_plan
from planner.solve import exact

from test_optimality import brute_force

SEEDS = range(12)


def _instance(seed, random_instance):
    rng = np.random.default_rng(seed)
    n_contexts = int(rng.integers(2, 5))
    return random_instance(rng, n_contexts, 3, 2, "provisioned")


def _problem(workload, catalog):
    model = prepare(workload, catalog)
    table, background = option_table(model), background_table(model)
    return problem_of(model, drop_dominated(table.take(table.allowed), model.tiers),
                      background.take(background.allowed))


@pytest.mark.parametrize("pools", [1, 2])
def test_first_plan_is_a_plan_of_the_whole_program_and_never_below_the_optimum(pools, random_instance):
    compared = 0
    for seed in SEEDS:
        workload, catalog = _instance(seed, random_instance)
        optimum = brute_force(workload, catalog)
        p = _problem(workload, catalog)
        first = exact.first_plan(p, "highs", 1e-9, None, pools=pools)
        if optimum is None or first is None:
            continue
        prob, _ = exact.build(p, True)
        for var in prob.variables():
            var.varValue = first.values.get(var.name, 0.0)
        assert prob.valid(1e-6), f"seed {seed}: the first plan breaks a row of the whole program"
        assert pulp.value(prob.objective) == pytest.approx(first.objective, rel=1e-9, abs=1e-6)
        assert first.objective >= optimum - 1e-6 * max(1.0, optimum)
        assert set(np.unique(p.options.g[[int(name[2:]) for name, v in first.values.items()
                                          if name.startswith("z_") and v > 0]])) <= set(first.pools.tolist())
        compared += 1
    assert compared >= 6, f"only {compared} of {len(SEEDS)} instances had a plan to compare"


def test_starting_from_the_first_plan_keeps_the_optimum(random_instance, monkeypatch):
    monkeypatch.setattr(exact, "FIRST_PLAN_OPTIONS", 0)   # every program starts from a first plan ...
    monkeypatch.setattr(exact, "FIRST_PLAN_POOLS", 1)     # ... on as few pools as can serve every class
    compared = 0
    for seed in SEEDS:
        workload, catalog = _instance(seed, random_instance)
        optimum = brute_force(workload, catalog)
        if optimum is None:
            continue
        plan = make_plan(workload, catalog, gap=1e-9, baselines=False, method="exact")
        assert plan["total_usd"] == pytest.approx(optimum, rel=1e-7, abs=1e-6), f"seed {seed}"
        assert plan["solver"]["status"] == "optimal"
        compared += 1
    assert compared >= 6, f"only {compared} of {len(SEEDS)} instances had an optimum to compare"

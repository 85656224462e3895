"""Scenarios, sweeps and robust plans: overrides applied as written, a process pool equal to one process row by
row, resume, quantiles and tornado by hand, and a robust plan's regrets by hand on a 3-scenario example."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from planner.analyses import scenarios as sc
from planner.analyses import sweep
from planner.analyses.robust import cvar, parse_objective, robust_plan
from planner.cli import main
from planner.inputs.catalog import load_models
from planner.inputs.errors import InputError
from planner.present.summary import sweep_summary_text

ROOT = Path(__file__).resolve().parent.parent
MODELS = load_models()
H = 730.0


def write(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def tiny(tmp_path):
    """Two contexts of rag-docs' model on a two-offering catalog (same GPU, prices 1 and 2 $/h), no stored tier:
    every plan is one instance of the cheaper offering, recomputing."""
    catalog = write(tmp_path / "two.yaml", {
        "name": "two", "as_of": "2026-11-26",
        "gpus": {"L40S": {"tflops": 362, "hbm_gb": 48, "hbm_gbps": 864, "pcie_gbps": 32}},
        "offerings": [{"name": "A", "gpu": "L40S", "gpus": 1, "price_per_hour": {"on_demand": 1.0}},
                      {"name": "B", "gpu": "L40S", "gpus": 1, "price_per_hour": {"on_demand": 2.0}}],
        "tiers": [{"name": "blob", "kind": "object", "price_gb_month": 0.02, "first_byte_latency_s": 0.01,
                   "read_gbps": 1.0}]})
    workload = write(tmp_path / "w.yaml", {
        "name": "tiny", "model": "Llama-3.1-8B", "slo": {"ttft_s": 30.0},
        "contexts": [{"id": "a", "tokens": 1000, "reuses_per_month": 100, "prompt_tokens": 50, "output_tokens": 20},
                     {"id": "b", "tokens": 2000, "reuses_per_month": 50, "prompt_tokens": 50, "output_tokens": 20}]})
    return tmp_path, workload, catalog


def test_overrides_are_applied_as_written(tiny):
    folder, workload, catalog = tiny
    file = write(folder / "s.yaml", {"scenarios": [
        {"name": "x", "reuse_scale": 3.0, "gpu_price_scale": {"L40S": 0.5}, "storage_price_scale": 2.0,
         "workload": {"peak_to_mean": 4.0, "slo": {"ttft_s": 5.0}},
         "catalog": {"offerings": [{"name": "B", "max_instances": 1}]}}]})
    (x,) = sc.load_scenarios(file)
    assert x.parameters == {"reuse_scale": 3.0, "gpu_price_scale": {"L40S": 0.5}, "storage_price_scale": 2.0,
                            "workload.peak_to_mean": 4.0, "workload.slo.ttft_s": 5.0,
                            "catalog.offerings": [{"name": "B", "max_instances": 1}]}
    w, c = sc.apply(sc.load_base(workload, str(catalog), file), x, MODELS)
    assert w.contexts["reuses_per_month"].tolist() == [300.0, 150.0]
    assert w.peak_to_mean == 4.0 and w.ttft_slo_s == 5.0
    assert [o.prices["on_demand"] for o in c.offerings] == [0.5, 1.0]
    assert c.offering("B").max_instances == 1 and c.offering("A").max_instances is None
    assert c.tiers[0].price_gb_month == pytest.approx(0.04)
    with pytest.raises(InputError, match="unknown parameter 'reuses'"):
        sc.load_scenarios(write(folder / "bad.yaml", {"scenarios": [{"name": "y", "reuses": 2}]}))


def test_grid_and_draws_are_seeded_and_named(tiny):
    folder, *_ = tiny
    file = write(folder / "s.yaml", {
        "grid": {"reuse_scale": [1, 2], "workload.pricing": ["on_demand", "spot"]},
        "random": {"samples": 3, "seed": 7, "parameters": {"gpu_price_scale": {"uniform": {"low": 0.5, "high": 1}}}}})
    scenarios = sc.load_scenarios(file)
    assert [s.id for s in scenarios] == ["grid-0001", "grid-0002", "grid-0003", "grid-0004",
                                         "draw-0001", "draw-0002", "draw-0003"]
    assert scenarios[1].parameters == {"reuse_scale": 1, "workload.pricing": "spot"}
    draws = [s.parameters["gpu_price_scale"] for s in scenarios[4:]]
    assert draws == list(np.random.default_rng(7).uniform(0.5, 1, 3))
    assert [s.parameters for s in sc.load_scenarios(file)] == [s.parameters for s in scenarios]
    assert len(sc.load_scenarios(file, samples=10)) == 14


def test_sweep_pool_equals_one_process_and_resumes(tiny):
    folder, workload, catalog = tiny
    file = write(folder / "s.yaml", {"scenarios": [{"name": "base"}, {"name": "dear-a", "catalog": {
        "offerings": [{"name": "A", "price_per_hour": {"on_demand": 3.0}}]}}],
        "grid": {"gpu_price_scale": [0.5, 1.5]}})
    runner = CliRunner()
    one = runner.invoke(main, ["sweep", str(workload), "--catalog", str(catalog), "--scenarios", str(file),
                               "--workers", "1", "--out", str(folder / "one.csv"), "-q", "--json"])
    assert one.exit_code == 0, one.output
    pool = runner.invoke(main, ["sweep", str(workload), "--catalog", str(catalog), "--scenarios", str(file),
                                "--workers", "2", "--out", str(folder / "pool.parquet"), "-q"])
    assert pool.exit_code == 0, pool.output
    a = pd.read_csv(folder / "one.csv")
    b = pd.read_parquet(folder / "pool.parquet")
    assert a["scenario"].tolist() == ["base", "dear-a", "grid-0001", "grid-0002"]
    pd.testing.assert_frame_equal(a, pd.read_csv(folder / "pool.csv"))
    assert a["total_usd"].tolist() == pytest.approx(b["total_usd"].tolist(), rel=1e-12)
    # by hand: one instance of the cheaper offering, recomputing: 730 h at its price
    assert a["total_usd"].tolist() == pytest.approx([1 * H, 2 * H, 0.5 * H, 1.5 * H], rel=1e-9)
    assert a["fleet"].tolist() == ["1x A", "1x B", "1x A", "1x A"]
    summary = json.loads(one.output)
    totals = sorted(a["total_usd"])
    assert [q["total_usd"] for q in summary["quantiles"]] == pytest.approx([totals[0], totals[1], totals[3]])
    tornado = {t["parameter"]: t for t in summary["tornado"]}
    assert tornado["gpu_price_scale"]["swing_usd"] == pytest.approx((1.5 - 0.5) * H)
    # resume: the rows already there are kept, only the missing one is planned
    a.iloc[:3].to_csv(folder / "one.csv", index=False)
    again = runner.invoke(main, ["sweep", str(workload), "--catalog", str(catalog), "--scenarios", str(file),
                                 "--workers", "1", "--out", str(folder / "one.csv")])
    assert again.exit_code == 0, again.output
    assert "resuming: 3 scenarios already" in again.output and "planning 1 scenarios" in again.output
    pd.testing.assert_frame_equal(pd.read_csv(folder / "one.csv"), a)


def test_summary_counts_plans_not_proven_optimal():
    frame = pd.DataFrame({"scenario": ["a", "b", "c", "d"], "status": ["optimal", "time_limit", "time_limit",
                                                                        "infeasible"],
                          "total_usd": [100.0, 120.0, 90.0, None], "gap": [0.0, 0.05, 0.125, None],
                          "fleet": ["", "", "", ""], "tiers": ["", "", "", ""]})
    s = sweep.sweep_summary(frame)
    assert (s["planned"], s["not_planned"]) == (3, {"infeasible": 1})
    assert s["unproven"] == {"scenarios": 2, "largest_gap": 0.125}
    assert [q["scenario"] for q in s["quantiles"]] == ["c", "a", "b"]
    assert "2 of them stopped before the gap was proven (largest gap 12.50%)" in sweep_summary_text(s)
    assert sweep.sweep_summary(frame.iloc[[0]])["unproven"] == {"scenarios": 0, "largest_gap": None}


def test_robust_regrets_by_hand(tiny):
    """A costs 1, 1 and 3.5 $/h in three scenarios, B 2 $/h in all; one instance serves each. Own optima: A, A,
    B. Expected: A (mean 1.83 < 2), regrets 0, 0, 1.5 h-prices. Worst case and CVaR 0.5: B (max 2 < 3.5),
    regrets 1, 1, 0."""
    folder, workload, catalog = tiny
    file = write(folder / "s.yaml", {"scenarios": [
        {"name": "s1"}, {"name": "s2"},
        {"name": "s3", "catalog": {"offerings": [{"name": "A", "price_per_hour": {"on_demand": 3.5}}]}}]})
    base = sc.load_base(workload, str(catalog), file)
    scenarios = sc.load_scenarios(file)
    own = [1 * H, 1 * H, 2 * H]
    for objective, alpha, fleet, robust in (("expected", None, "A", [1 * H, 1 * H, 3.5 * H]),
                                            ("worst", None, "B", [2 * H] * 3),
                                            ("cvar", 0.5, "B", [2 * H] * 3)):
        result = robust_plan(base, scenarios, objective, alpha, MODELS, gap=1e-9)
        assert result["fleet"] == [{"offering": fleet, "tp": 1, "instances": 1}], objective
        rows = result["scenarios"]
        assert [r["robust_usd"] for r in rows] == pytest.approx(robust, rel=1e-9)
        assert [r["own_optimum_usd"] for r in rows] == pytest.approx(own, rel=1e-9)
        assert [r["regret_usd"] for r in rows] == pytest.approx(np.subtract(robust, own), abs=1e-6)
        assert all(r["violations"] == [] for r in rows)
    result = robust_plan(base, scenarios, "expected", None, MODELS, gap=1e-9)
    assert result["objective_usd"] == pytest.approx((1 + 1 + 3.5) * H / 3)
    out = CliRunner().invoke(main, ["plan", str(workload), "--catalog", str(catalog), "--scenarios", str(file),
                                    "--robust", "worst", "-q"])
    assert out.exit_code == 0, out.output
    assert "1x B" in out.output and f"${2 * H:,.2f}" in out.output


def test_cvar_and_objectives():
    assert cvar(np.array([1.0, 2.0, 3.0, 4.0]), 0.5) == pytest.approx(3.5)
    assert cvar(np.array([1.0, 2.0, 3.0]), 0.5) == pytest.approx((3 + 0.5 * 2) / 1.5)
    assert cvar(np.array([1.0, 2.0, 3.0]), 0.0) == pytest.approx(2.0)
    assert parse_objective("cvar:0.9") == ("cvar", 0.9)
    with pytest.raises(InputError):
        parse_objective("cvar:1.5")


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head on loopback, started as a user would (`ray start --head`), stopped after this module's tests."""
    pytest.importorskip("ray")
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray = [sys.executable, "-c", "from ray.scripts.scripts import main; main()"]
    env = {**__import__("os").environ, "RAY_USAGE_STATS_ENABLED": "0"}
    started = subprocess.run([*ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                              "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"],
                             capture_output=True, text=True, env=env, timeout=180)
    assert started.returncode == 0, started.stderr[-2000:]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([*ray, "stop", "--force"], capture_output=True, env=env, timeout=120)


def test_sweep_on_ray_equals_the_local_run(tiny, ray_head):
    folder, workload, catalog = tiny
    file = write(folder / "s.yaml", {"scenarios": [{"name": "base"}],
                                     "grid": {"gpu_price_scale": [0.5, 1.5], "reuse_scale": [1, 3]}})
    runner = CliRunner()
    args = ["sweep", str(workload), "--catalog", str(catalog), "--scenarios", str(file), "-q"]
    local = runner.invoke(main, [*args, "--workers", "1", "--out", str(folder / "local.csv")])
    assert local.exit_code == 0, local.output
    on_ray = runner.invoke(main, [*args, "--ray", ray_head, "--out", str(folder / "ray.csv")])
    assert on_ray.exit_code == 0, on_ray.output
    pd.testing.assert_frame_equal(pd.read_csv(folder / "local.csv"), pd.read_csv(folder / "ray.csv"))
    assert len(pd.read_csv(folder / "ray.csv")) == 5


def _kill_first_task(name: bytes, process) -> int | None:
    """SIGKILL the first Ray worker seen running task `name` (Ray titles it ray::NAME) while `process` runs."""
    import os
    import signal
    import time

    while process.poll() is None:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if title.startswith(b"ray::" + name):
                os.kill(int(pid), signal.SIGKILL)
                return int(pid)
        time.sleep(0.01)
    return None


def test_a_lost_ray_worker_s_scenario_is_run_again(tmp_path, ray_head):
    """A worker killed mid-scenario: Ray runs the scenario again elsewhere and the sweep equals the local run."""
    import subprocess
    import sys

    workload = ROOT / "examples" / "paper" / "workload.yaml"  # about a second per plan: long enough to kill one
    file = write(tmp_path / "s.yaml", {"grid": {"gpu_price_scale": [0.8, 1.0, 1.2]}})
    args = ["sweep", str(workload), "--catalog", "aws", "--scenarios", str(file), "-q"]
    local = CliRunner().invoke(main, [*args, "--workers", "1", "--out", str(tmp_path / "local.csv")])
    assert local.exit_code == 0, local.output
    sweep = subprocess.Popen([sys.executable, "-m", "planner", *args, "--ray", ray_head,
                              "--out", str(tmp_path / "ray.csv")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    killed = _kill_first_task(b"plan_scenario", sweep)
    _, err = sweep.communicate(timeout=600)
    assert killed is not None, "no scenario was seen running on the cluster"
    assert sweep.returncode == 0, err.decode()[-2000:]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "local.csv"), pd.read_csv(tmp_path / "ray.csv"))


def test_tornado_of_a_drawn_number_skips_the_scenarios_that_do_not_set_it():
    """20 draws of a price scale (total = 1000 × scale) beside a named scenario without it and one with a
    factor per GPU (the column is text, as the sweep writes it): the tornado compares the lowest and highest
    tenth of the draws (two each), by hand."""
    scale = np.arange(1, 21) / 10.0
    frame = pd.DataFrame({"scenario": ["base", "l40s", *(f"draw-{i:04d}" for i in range(1, 21))],
                          "p.gpu_price_scale": ["", '{"L40S":0.7}', *map(str, scale)], "status": "optimal",
                          "total_usd": [5000.0, 9000.0, *(1000.0 * scale)], "gap": 0.0, "fleet": "", "tiers": ""})
    (t,) = sweep.sweep_summary(frame)["tornado"]
    assert (t["low"], t["high"]) == ("lowest 10%", "highest 10%")
    assert t["total_low_usd"] == pytest.approx(1000 * (0.1 + 0.2) / 2)
    assert t["total_high_usd"] == pytest.approx(1000 * (1.9 + 2.0) / 2)
    assert t["spearman"] == pytest.approx(1.0)

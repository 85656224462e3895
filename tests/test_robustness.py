"""Faults and determinism: solver trouble, time limits, interrupted writes, byte-identical plans."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from planner.cli import main
from planner.inputs.catalog import load_catalog, load_models
from planner.inputs.errors import Infeasible
from planner.inputs.workload import load_workload, parse_workload
from planner.plan.runner import make_plan
from planner.solve import highs

ROOT = Path(__file__).resolve().parent.parent
MODELS = load_models()
AWS = load_catalog("aws", MODELS)


def test_plans_of_identical_inputs_are_byte_identical():
    runner = CliRunner()
    for args in (["plan", str(ROOT / "examples/paper/workload.yaml"), "--catalog", "paper-2025", "--json", "-q"],
                 ["plan", str(ROOT / "examples/chatbot-prompts/workload.yaml"), "--catalog", "aws", "--json", "-q",
                  "--no-baselines"]):
        first, second = runner.invoke(main, args), runner.invoke(main, args)
        assert first.exit_code == second.exit_code == 0
        assert first.stdout_bytes == second.stdout_bytes
        plan = json.loads(first.stdout)
        assert plan["kvplan_version"] and plan["catalog"]["as_of"]
        assert all(len(sha) == 64 for sha in plan["inputs"]["files"].values())
        assert len(plan["inputs"]["files"]) == 2  # the workload and its contexts file
        assert len(next(iter(plan["inputs"]["catalog_file"].values()))) == 64
        assert plan["solver"]["seconds"] is None
    timed = json.loads(runner.invoke(main, args + ["--timing"]).stdout)
    assert timed["solver"]["seconds"] > 0


def test_a_broken_highs_falls_back_to_cbc(monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("simulated solver crash")
    monkeypatch.setattr(highs, "solve_highs", broken)
    w = load_workload(ROOT / "examples/chatbot-prompts/workload.yaml", MODELS)
    with caplog.at_level(logging.WARNING, logger="kvplan"):
        plan = make_plan(w, AWS, baselines=False)
    assert plan["solver"]["name"] == "cbc" and plan["solver"]["status"] == "optimal"
    assert any("falling back to CBC" in r.getMessage() for r in caplog.records)
    assert plan["violations"] == []


def test_running_out_of_memory_is_said_in_one_line_with_exit_1(monkeypatch):
    """A problem too large for the machine is not a bug: one line saying so, and the exit code of an unsolved
    plan (the bench's baseline runs out of memory at 50,000 contexts)."""
    from planner.cli import plan as plan_command_module

    def too_large(*args, **kwargs):
        raise MemoryError
    monkeypatch.setattr(plan_command_module, "make_plan", too_large)
    result = CliRunner().invoke(main, ["plan", str(ROOT / "examples/chatbot-prompts/workload.yaml"), "--catalog",
                                       "aws", "-q"])
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("out of memory:") and "Traceback" not in result.output


def test_a_time_limit_returns_the_best_plan_with_its_gap():
    result = CliRunner().invoke(main, ["plan", str(ROOT / "examples/rag-docs/workload.yaml"), "--catalog", "aws",
                                       "--json", "-q", "--no-baselines", "--time-limit", "2"])
    assert result.exit_code == 0
    plan = json.loads(result.stdout)
    assert plan["solver"]["status"] == "time_limit"
    assert plan["solver"]["gap"] > 1e-4
    assert plan["violations"] == []
    assert plan["solver"]["lower_bound_usd"] is None or plan["solver"]["lower_bound_usd"] <= plan["total_usd"]


def test_infeasibility_names_the_smallest_change():
    w = parse_workload({"model": "Llama-3.1-8B", "slo": {"ttft_s": 1.0},
                        "contexts": [{"id": "long", "tokens": 100_000, "reuses_per_month": 1, "prompt_tokens": 100,
                                      "output_tokens": 10, "ttft_slo_s": 0.0001}]}, "w.yaml", MODELS, Path("."))
    with pytest.raises(Infeasible, match=r"smallest change: a TTFT SLO of [0-9.]+ s") as err:
        make_plan(w, AWS)
    best = float(str(err.value).split("best TTFT ")[1].split(" s")[0])
    suggested = float(str(err.value).split("a TTFT SLO of ")[1].split(" s")[0])
    assert suggested >= best
    relaxed = parse_workload({"model": "Llama-3.1-8B", "slo": {"ttft_s": 1.0},
                              "contexts": [{"id": "long", "tokens": 100_000, "reuses_per_month": 1,
                                            "prompt_tokens": 100, "output_tokens": 10, "ttft_slo_s": suggested}]},
                             "w.yaml", MODELS, Path("."))
    assert make_plan(relaxed, AWS, baselines=False)["contexts"][0]["ttft_s"] <= suggested


WRITER = """
import sys
from pathlib import Path
from planner.cli.common import write_atomic
write_atomic(Path(sys.argv[1]), "{" + "x" * 400_000_000 + "}")
"""


def test_a_write_killed_midway_leaves_the_old_plan_intact(tmp_path):
    target = tmp_path / "plan.json"
    target.write_text('{"total_usd": 1.0}')
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(target)])
    deadline = time.time() + 30
    while time.time() < deadline and not any(p.name.endswith(".tmp") and p.stat().st_size > 10_000_000
                                             for p in tmp_path.iterdir()):
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir()), "the kill came after the write"
    assert json.loads(target.read_text()) == {"total_usd": 1.0}


def test_out_refuses_to_overwrite_without_force(tmp_path):
    runner = CliRunner()
    args = ["plan", str(ROOT / "examples/paper/workload.yaml"), "--catalog", "paper-2025", "--out", str(tmp_path), "-q"]
    assert runner.invoke(main, args).exit_code == 0
    before = (tmp_path / "plan.json").read_bytes()
    refused = runner.invoke(main, args)
    assert refused.exit_code == 2 and "--force" in refused.stderr
    assert (tmp_path / "plan.json").read_bytes() == before
    assert runner.invoke(main, args + ["--force"]).exit_code == 0


def test_csv_export_neutralises_spreadsheet_formulas(tmp_path):
    workload = tmp_path / "w.yaml"
    workload.write_text(json.dumps({
        "model": "Llama-7B-paper", "mode": "per_use", "slo": {"ttft_s": 60},
        "contexts": [{"id": i, "tokens": 2000, "reuses_per_month": 5, "prompt_tokens": 10, "output_tokens": 10}
                     for i in ('=HYPERLINK("x")', "+1", "-2", "@SUM(A1)", "plain")]}))
    result = CliRunner().invoke(main, ["plan", str(workload), "--catalog", "paper-2025", "--out",
                                       str(tmp_path / "out"), "-q"])
    assert result.exit_code == 0, result.output
    ids = [line.split(",")[0] for line in (tmp_path / "out" / "contexts.csv").read_text().splitlines()[1:]]
    assert all(not i.lstrip('"').startswith(("=", "+", "-", "@")) for i in ids), ids
    assert "plain" in ids


def test_a_budget_below_the_cheapest_plan_is_explained():
    args = ["plan", str(ROOT / "examples/chatbot-prompts/workload.yaml"), "--catalog", "aws", "--no-baselines", "-q"]
    plan = json.loads(CliRunner().invoke(main, args + ["--json"]).stdout)
    total = plan["total_usd"]
    refused = CliRunner().invoke(main, args + ["--budget", str(total - 100)])
    assert refused.exit_code == 1
    assert refused.stderr.startswith("infeasible: over budget") and f"${total:,.2f}" in refused.stderr
    assert "smallest change: a budget of" in refused.stderr
    assert CliRunner().invoke(main, args + ["--budget", str(total + 1)]).exit_code == 0

"""End-to-end tests of the `kvplan` command line (planner/cli.py) on small workloads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from planner.cli import main

REPO = Path(__file__).resolve().parent.parent
CENT = 0.005

SMALL_WORKLOAD = """\
name: small
model: Llama-3.1-8B
mode: provisioned
hours_per_month: 730
peak_to_mean: 2.0
slo: {ttft_s: 3.0, tpot_s: 0.1}
traffic: {requests_per_month: 10000, prompt_tokens: 200, output_tokens: 100}
contexts:
  - {id: c1, tokens: 2000, reuses_per_month: 100, prompt_tokens: 100, output_tokens: 100}
  - {id: c2, tokens: 8000, reuses_per_month: 1000, prompt_tokens: 100, output_tokens: 100}
  - {id: c3, tokens: 30000, reuses_per_month: 10, prompt_tokens: 100, output_tokens: 100}
  - {id: c4, tokens: 500, reuses_per_month: 5000, prompt_tokens: 100, output_tokens: 100}
  - {id: c5, tokens: 60000, reuses_per_month: 300, prompt_tokens: 100, output_tokens: 100}
"""


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def workload(tmp_path: Path) -> Path:
    path = tmp_path / "workload.yaml"
    path.write_text(SMALL_WORKLOAD, encoding="utf-8")
    return path


def plan_json(runner: CliRunner, *args: str) -> dict:
    result = runner.invoke(main, ["plan", *args, "--json"])
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout)


# --- help ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["--help"], ["plan", "--help"], ["evaluate", "--help"]],
                         ids=["main", "plan", "evaluate"])
def test_help_exits_zero(runner: CliRunner, args: list[str]) -> None:
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout


# --- plan --json --------------------------------------------------------------------------------------------

def test_plan_json_adds_up(runner: CliRunner, workload: Path) -> None:
    plan = plan_json(runner, str(workload), "--catalog", "aws", "--no-baselines")
    for key in ("total_usd", "breakdown_usd", "fleet", "tiers", "contexts", "baselines", "solver", "mode",
                "catalog", "model"):
        assert key in plan, key
    assert plan["model"] == "Llama-3.1-8B"
    assert plan["mode"] == "provisioned"
    assert plan["catalog"]["name"] == "aws"
    assert plan["baselines"] == {}
    assert plan["violations"] == []
    total = plan["total_usd"]
    assert total > 0
    assert abs(total - sum(plan["breakdown_usd"].values())) < CENT
    assert abs(total - (sum(r["usd"] for r in plan["fleet"]) + sum(r["usd"] for r in plan["tiers"]))) < CENT
    assert abs(total - (sum(c["usd"] for c in plan["contexts"]) + plan["background"]["usd"])) < CENT
    assert [c["id"] for c in plan["contexts"]] == ["c1", "c2", "c3", "c4", "c5"]
    for context in plan["contexts"]:
        assert context["ttft_s"] <= context["slo_s"], context
    assert sum(r["instances"] for r in plan["fleet"]) >= 1


# --- plan --out ---------------------------------------------------------------------------------------------

def test_plan_out_refuses_overwrite_without_force(runner: CliRunner, workload: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    args = ["plan", str(workload), "--catalog", "aws", "--no-baselines", "--out", str(out)]
    first = runner.invoke(main, args)
    assert first.exit_code == 0, (first.stdout, first.stderr)
    assert (out / "plan.json").is_file()
    assert (out / "contexts.csv").is_file()
    saved = (out / "plan.json").read_bytes()
    saved_csv = (out / "contexts.csv").read_bytes()
    plan = json.loads(saved)
    assert "total_usd" in plan
    assert saved_csv.decode("utf-8").splitlines()[0].startswith("id,")
    assert len(saved_csv.decode("utf-8").splitlines()) == 1 + 5

    refused = runner.invoke(main, args)
    assert refused.exit_code == 2, (refused.stdout, refused.stderr)
    assert refused.stderr.startswith("error: ")
    assert "plan.json" in refused.stderr
    assert "--force" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert (out / "plan.json").read_bytes() == saved  # the old plan is intact
    assert (out / "contexts.csv").read_bytes() == saved_csv
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]

    forced = runner.invoke(main, args + ["--force"])
    assert forced.exit_code == 0, (forced.stdout, forced.stderr)
    replanned = json.loads((out / "plan.json").read_text(encoding="utf-8"))
    assert abs(replanned["total_usd"] - plan["total_usd"]) < CENT


# --- evaluate -----------------------------------------------------------------------------------------------

def test_evaluate_matches_then_reports_violation(runner: CliRunner, workload: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    made = runner.invoke(main, ["plan", str(workload), "--catalog", "aws", "--no-baselines", "--out", str(out)])
    assert made.exit_code == 0, (made.stdout, made.stderr)
    plan_file = out / "plan.json"

    ok = runner.invoke(main, ["evaluate", str(plan_file)])
    assert ok.exit_code == 0, (ok.stdout, ok.stderr)
    assert "matches" in ok.stdout
    assert "DIFFERS" not in ok.stdout
    assert "constraints: all hold" in ok.stdout

    ok_json = runner.invoke(main, ["evaluate", str(plan_file), "--json"])
    assert ok_json.exit_code == 0, (ok_json.stdout, ok_json.stderr)
    report = json.loads(ok_json.stdout)
    assert report["matches"] is True
    assert report["violations"] == []

    plan = json.loads(plan_file.read_text(encoding="utf-8"))
    used = next(row for row in plan["fleet"] if row["instances"] > 0 and row["contexts"] > 0)
    used["instances"] = 0  # drop the fleet under the contexts placed on it
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(plan), encoding="utf-8")

    bad = runner.invoke(main, ["evaluate", str(broken)])
    assert bad.exit_code == 1, (bad.stdout, bad.stderr)
    assert "VIOLATIONS" in bad.stdout
    assert "Traceback" not in bad.stderr
    bad_json = runner.invoke(main, ["evaluate", str(broken), "--json"])
    assert bad_json.exit_code == 1
    assert json.loads(bad_json.stdout)["violations"]


# --- --mode override ----------------------------------------------------------------------------------------

def test_mode_override_per_use(runner: CliRunner, workload: Path) -> None:
    plan = plan_json(runner, str(workload), "--catalog", "aws", "--no-baselines", "--mode", "per_use")
    assert plan["mode"] == "per_use"
    assert all(row["instances"] == 0 for row in plan["fleet"])
    assert abs(plan["total_usd"] - sum(plan["breakdown_usd"].values())) < CENT
    assert abs(plan["total_usd"] - (sum(c["usd"] for c in plan["contexts"]) + plan["background"]["usd"])) < CENT


# --- infeasible ---------------------------------------------------------------------------------------------

def test_infeasible_names_context_and_best_ttft(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "workload.yaml"
    path.write_text(SMALL_WORKLOAD.replace(
        "{id: c3, tokens: 30000, reuses_per_month: 10, prompt_tokens: 100, output_tokens: 100}",
        "{id: too-fast, tokens: 30000, reuses_per_month: 10, prompt_tokens: 100, output_tokens: 100, "
        "ttft_slo_s: 0.0001}"), encoding="utf-8")
    result = runner.invoke(main, ["plan", str(path), "--catalog", "aws", "--no-baselines", "--quiet"])
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.stderr.startswith("infeasible:")
    assert "too-fast" in result.stderr
    assert "best TTFT" in result.stderr
    assert "Traceback" not in result.stderr
    for other in ("c1", "c2", "c4", "c5"):
        assert f"  {other}:" not in result.stderr


# --- a real process -----------------------------------------------------------------------------------------

def test_subprocess_module_entry_point(workload: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "planner", "plan", str(workload), "--catalog", "aws", "--json",
                           "--no-baselines"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["model"] == "Llama-3.1-8B"
    assert len(plan["contexts"]) == 5
    assert "Traceback" not in proc.stderr


# --- the paper's example (with baselines) -------------------------------------------------------------------

def test_paper_example_stores_on_io2_within_claimed_range(runner: CliRunner) -> None:
    plan = plan_json(runner, str(REPO / "examples" / "paper" / "workload.yaml"), "--catalog", "paper-2025")
    assert plan["mode"] == "per_use"
    assert len(plan["contexts"]) == 200
    assert {c["tier"] for c in plan["contexts"]} == {"ebs_io2"}
    recompute = plan["baselines"]["all_recompute"]
    assert recompute["feasible"] is True
    ratio = recompute["total_usd"] / plan["total_usd"]
    assert 1.3 <= ratio <= 3.6, ratio
    assert abs(plan["total_usd"] - sum(plan["breakdown_usd"].values())) < CENT

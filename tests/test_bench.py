"""The solver benchmark (bench/families.py, bench/suite.py, bench/usage.py): the generators' invariants, and one
tiny case run end to end whose record is checked against the plan it wrote and hand computations (MODEL.md §5)."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent  # bench/ is on sys.path through conftest.py

import families  # noqa: E402
import suite  # noqa: E402
from planner.inputs.catalog import load_catalog, load_models  # noqa: E402
from planner.inputs.workload import load_workload  # noqa: E402

COLUMNS = ["id", "tokens", "reuses_per_month", "prompt_tokens", "output_tokens", "ttft_slo_s", "tpot_slo_s",
           "writes_per_month"]
# What bench/families.py documents for each family: token, prompt and output ranges, median length, Zipf
# exponent and mean reuses, and the TTFT SLOs (a set, or a range).
SPEC = {
    "compute": dict(tokens=(500, 32_000), median=3_000, prompt=(20, 4_000), output=(100, 4_000), zipf=0.8,
                    mean=3_000.0, ttft={3.0, 5.0, 10.0}),
    "storage": dict(tokens=(500, 120_000), median=8_000, prompt=(50, 399), output=(100, 499), zipf=1.0, mean=100.0,
                    ttft={1.0, 2.0, 5.0, 10.0}),
    "path": dict(tokens=(4_000, 120_000), median=24_000, prompt=(20, 199), output=(1, 19), zipf=0.4, mean=5_000.0,
                 ttft={3.0, 5.0}),
    "mixed": dict(tokens=(200, 120_000), median=4_000, prompt=(20, 4_000), output=(10, 2_000), zipf=1.0,
                  mean=1_000.0, ttft=(0.5, 30.0)),
}


@pytest.mark.parametrize("family", families.FAMILIES)
def test_family_columns_ranges_and_parsing(family, tmp_path):
    spec = SPEC[family]
    text, frame = families.make(family, 50, seed=0)
    assert list(frame.columns) == COLUMNS
    assert len(frame) == 50 and frame["id"].is_unique
    for column in ("tokens", "prompt", "output"):
        name = column if column == "tokens" else f"{column}_tokens"
        low, high = spec[column]
        assert frame[name].between(low, high).all(), (family, name)
    ttft = frame["ttft_slo_s"]
    if isinstance(spec["ttft"], set):
        assert set(ttft) <= spec["ttft"] and ttft.nunique() >= min(3, len(spec["ttft"]))
    else:
        assert ttft.between(*spec["ttft"]).all()
    assert (frame["reuses_per_month"] > 0).all() and (frame["writes_per_month"] >= 1).all()
    # The planner reads it as written (every value checked there), with its contexts in order.
    folder = tmp_path / family
    folder.mkdir()
    (folder / "workload.yaml").write_text(text)
    frame.to_csv(folder / "contexts.csv", index=False)
    workload = load_workload(folder / "workload.yaml")
    assert workload.model.name == "Llama-3.1-8B" and workload.mode == "provisioned"
    assert workload.contexts["id"].tolist() == frame["id"].tolist()
    assert np.array_equal(workload.contexts["tokens"].to_numpy(), frame["tokens"].to_numpy())


@pytest.mark.parametrize("family", families.FAMILIES)
def test_family_seeds_reproduce(family):
    text, frame = families.make(family, 50, seed=7)
    again_text, again = families.make(family, 50, seed=7)
    pd.testing.assert_frame_equal(frame, again)
    assert text == again_text
    _, other = families.make(family, 50, seed=8)
    assert not frame["tokens"].equals(other["tokens"])


@pytest.mark.parametrize("family", families.FAMILIES)
def test_family_shapes(family):
    """At 2,000 contexts: the median length, the Zipf law of reuses (rank r gets ∝ r^-a) and its mean."""
    spec = SPEC[family]
    _, frame = families.make(family, 2_000, seed=0)
    assert abs(frame["tokens"].median() / spec["median"] - 1) < 0.15
    reuses = np.sort(frame["reuses_per_month"].to_numpy())[::-1]
    ranks = np.arange(1, len(reuses) + 1)
    slope = np.polyfit(np.log(ranks), np.log(reuses), 1)[0]
    assert slope == pytest.approx(-spec["zipf"], abs=0.005)
    assert reuses[0] / reuses[-1] == pytest.approx(2_000 ** spec["zipf"], rel=0.01)
    assert abs(reuses.mean() - spec["mean"]) <= 0.005 + 1e-9  # each value rounded to 0.01
    if family == "storage":  # the document set: SLOs evenly from {1, 2, 5, 10} s
        counts = frame["ttft_slo_s"].value_counts()
        assert set(counts.index) == {1.0, 2.0, 5.0, 10.0} and counts.between(400, 600).all()
    if family == "mixed":  # SLOs across 0.5-30 s, the tightest on the shortest contexts
        ttft = frame["ttft_slo_s"]
        assert ttft.min() < 0.6 and ttft.max() > 25
        assert frame["tokens"].rank().corr(ttft.rank()) > 0.8
        assert 0.25 < frame["tpot_slo_s"].notna().mean() < 0.42


def test_family_errors():
    with pytest.raises(ValueError, match="unknown family 'gpu'"):
        families.make("gpu", 10)
    with pytest.raises(ValueError, match="at least 1"):
        families.make("mixed", 0)


def test_examples_family_lists_the_bundled_examples():
    names = [path.parent.name for path in families.examples()]
    expected = sorted(p.parent.name for p in (ROOT / "examples").glob("*/workload.yaml"))
    assert names == expected and "rag-docs" in names
    found = suite.cases(["examples"], [1000], ["aws"], 0, ["rag-docs", "paper"])
    assert [(c.example, c.contexts) for c in found] == [
        ("paper", len(pd.read_csv(ROOT / "examples" / "paper" / "contexts.csv"))),
        ("rag-docs", len(pd.read_csv(ROOT / "examples" / "rag-docs" / "contexts.csv")))]


def test_one_case_end_to_end(tmp_path):
    """bench/run.py on 20 path contexts (seed 1: caches in host memory, on NVMe and on S3, read over the network):
    the JSON line and the table row say what the written plan says, and
    the utilisation is the hand computation of MODEL.md §5 from the plan's files and the catalog."""
    results, keep = tmp_path / "results.jsonl", tmp_path / "plans"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--families", "path", "--sizes", "20",
                           "--catalogs", "aws", "--seed", "1", "--timeout", "300", "--results", str(results),
                           "--keep", str(keep)], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (record,) = [json.loads(line) for line in results.read_text().splitlines()]
    assert (record["family"], record["contexts"], record["catalog"], record["seed"]) == ("path", 20, "aws", 1)
    assert record["method"] == "auto" and record["baselines"] is True and record["code"] == 0
    assert record["seconds"] > 0 and record["rss_mb"] > 10
    folder = keep / "path-20-aws-seed1"
    plan = json.loads((folder / "plan-auto" / "plan.json").read_text())
    assert record["total"] == plan["total_usd"] and record["status"] == plan["solver"]["status"]
    assert record["bound"] == plan["solver"]["lower_bound_usd"] and record["gap"] == plan["solver"]["gap"]
    assert record["bound"] <= record["total"] * (1 + 1e-9)
    assert record["fleet"] == [{"offering": r["offering"], "instances": r["instances"], "tp": r["tp"],
                                "hbm_cache": r["hbm_cache"]} for r in plan["fleet"]]
    assert record["gpu_peak"] == max(r["gpu_utilization_peak"] for r in plan["fleet"])
    assert sorted(record["baselines_failed"]) == sorted(
        f"{name}: {b['reason']}" for name, b in plan["baselines"].items() if b["total_usd"] is None)
    assert pd.read_csv(folder / "contexts.csv").shape[0] == 20  # the generated workload, kept beside its plan

    # Hand computation: stored GB per attached kind over the fleet's capacity (cache fractions of MODEL.md §5).
    models = load_models()
    catalog = load_catalog("aws", models)
    card = models["Llama-3.1-8B"]
    offerings = {o.name: o for o in catalog.offerings}
    kind_of = {t.name: t.kind for t in catalog.tiers}
    placed = pd.read_csv(folder / "plan-auto" / "contexts.csv")
    weights = card.total_params_b * 1e9 * card.weight_dtype_bytes
    capacity = {"hbm": 0.0, "host_memory": 0.0, "local_nvme": 0.0}
    for row in plan["fleet"]:
        o, n = offerings[row["offering"]], row["instances"]
        if row["hbm_cache"]:
            tp = row["tp"]
            capacity["hbm"] += n * (o.gpus // tp) * o.efficiency["hbm_cache_fraction"] * (
                tp * o.gpu.hbm_gb * 1e9 - weights) / 1e9
        capacity["host_memory"] += n * o.efficiency["host_cache_fraction"] * (o.host_memory_gb or 0)
        capacity["local_nvme"] += n * o.efficiency["nvme_cache_fraction"] * (o.local_nvme_gb or 0)
    for kind, cap in capacity.items():
        stored = placed.loc[placed["tier"].map(kind_of.get) == kind, "gb"].sum()
        if cap > 0:
            assert record["storage"][kind] == pytest.approx(stored / cap, rel=1e-4, abs=1e-6), kind
        else:
            assert record["storage"][kind] is None and stored == 0
    # Path: GB/s read at peak from remote tiers over each offering's network and block capacity.
    workload = load_workload(folder / "workload.yaml")
    peak = workload.peak_to_mean / (workload.hours_per_month * 3600)
    for path, kinds, attribute in (("network", ("file", "object", "memory_service"), "network_gbps"),
                                   ("block", ("block",), "block_storage_gbps")):
        shares = []
        for row in plan["fleet"]:
            o = offerings[row["offering"]]
            on = (placed["offering"] == row["offering"]) & placed["tier"].map(kind_of.get).isin(kinds)
            use = (placed.loc[on, "reuses_per_month"] * peak * placed.loc[on, "gb"]).sum()
            cap = row["instances"] * o.efficiency["utilization_max"] * (getattr(o, attribute) or 0) / 8
            if row["instances"] and cap > 0:
                shares.append(use / cap)
        expected = max(shares) if shares else None
        assert record["path"][path] == (None if expected is None else pytest.approx(expected, rel=1e-4, abs=1e-9))
    assert record["path"]["network"] > 0.01 and record["storage"]["local_nvme"] > 0  # the case exercises both

    # The table row (printed last on stdout) carries the same numbers.
    row = done.stdout.strip().splitlines()[-1]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:3] == ["path", "20", "aws"]
    assert cells[5] == f"${plan['total_usd']:,.2f}" and cells[6] == f"${plan['solver']['lower_bound_usd']:,.2f}"
    assert cells[8] == plan["solver"]["status"]
    assert cells[9] == " + ".join(f"{r['instances']}× {r['offering']}" for r in plan["fleet"] if r["instances"])
    assert cells[10] == f"{record['gpu_peak']:.0%}"


def test_timeout_stops_the_process(tmp_path):
    case = suite.Case("storage", 3_000, "aws", 0)
    workload = suite.workload_of(case, tmp_path)
    run = suite.measure(workload, case, tmp_path, timeout=1.0)
    assert run.code is None and run.status == "timeout" and run.total is None
    assert 1.0 <= run.seconds < 5.0
    assert "stopped at 1 s" in suite.table([run])


def test_table_with_exact_reference_and_failures(tmp_path, capsys):
    common = dict(catalog="aws", seed=0, example="", baselines=True, time_limit=None, timeout=300.0)
    plan = suite.Run("storage", 1_500, method="auto", seconds=9.31, rss_mb=512.0, code=0, status="feasible",
                     total=14_392.15, bound=9_381.22, gap=(14_392.15 - 9_381.22) / 14_392.15,
                     fleet=[{"offering": "g6e.8xlarge", "instances": 1, "tp": 1, "hbm_cache": True},
                            {"offering": "g6e.24xlarge", "instances": 2, "tp": 1, "hbm_cache": False}],
                     gpu_peak=0.1, storage={"hbm": 0.5, "host_memory": 1.0, "local_nvme": None},
                     path={"network": 0.0, "block": 0.25}, mode="provisioned", **common)
    exact = suite.Run("storage", 1_500, method="exact", seconds=1055.0, rss_mb=2100.0, code=0, status="optimal",
                      total=12_564.78, bound=12_564.0, gap=0.0, **common)
    plan.baselines_failed = ["hbm: 3 contexts meet no SLO this way",
                             "local_nvme: the solver stopped without finding a plan within the time limit (300 s)"]
    crashed = suite.Run("storage", 100_000, method="auto", seconds=31.0, rss_mb=900.0, code=3, status="exit 3",
                        error="IndexError: boolean index did not match", **common)
    lines = suite.table([plan, exact, crashed]).splitlines()
    assert len(lines) == 4  # head, rule, one row per case (the exact run is the first row's reference)
    first = [c.strip() for c in lines[2].strip("|").split("|")]
    assert first == ["storage", "1,500", "aws", "9.3", "0.50 GB", "$14,392.15", "$9,381.22", "34.82%", "feasible; 1 baseline unsolved",
                     "1× g6e.8xlarge + 2× g6e.24xlarge", "10%", "HBM 50%, host 100%", "net 0%, block 25%",
                     "$12,564.78 (optimal, gap 0.0000%, 1055 s)",
                     f"{(14_392.15 - 12_564.78) / 12_564.78:+.2%}"]
    second = [c.strip() for c in lines[3].strip("|").split("|")]
    assert second[1] == "100,000" and second[5] == "—" and second[8].startswith("exit 3: IndexError")
    assert second[-2:] == ["—", "—"]
    # --table prints the same table from the JSON lines the runs were appended as.
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(dataclasses.asdict(r)) + "\n" for r in (plan, exact, crashed)))
    suite.main(["--table", str(results)])
    assert capsys.readouterr().out.strip() == "\n".join(lines)

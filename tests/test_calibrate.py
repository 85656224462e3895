"""`kvplan calibrate`: fitting a profile from each measurement format (fixtures in tests/data/calibrate, see its
README for where each format is defined), the catalog it writes and what that catalog does to the cost model
(MODEL.md §3.2), measured load bandwidth (§4), and one error line per bad input.

Expected values are computed here by hand: medians of the fixtures' raw values, the roofline
F(L, 0) / (tp · tflops · prefill_mfu) with F(n, p) = 2·params·n + 4·layers·heads·head_dim·n·(p + n/2), and the
decode roofline (W_read + b·s·kv) / (tp · hbm_gbps · decode_mbu).
"""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from planner.analyses.calibrate import BadMeasurements, fit, target
from planner.inputs.catalog import load_catalog, load_models
from planner.cli import main
from planner.costmodel import Demand, Settings, build_fleet, build_tiers, evaluate, prefill_seconds, step_seconds
from planner.inputs.measurements import read_measurements

DATA = Path(__file__).parent / "data" / "calibrate"
AS_OF = "2026-12-07"
MODELS = load_models()
CARD = MODELS["Llama-3.1-8B"]
AWS = load_catalog("aws", MODELS)
H100 = AWS.offering("p5.4xlarge").gpu      # 989.4 TFLOPS, 3,350 GB/s, PCIe 64 GB/s (catalogs/gpus.yaml)
MFU, MBU = 0.4, 0.6                        # aws defaults
W = CARD.params_b * 1e9 * 2                # bf16 weights read per decode step
S = 2 * 32 * 8 * 128 * 2                   # KV bytes per token: 2 · layers · kv_heads · head_dim · 2


def flops(L: float, p: float = 0.0) -> float:
    return 2 * CARD.params_b * 1e9 * L + 4 * 32 * 32 * 128 * L * (p + L / 2)


def roof_prefill(L: float, tp: int = 1) -> float:
    return flops(L) / (tp * H100.tflops * 1e12 * MFU)


def roof_step(b: float, kv: float, tp: int = 1) -> float:
    return (W + b * S * kv) / (tp * H100.hbm_gbps * 1e9 * MBU)


def latencies(name: str) -> list[float]:
    return json.loads((DATA / name).read_text())["latencies"]


def run_fit(*args: str, kv_tokens: int | None = None, tp: int = 1):
    readings = read_measurements([str(DATA / a) if "/" not in a else a for a in args], CARD, tp, kv_tokens)
    return fit(readings, target(AWS, CARD, "H100", tp), AS_OF, kv_tokens)


def invoke(args: list[str]):
    return CliRunner().invoke(main, ["calibrate", *args])


BASE = ["--catalog", "aws", "--model", "Llama-3.1-8B", "--gpu", "H100", "--as-of", AS_OF]
LAT_1K = f"{DATA}/latency-1k.json@input_len=1000,output_len=1,batch_size=1"


# --- fitting each format ------------------------------------------------------------------------------------

def test_latency_json_with_lengths_given_and_from_the_pytorch_sidecar():
    result = run_fit(LAT_1K, "latency-8k.json")
    rows = {r.tokens: r for r in result.prefill}
    assert list(rows) == [1000, 8000]
    assert rows[1000].seconds == pytest.approx(statistics.median(latencies("latency-1k.json")))   # 0.070
    assert rows[8000].seconds == pytest.approx((0.51 + 0.52) / 2)     # four runs: the middle two's mean
    assert (rows[1000].n, rows[8000].n) == (5, 4)
    for L, row in rows.items():
        assert row.roofline_s == pytest.approx(roof_prefill(L))
        assert row.ratio == pytest.approx(row.seconds / roof_prefill(L))
        assert row.mfu == pytest.approx(flops(L) / (row.seconds * 1 * H100.tflops * 1e12))
    assert rows[1000].mfu == pytest.approx(flops(1000) / (0.070 * 989.4e12))
    assert result.profile.prefill_tokens == (1000, 8000)
    assert result.profile.decode_batches == ()


def test_pytorch_record_given_itself_and_not_beside_its_run(tmp_path):
    result = run_fit("latency-8k.pytorch.json")
    assert [(r.tokens, r.n) for r in result.prefill] == [(8000, 4)]
    assert result.prefill[0].seconds == pytest.approx(statistics.median(latencies("latency-8k.json")))
    both = invoke([*BASE, f"{DATA}/latency-8k.json", f"{DATA}/latency-8k.pytorch.json"])
    _one_error(both, "latency-8k.pytorch.json: the same run as latency-8k.json, given too")


def test_serving_summary_gives_mean_ttft_at_mean_input_and_a_batch_one_step():
    data = json.loads((DATA / "serve-4k.json").read_text())
    result = run_fit("serve-4k.json")
    (row,) = result.prefill
    assert row.tokens == data["total_input_tokens"] // data["completed"] == 4000
    assert row.seconds == pytest.approx(data["mean_ttft_ms"] / 1000)
    (step,) = result.steps
    kv = 4000 + (1280 / 10) / 2          # mean input + mean output / 2
    assert result.profile.decode_kv_tokens == kv == 4064
    assert step.batch == 1 and step.seconds == pytest.approx(data["mean_tpot_ms"] / 1000)
    assert step.roofline_s == pytest.approx(roof_step(1, kv))
    assert step.mbu == pytest.approx(MBU * roof_step(1, kv) / step.seconds)


def test_serving_detailed_uses_each_successful_request():
    result = run_fit("serve-detailed.json")
    rows = {r.tokens: (r.n, r.seconds) for r in result.prefill}
    # three requests at 16,000 tokens; at 32,000 one succeeded and one failed (errors non-empty): left out
    assert rows == {16000: (3, pytest.approx(statistics.median([1.21, 1.19, 1.25]))), 32000: (1, pytest.approx(2.9))}
    assert result.steps == ()   # one output token each: no step


def test_csv_prefill_and_steps():
    result = run_fit("prefill.csv", "decode.csv")
    assert [(r.tokens, r.n) for r in result.prefill] == [(1000, 2), (2000, 1)]
    assert result.prefill[0].seconds == pytest.approx((0.068 + 0.075) / 2)
    assert result.profile.decode_kv_tokens == 4000
    steps = {r.batch: r.seconds for r in result.steps}
    assert steps == {1: pytest.approx(0.0072), 8: pytest.approx(0.0080), 32: pytest.approx((0.0110 + 0.0106) / 2)}
    for row in result.steps:
        assert row.ratio == pytest.approx(row.seconds / roof_step(row.batch, 4000))


def test_latency_decode_run_minus_its_prefill_run_scaled_to_the_profile_kv():
    o1 = f"{DATA}/latency-4k-b8-o1.json@input_len=4000,output_len=1,batch_size=8"
    o129 = f"{DATA}/latency-4k-b8-o129.json@input_len=4000,output_len=129,batch_size=8"
    result = run_fit(o1, o129)
    prefill_batch = statistics.median(latencies("latency-4k-b8-o1.json"))            # 2.06 s for 8 prompts
    (row,) = result.prefill
    assert row.tokens == 4000 and row.seconds == pytest.approx(prefill_batch / 8)
    step_own = (statistics.median(latencies("latency-4k-b8-o129.json")) - prefill_batch) / 128
    kv_own = 4000 + 129 / 2                        # the steps read 4,001 ... 4,128 tokens: mean 4,064.5
    kv = round(kv_own)                             # the default: the measurements' median, rounded
    assert result.profile.decode_kv_tokens == kv == 4064
    (step,) = result.steps
    # §3.2: step times scale with the bytes a step reads, W + b·s·kv
    assert step.seconds == pytest.approx(step_own * (W + 8 * S * kv) / (W + 8 * S * kv_own))
    # an explicit --kv-tokens states the profile at that length
    other = run_fit(o1, o129, kv_tokens=8000)
    assert other.steps[0].seconds == pytest.approx(step_own * (W + 8 * S * 8000) / (W + 8 * S * kv_own))


def test_decode_run_without_its_prefill_run_takes_the_fitted_profile():
    o129 = f"{DATA}/latency-4k-b8-o129.json@input_len=4000,output_len=129,batch_size=8"
    result = run_fit("prefill.csv", o129)
    # 4,000 tokens is past the profile's last point (2,000 at 0.135 s): the roofline's shape scaled to it
    t4000 = 0.135 * flops(4000) / flops(2000)
    step_own = (statistics.median(latencies("latency-4k-b8-o129.json")) - 8 * t4000) / 128
    kv_own = 4064.5
    (step,) = result.steps
    assert step.seconds == pytest.approx(step_own * (W + 8 * S * 4064) / (W + 8 * S * kv_own))


def test_measurements_pool_across_files_and_the_median_is_taken_once():
    o1 = f"{DATA}/latency-4k-b8-o1.json@input_len=4000,output_len=1,batch_size=8"
    result = run_fit(LAT_1K, "prefill.csv", "serve-4k.json", o1)
    rows = {r.tokens: r for r in result.prefill}
    at_1000 = latencies("latency-1k.json") + [0.068, 0.075]
    assert rows[1000].n == 7 and rows[1000].seconds == pytest.approx(statistics.median(at_1000))
    ttft = json.loads((DATA / "serve-4k.json").read_text())["mean_ttft_ms"] / 1000
    at_4000 = [x / 8 for x in latencies("latency-4k-b8-o1.json")] + [ttft]
    assert rows[4000].n == 4 and rows[4000].seconds == pytest.approx(statistics.median(at_4000))


def test_appended_serving_runs_are_read_one_per_line(tmp_path):
    run = json.loads((DATA / "serve-4k.json").read_text())
    second = {**run, "total_input_tokens": 80000, "mean_ttft_ms": 540.0}
    path = tmp_path / "appended.json"
    path.write_text(json.dumps(run) + "\n" + json.dumps(second))   # what --append-result writes
    result = run_fit(str(path))
    assert [(r.tokens, r.seconds) for r in result.prefill] == [(4000, pytest.approx(run["mean_ttft_ms"] / 1000)),
                                                               (8000, pytest.approx(0.54))]


# --- the written catalog and the cost model ---------------------------------------------------------------------

def test_written_catalog_loads_and_its_profile_drives_prefill_and_decode(tmp_path):
    out = tmp_path / "my-aws.yaml"
    result = invoke([*BASE, LAT_1K, f"{DATA}/latency-8k.json", f"{DATA}/serve-detailed.json",
                     f"{DATA}/decode.csv", "--out", str(out)])
    assert result.exit_code == 0, result.output
    raw = yaml.safe_load(out.read_text())
    assert raw["extends"] == "aws"
    catalog = load_catalog(str(out), MODELS)
    (profile,) = catalog.profiles
    points = {1000: statistics.median(latencies("latency-1k.json")), 8000: 0.515, 16000: 1.21, 32000: 2.9}
    assert profile.key == ("Llama-3.1-8B", "H100", 1)
    assert profile.prefill_tokens == tuple(points)
    assert profile.prefill_seconds == pytest.approx(tuple(points.values()))
    assert profile.source.startswith(f"measured by the user (kvplan calibrate, {AS_OF})")
    assert profile.as_of == AS_OF
    assert (profile.decode_kv_tokens, profile.decode_batches) == (4000, (1, 8, 32))

    fleet = build_fleet(CARD, catalog, "on_demand")
    g = fleet.pool("p5.4xlarge", 1)

    def T(L):
        return float(prefill_seconds(CARD, fleet, [g], [L])[0][0])

    # §3.2: piecewise-linear between the points, through (0, 0) below the first
    assert T(1000) == pytest.approx(points[1000])
    assert T(500) == pytest.approx(points[1000] / 2)
    assert T(4000) == pytest.approx(points[1000] + (0.515 - points[1000]) * 3000 / 7000)
    assert T(24000) == pytest.approx(1.21 + (2.9 - 1.21) * 0.5)
    # past the last point: the roofline's shape scaled to it, and said so
    seconds, beyond = prefill_seconds(CARD, fleet, [g, g], [64000, 32000])
    assert seconds[0] == pytest.approx(2.9 * flops(64000) / flops(32000))
    assert beyond.tolist() == [True, False]
    # other (gpu, tp) pools keep the roofline
    g2 = fleet.pool("p5.48xlarge", 2)
    assert float(prefill_seconds(CARD, fleet, [g2], [4000])[0][0]) == pytest.approx(roof_prefill(4000, tp=2))

    # n new tokens after p cached ones take T(p + n) - T(p): a reuse from host memory against recompute
    tiers = build_tiers(catalog)
    p, n = 4000, 2000
    demand = Demand(*(np.array([v], dtype=float) for v in (p, n, 10, 1, 1, np.inf, np.inf)), count=np.array([1]))
    options = evaluate(CARD, fleet, tiers, demand, Settings("provisioned", 730.0, 1.0, False),
                       [0, 0], [g, g], [0, tiers.index("host_memory")], [0, 0])
    t6000 = points[1000] + (0.515 - points[1000]) * 5000 / 7000
    assert options.ttft_s[0] == pytest.approx(t6000)
    assert options.ttft_s[1] - options.load_s[1] == pytest.approx(t6000 - T(4000))

    # decode: the measured step at its batch and KV length, interpolated between batches, scaled by bytes read
    steps = {1: 0.0072, 8: 0.0080, 32: (0.0110 + 0.0106) / 2}

    def step(b, kv):
        return float(step_seconds(CARD, fleet, [g], [b], [kv])[0][0])

    assert step(8, 4000) == pytest.approx(steps[8])
    assert step(16, 4000) == pytest.approx(steps[8] + (steps[32] - steps[8]) * 8 / 24)
    assert step(8, 8000) == pytest.approx(steps[8] * (W + 8 * S * 8000) / (W + 8 * S * 4000))


def test_catalog_given_as_a_path_is_extended_relative_to_the_written_file(tmp_path):
    base = tmp_path / "base" / "mine.yaml"
    base.parent.mkdir()
    shutil.copy(Path(__file__).parent.parent / "catalogs" / "aws.yaml", base)
    out = tmp_path / "out" / "calibrated.yaml"
    result = invoke(["--catalog", str(base), "--model", "Llama-3.1-8B", "--gpu", "H100", "--as-of", AS_OF,
                     f"{DATA}/prefill.csv", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(out.read_text())["extends"] == "../base/mine.yaml"
    assert load_catalog(str(out), MODELS).profiles[0].prefill_tokens == (1000, 2000)


def test_printed_comparison_holds_the_hand_computed_ratio_and_mfu():
    result = invoke([*BASE, LAT_1K])
    assert result.exit_code == 0, result.output
    median = statistics.median(latencies("latency-1k.json"))
    row = next(line for line in result.stdout.splitlines() if line.strip().startswith("1,000"))
    assert row.split() == ["1,000", "5", f"{median:.4g}", f"{roof_prefill(1000):.4g}",
                           f"{median / roof_prefill(1000):.2f}", f"{flops(1000) / (median * 989.4e12):.3f}"]


# --- measured load bandwidth ---------------------------------------------------------------------------------

def test_load_bandwidth_round_trip(tmp_path):
    out = tmp_path / "bw.yaml"
    result = invoke([*BASE, f"{DATA}/prefill.csv", "--load-bandwidth", "local_nvme=3.2", "--load-bandwidth",
                     "ebs_io2=2", "--load-bandwidth", "host_memory=20", "--offering", "p5.4xlarge", "--out", str(out)])
    assert result.exit_code == 0, result.output
    catalog = load_catalog(str(out), MODELS)
    tiers = {t.name: t for t in catalog.tiers}
    assert tiers["ebs_io2"].read_gbps == 2.0 and tiers["host_memory"].read_gbps == 20.0
    assert tiers["s3_standard"].read_gbps == next(t for t in AWS.tiers if t.name == "s3_standard").read_gbps
    assert catalog.offering("p5.4xlarge").local_nvme_gbps == 3.2
    assert catalog.offering("p5.48xlarge").local_nvme_gbps == AWS.offering("p5.48xlarge").local_nvme_gbps
    source = f"measured by the user (kvplan calibrate, {AS_OF})"
    raw_tiers = {t["name"]: t for t in catalog.raw["tiers"]}
    raw_offerings = {o["name"]: o for o in catalog.raw["offerings"]}
    for figure in (raw_tiers["ebs_io2"]["read_gbps"], raw_tiers["host_memory"]["read_gbps"],
                   raw_offerings["p5.4xlarge"]["local_nvme_gbps"]):
        assert (figure["source"], figure["as_of"]) == (source, AS_OF)

    # §4: t_load = first byte + size / min(tier read_gbps, path into the instance)
    size = S * 10_000 / 1e9
    fleet, built = build_fleet(CARD, catalog, "on_demand"), build_tiers(catalog)
    demand = Demand(*(np.array([v], dtype=float) for v in (10_000, 0, 1, 1, 1, np.inf, np.inf)), count=np.array([1]))
    g = fleet.pool("p5.4xlarge", 1)
    names = ("local_nvme", "host_memory", "ebs_io2")
    options = evaluate(CARD, fleet, built, demand, Settings("provisioned", 730.0, 1.0, False), [0] * 3, [g] * 3,
                       [built.index(n) for n in names], [0] * 3)
    expected = {"local_nvme": size / 3.2, "host_memory": size / min(20, 64 * 1),
                "ebs_io2": 0.001 + size / min(2, 10 / 8)}   # p5.4xlarge's EBS path: 10 Gbit/s
    assert dict(zip(names, options.load_s.tolist())) == pytest.approx(expected)
    # the printed table shows the catalog's load before against the measured one after
    row = next(line.split() for line in result.stdout.splitlines() if line.strip().startswith("local_nvme"))
    assert row[:2] == ["local_nvme", "p5.4xlarge"]
    assert row[-3:-1] == [f"{size / 2.2528:.4g}", f"{size / 3.2:.4g}"]   # aws: 2.2528 GB/s estimated before


def test_load_bandwidth_alone_writes_no_profile(tmp_path):
    out = tmp_path / "bw.yaml"
    result = invoke([*BASE, "--load-bandwidth", "s3_standard=0.9", "--out", str(out)])
    assert result.exit_code == 0, result.output
    catalog = load_catalog(str(out), MODELS)
    assert catalog.profiles == () and {t.name: t for t in catalog.tiers}["s3_standard"].read_gbps == 0.9


# --- bad input: exit 2, one line each ------------------------------------------------------------------------

def _latency_json(path: Path, values: list) -> str:
    path.write_text(json.dumps({"avg_latency": 0.1, "latencies": values, "percentiles": {"50": 0.1}}))
    return str(path)


def _serving(path: Path, **changes) -> str:
    data = {**json.loads((DATA / "serve-4k.json").read_text()), **changes}
    path.write_text(json.dumps({k: v for k, v in data.items() if v is not ...}))
    return str(path)


def _csv(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


LENGTHS = "@input_len=4000,output_len=1,batch_size=1"
CASES = {
    "decreasing-prefill": (lambda d: [_csv(d / "p.csv", "input_tokens,prefill_seconds\n1000,0.5\n2000,0.3\n")],
                           "prefill seconds fall with length: 0.3 s at 2,000 tokens"),
    "beyond-window": (lambda d: [_csv(d / "p.csv", "input_tokens,prefill_seconds\n1000,0.07\n200000,30\n")],
                      "p.csv: row 3, input_tokens: 200,000 tokens is beyond Llama-3.1-8B's window of 131,072"),
    "zero-seconds": (lambda d: [_csv(d / "p.csv", "input_tokens,prefill_seconds\n1000,0\n")],
                     "p.csv: row 2, prefill_seconds: '0' is not above 0"),
    "negative-latency": (lambda d: [_latency_json(d / "l.json", [0.1, -0.1]) + LENGTHS],
                         "l.json: latencies[1]: -0.1 is not above 0"),
    "latency-without-lengths": (lambda d: [_latency_json(d / "l.json", [0.1])],
                                "l.json: a vLLM latency result does not record its lengths"),
    "neither-format": (lambda d: [_csv(d / "x.json", '{"throughput": 3}')],
                       "x.json: neither a vLLM latency result (no 'latencies' key) nor a vLLM serving result "
                       "(no 'mean_ttft_ms' key)"),
    "serving-missing-key": (lambda d: [_serving(d / "s.json", total_input_tokens=...)],
                            "s.json: a vLLM serving result without 'total_input_tokens'"),
    "serving-queued": (lambda d: [_serving(d / "s.json", max_concurrency=8)],
                       "s.json: max_concurrency: 8: requests queue behind each other"),
    "json-syntax": (lambda d: [_csv(d / "x.json", '{"latencies": [0.1,')], "x.json: line 1: JSON syntax error"),
    "csv-columns": (lambda d: [_csv(d / "p.csv", "tokens,seconds\n1000,0.1\n")],
                    "p.csv: a CSV needs the columns input_tokens,prefill_seconds and/or batch,step_seconds"),
    "step-without-kv": (lambda d: [f"{DATA}/prefill.csv", _csv(d / "s.csv", "batch,step_seconds\n1,0.007\n")],
                        "s.csv: row 2: a step time needs its KV length"),
    "decreasing-steps": (lambda d: [f"{DATA}/prefill.csv",
                                    _csv(d / "s.csv", "batch,step_seconds,kv_tokens\n1,0.01,4000\n8,0.005,4000\n")],
                         "decode step seconds fall with batch: 0.005 s at batch 8"),
    "no-decode-time": (lambda d: [_latency_json(d / "a.json", [2.0]) + "@input_len=4000,output_len=1,batch_size=8",
                                  _latency_json(d / "b.json", [1.5]) + "@input_len=4000,output_len=9,batch_size=8"],
                       "b.json: output_len 9 at batch 8: 1.5 s is not longer than the batch's prefill"),
    "missing-file": (lambda d: [str(d / "none.json")], "none.json: file not found"),
    "no-prefill": (lambda d: [f"{DATA}/decode.csv"], "no prefill measurement"),
    "kv-beyond-window": (lambda d: [f"{DATA}/prefill.csv", f"{DATA}/decode.csv", "--kv-tokens", "140000"],
                         "--kv-tokens 140000: 140,000 KV tokens is beyond Llama-3.1-8B's window of 131,072"),
    "step-kv-beyond-window": (lambda d: [f"{DATA}/prefill.csv",
                                         _csv(d / "s.csv", "batch,step_seconds,kv_tokens\n1,0.007,140000\n")],
                              "s.csv: row 2, kv_tokens: 140,000 KV tokens is beyond Llama-3.1-8B's window"),
}
OPTION_CASES = {
    "unknown-model": (["--model", "Llama-9"], "--model Llama-9: unknown model"),
    "unknown-gpu": (["--gpu", "X100"], "--gpu X100: no offering of catalog aws has this GPU"),
    "tp-not-power-of-two": (["--tp", "3"], "--tp 3: expected a power of two"),
    "unknown-tier": (["--load-bandwidth", "nvme=3"], "--load-bandwidth nvme=3: unknown tier 'nvme'"),
    "hbm-bandwidth": (["--load-bandwidth", "hbm=3000"], "--load-bandwidth hbm=3000: a cache in HBM loads in no time"),
    "bad-gbps": (["--load-bandwidth", "ebs_io2=fast"], "--load-bandwidth ebs_io2=fast: expected GB/s"),
    "nvme-which-instance": (["--load-bandwidth", "local_nvme=3"], "measured on which instance? give --offering"),
}


def _one_error(result, expected: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert expected in lines[0], lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_measurement_gives_one_line_and_exit_2(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make, expected = CASES[case]
    _one_error(invoke([*BASE, *make(tmp_path)]), expected)


@pytest.mark.parametrize("case", sorted(OPTION_CASES))
def test_bad_option_gives_one_line_and_exit_2(case, tmp_path):
    extra, expected = OPTION_CASES[case]
    _one_error(invoke([*BASE, f"{DATA}/prefill.csv", *extra]), expected)


def test_sidecar_with_another_tp_is_refused(tmp_path):
    shutil.copy(DATA / "latency-8k.json", tmp_path / "l.json")
    records = json.loads((DATA / "latency-8k.pytorch.json").read_text())
    records[0]["benchmark"]["extra_info"]["args"]["tensor_parallel_size"] = 2
    (tmp_path / "l.pytorch.json").write_text(json.dumps(records))
    _one_error(invoke([*BASE, str(tmp_path / "l.json")]), "tensor_parallel_size: the run used tp 2, calibrating tp 1")


def test_model_that_needs_more_gpus_names_the_tps_it_runs_at():
    result = invoke(["--catalog", "aws", "--model", "Llama-3.1-70B", "--gpu", "H100", f"{DATA}/prefill.csv"])
    # §4: weights per GPU within 80% of its HBM; 141 GB of weights do not fit two 85.9 GB H100s' 80%
    weights = MODELS["Llama-3.1-70B"].total_params_b * 1e9 * 2
    sizes = [tp for tp in (1, 2, 4, 8) if weights / tp <= 0.8 * H100.hbm_gb * 1e9]
    assert sizes == [4, 8]
    _one_error(result, "--tp 1: Llama-3.1-70B on H100 runs at tp 4, 8 in aws")


def test_every_bad_file_gets_its_own_line(tmp_path):
    bad_csv = _csv(tmp_path / "p.csv", "input_tokens,prefill_seconds\n1000,-1\n")
    bad_json = _csv(tmp_path / "x.json", "{}")
    result = invoke([*BASE, bad_csv, bad_json, f"{DATA}/prefill.csv"])
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and all(line.startswith("error: ") for line in lines)
    assert "p.csv: row 2, prefill_seconds" in lines[0] and "x.json: neither" in lines[1]


def test_existing_out_needs_force(tmp_path):
    out = tmp_path / "o.yaml"
    out.write_text("keep")
    _one_error(invoke([*BASE, f"{DATA}/prefill.csv", "--out", str(out)]), "exists; pass --force")
    assert out.read_text() == "keep"
    assert invoke([*BASE, f"{DATA}/prefill.csv", "--out", str(out), "--force"]).exit_code == 0


def test_nothing_to_calibrate():
    _one_error(invoke(BASE), "nothing to calibrate")


def test_fit_raises_every_problem_at_once():
    readings = read_measurements([str(DATA / "decode.csv"), str(DATA / "missing.csv")], CARD, 1)
    with pytest.raises(BadMeasurements) as caught:
        fit(readings, target(AWS, CARD, "H100", 1), AS_OF)
    assert len(caught.value.problems) == 1 and "missing.csv: file not found" in caught.value.problems[0]

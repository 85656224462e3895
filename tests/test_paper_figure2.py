"""`kvplan breakeven --delay` against MODEL.md §4 by hand, and the paper's Figure 2 example
(examples/paper-figure2/) against MODEL.md §2's definitions of C_text and C_KV."""

import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from planner.analyses import breakeven
from planner.cli import main
from planner.costmodel import build_fleet, prefill_seconds, step_seconds
from planner.inputs.catalog import load_catalog, load_models

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "paper-figure2"
MODELS = load_models()
CARD = MODELS["Llama-7B-paper"]

# MODEL.md §2 and §3.1, by hand: the paper's 7B Llama has Llama-2-7B's shape (6.74B parameters, 32 layers, 32 heads
# and 32 KV heads of 128, fp16), one V100 (32 GB, 900 GB/s) at $3 an hour, EBS io2 at $0.125 per GB-month and 4 GB/s.
PARAMS, LAYERS, HEADS, HEAD_DIM = 6.74e9, 32, 32, 128
KV_BYTES = 2 * LAYERS * HEADS * HEAD_DIM * 2            # 524,288 bytes a token
WEIGHTS = PARAMS * 2                                      # 13.48 GB, all read by every decode step
USD_PER_GPU_SECOND = 3.0 / 3600
IO2_USD_GB_MONTH, IO2_GBPS = 0.125, 4.0


def flops(n, p=0.0):
    """MODEL.md §4: F(n, p) = 2·params·n + 4·layers·heads·head_dim·n·(p + n/2)."""
    return 2 * PARAMS * n + 4 * LAYERS * HEADS * HEAD_DIM * n * (p + n / 2)


def first_byte_s(catalog) -> float:
    return next(t for t in catalog.tiers if t.name == "ebs_io2").first_byte_latency_s


def load_s(catalog, tokens: int) -> float:
    """MODEL.md §4: first byte, then the KV size over io2's 4 GB/s (its 32 Gbit/s block path is as fast)."""
    return first_byte_s(catalog) + KV_BYTES * tokens / 1e9 / IO2_GBPS


# --- breakeven --delay, by hand -----------------------------------------------------------------------------------

def test_breakeven_delay_matches_model_md_section4_by_hand():
    """paper-2025 (the roofline calibrated so 10K tokens take 7 s; decode_mbu 0.6, decode_batch 32; loads do not
    hold the GPU), one 10K-token context, a 100-token prompt and 50 output tokens, at 1 reuse an hour for 730 h.
    MODEL.md §4: TTFT recompute = t_prefill(L + P, 0); stored = t_load + t_prefill(P, L), one after the other
    (io2 does not overlap them); b = min(32, floor(K / (s·(L+P+O)))) with K = 32 GB − 13.48 GB = 3 here;
    TPOT = (W + b·s·(L+P)) / (900 GB/s · 0.6); the delay adds O · TPOT to the TTFT. Cost (MODEL.md §6): storage
    for the month, GPU-seconds at $3 an hour: f·(prefill + O·TPOT/b) per reuse, and the stored cache's one build."""
    paper = load_catalog("paper-2025", MODELS)
    L, P, O, f = 10_000, 100, 50, 730.0
    rate = flops(10_000) / 7.0                      # FLOP/s that make 10K tokens take 7 s
    batch = min(32, np.floor((32e9 - WEIGHTS) / (KV_BYTES * (L + P + O))))
    assert batch == 3                                # MODEL.md §6's worked example has b = 3 at 10K as well
    tpot = (WEIGHTS + batch * KV_BYTES * (L + P)) / (900e9 * 0.6)
    ttft_recompute = flops(L + P) / rate
    ttft_stored = load_s(paper, L) + flops(P, L) / rate
    usd_recompute = USD_PER_GPU_SECOND * f * (flops(L + P) / rate + O * tpot / batch)
    usd_stored = (KV_BYTES * L / 1e9 * IO2_USD_GB_MONTH
                  + USD_PER_GPU_SECOND * (f * (flops(P, L) / rate + O * tpot / batch) + flops(L) / rate))

    g = breakeven.default_offering(CARD, paper)
    setting = breakeven.Setting(prompt_tokens=P, output_tokens=O)
    frame = breakeven.breakeven_table(CARD, paper, np.array([L]), g, setting, reuses_per_hour=1.0, delay=True)
    row = frame.set_index("tier").loc["ebs_io2"]
    assert row["ttft_recompute_s"] == pytest.approx(ttft_recompute, rel=1e-9)
    assert row["ttft_stored_s"] == pytest.approx(ttft_stored, rel=1e-9)
    assert row["load_s"] == pytest.approx(load_s(paper, L), rel=1e-9)
    assert row["decode_stored_s"] == pytest.approx(O * tpot, rel=1e-9)
    assert row["decode_recompute_s"] == pytest.approx(O * tpot, rel=1e-9)
    assert row["delay_recompute_s"] == pytest.approx(ttft_recompute + O * tpot, rel=1e-9)
    assert row["delay_stored_s"] == pytest.approx(ttft_stored + O * tpot, rel=1e-9)
    assert row["delay_ratio"] == pytest.approx((ttft_recompute + O * tpot) / (ttft_stored + O * tpot), rel=1e-9)
    assert row["usd_per_month_recompute"] == pytest.approx(usd_recompute, rel=1e-9)
    assert row["usd_per_month_stored"] == pytest.approx(usd_stored, rel=1e-9)
    assert row["cost_ratio"] == pytest.approx(usd_recompute / usd_stored, rel=1e-9)
    # Without --delay the table keeps its columns.
    plain = breakeven.breakeven_table(CARD, paper, np.array([L]), g, setting)
    assert "delay_stored_s" not in plain and plain["cost_ratio"].iloc[0] == pytest.approx(usd_recompute / usd_stored)


@pytest.mark.parametrize("prompt", [100, 3_000])
def test_breakeven_delay_overlaps_the_load_where_the_tier_says_so(tmp_path, prompt):
    """A tier with overlap_load streams the cache in while the prompt is prefilled (MODEL.md §4): the stored
    TTFT is the longer of the two, not their sum. A 100-token prompt takes less than io2's 1.3 s load of a
    10K-token cache; a 3,000-token prompt after it takes longer (about 2.5 s)."""
    path = tmp_path / "overlap.yaml"
    path.write_text("extends: paper-2025\nname: paper-overlap\ntiers:\n  - {name: ebs_io2, overlap_load: true}\n")
    catalog = load_catalog(str(path), MODELS)
    L, O = 10_000, 20
    rate = flops(10_000) / 7.0
    g = breakeven.default_offering(CARD, catalog)
    row = breakeven.breakeven_table(CARD, catalog, np.array([L]), g,
                                    breakeven.Setting(prompt_tokens=prompt, output_tokens=O), delay=True).iloc[0]
    ttft = max(load_s(catalog, L), flops(prompt, L) / rate)
    assert (ttft == load_s(catalog, L)) == (prompt == 100)
    assert row["ttft_stored_s"] == pytest.approx(ttft, rel=1e-9)
    assert row["delay_stored_s"] == pytest.approx(ttft + row["decode_stored_s"], rel=1e-12)


def test_cli_breakeven_delay_table_and_chart(tmp_path):
    runner = CliRunner()
    args = ["breakeven", "--model", "Llama-7B-paper", "--catalog", "paper-2025", "--tokens", "1000,10000",
            "--prompt-tokens", "100", "--output-tokens", "50", "--delay"]
    plot = tmp_path / "delay.png"
    result = runner.invoke(main, args + ["--plot", str(plot)])
    assert result.exit_code == 0, result.output
    for header in ("delay stored (s)", "delay recompute (s)", "delay ratio", "USD stored", "USD recompute"):
        assert header in result.output
    assert "delay: TTFT + 50 output tokens × TPOT, per request" in result.output
    png = plot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(png[16:20], "big") == 1800          # three panels (15 in at 120 dpi), not one (7 in)
    csv = runner.invoke(main, args + ["--csv"])
    frame = pd.read_csv(io.StringIO(csv.output))
    assert list(frame["tokens"]) == [1000, 10000]
    assert np.allclose(frame["delay_stored_s"], frame["ttft_stored_s"] + frame["decode_stored_s"], rtol=1e-12)
    assert "--delay" in runner.invoke(main, ["breakeven", "--help"]).output


# --- the example ----------------------------------------------------------------------------------------------------

def figure2_module():
    spec = importlib.util.spec_from_file_location("figure2", EXAMPLE / "figure2.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def example_profile() -> dict:
    """The profile as written in the example's catalog file (read here, not restated)."""
    (profile,) = yaml.safe_load((EXAMPLE / "catalog.yaml").read_text())["profiles"]
    return profile


def test_example_profile_loads_and_prefills_10k_tokens_in_7_s():
    """The catalog extends paper-2025 with a profile for the 7B model on one V100: 7 s at 10K tokens (the paper),
    the other lengths 7 s · F(L, 0) / F(10000, 0) to the millisecond (the FLOPs shape of MODEL.md §4, as the
    catalog says), decode 0.083 s a step at batch 1, unbatched, and loads that hold the GPU."""
    catalog = load_catalog(str(EXAMPLE / "catalog.yaml"), MODELS)
    assert catalog.name == "paper-2025-figure2" and [o.name for o in catalog.offerings] == ["v100-32gb"]
    fleet = build_fleet(CARD, catalog, "on_demand")
    (g,) = np.flatnonzero(fleet.serves)
    assert fleet.profile[g] >= 0 and fleet.profiles[fleet.profile[g]].label == "Llama-7B-paper on V100-32GB at tp 1"
    seconds, beyond = prefill_seconds(CARD, fleet, [g], [10_000])
    assert seconds[0] == pytest.approx(7.0, rel=1e-12) and not beyond[0]
    for tokens, value in example_profile()["prefill_s"].items():
        assert value == pytest.approx(7.0 * flops(tokens) / flops(10_000), abs=5e-4)
    step, _ = step_seconds(CARD, fleet, [g], [1], [5_500])
    assert step[0] == pytest.approx(0.083, rel=1e-12)
    assert bool(fleet.load_blocks_gpu[g]) and fleet.decode_batch[g] == 1


def test_figure2_example_runs_and_its_ratios_follow_model_md(tmp_path):
    """The example's script writes the table (CSV and Markdown) and the chart from `kvplan breakeven --delay`.
    Every ratio is recomputed here from MODEL.md §2's definitions, with the profile read from the catalog file
    (T(L) piecewise-linear through its points, past 10K the FLOPs shape scaled to the last point; TPOT the batch-1
    step scaled by the bytes a step reads, MODEL.md §3.2) and the paper's serial pipeline (the GPU is paid while
    the cache loads, MODEL.md §4):
        C_text = C_GPU · N · [T(L+P) + O·TPOT]
        C_KV   = C_GPU · {N · [T(L+P) − T(L) + O·TPOT + t_load] + T(L)} + C_storage · S(L) · 1 h
        delay_text = T(L+P) + O·TPOT,   delay_KV = t_load + T(L+P) − T(L) + O·TPOT
    Sensible ranges: reuse is cheaper and faster at every length, and both savings grow with length (prefill
    grows faster than the load and the storage, while the decode is the same on both sides). With 50 output
    tokens the decode (about 4 s) dwarfs a 1K-token prefill (0.6 s), so at 1K both savings are under 1.2×; at
    10K the prefill (7 s) against the load (1.3 s) gives a delay saving of about (7 + 4.7) / (1.3 + 4.7) ≈ 2,
    within the paper's 1.1–2.9×, and a cost saving within its 1.3–3.6×, below N = 5 (reuse saves at most N − 1
    of N prefills)."""
    module = figure2_module()
    frame = module.figure2(tmp_path)
    for name in ("figure2.csv", "figure2.md", "figure2.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "figure2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| 10,000 |" in (tmp_path / "figure2.md").read_text()
    assert list(frame["tokens"]) == list(range(1_000, 10_001, 1_000)) and set(frame["tier"]) == {"ebs_io2"}

    catalog = load_catalog(str(EXAMPLE / "catalog.yaml"), MODELS)
    profile = example_profile()
    xs = np.array([0] + list(profile["prefill_s"]), dtype=float)
    ys = np.array([0.0] + list(profile["prefill_s"].values()))

    def T(n):
        return np.interp(n, xs, ys) if n <= xs[-1] else ys[-1] * flops(n) / flops(xs[-1])

    step = profile["decode_step_s"]
    N, P, O = module.REUSES, module.PROMPT_TOKENS, module.OUTPUT_TOKENS
    for row in frame.itertuples():
        L = row.tokens
        tpot = step["by_batch"][1] * (WEIGHTS + KV_BYTES * (L + P)) / (WEIGHTS + KV_BYTES * step["kv_tokens"])
        load = load_s(catalog, L)
        c_text = USD_PER_GPU_SECOND * N * (T(L + P) + O * tpot)
        c_kv = (USD_PER_GPU_SECOND * (N * (T(L + P) - T(L) + O * tpot + load) + T(L))
                + IO2_USD_GB_MONTH / 730 * KV_BYTES * L / 1e9 * module.HOURS)
        delay_text, delay_kv = T(L + P) + O * tpot, load + T(L + P) - T(L) + O * tpot
        assert row.usd_per_month_recompute == pytest.approx(c_text, rel=1e-9)
        assert row.usd_per_month_stored == pytest.approx(c_kv, rel=1e-9)
        assert row.cost_ratio == pytest.approx(c_text / c_kv, rel=1e-9)
        assert row.delay_ratio == pytest.approx(delay_text / delay_kv, rel=1e-9)

    cost, delay = frame["cost_ratio"].to_numpy(), frame["delay_ratio"].to_numpy()
    assert np.all(cost > 1) and np.all(delay > 1)
    assert np.all(np.diff(cost) > 0) and np.all(np.diff(delay) > 0)
    assert cost[0] < 1.2 and delay[0] < 1.2
    assert 1.3 < cost[-1] < min(3.6, N) and 1.5 < delay[-1] < 2.9


def test_figure2_sensitivity_to_output_length_and_the_cost_of_a_load(tmp_path):
    """MODEL.md §2: decode time appears identically in both pipelines, so shorter outputs raise both savings;
    charging the load's wait as GPU time (the serial pipeline) lowers the cost saving and leaves the delay as it
    is. The script's sensitivity table shows both."""
    table = figure2_module().sensitivity(tmp_path, outputs=(5, 50))
    rows = [line for line in (tmp_path / "sensitivity.md").read_text().splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + 4            # the header, then 2 pipelines × 2 output lengths
    by = table.set_index(["pipeline", "output_tokens"])
    (serial,) = [name for name in table["pipeline"].unique() if name.startswith("serial")]
    (formula,) = [name for name in table["pipeline"].unique() if name.startswith("paper's formula")]
    for pipeline in (serial, formula):
        for column in ("cost_ratio_1k", "cost_ratio_10k", "delay_ratio_1k", "delay_ratio_10k"):
            assert by.loc[(pipeline, 5), column] > by.loc[(pipeline, 50), column]
    for output in (5, 50):
        assert by.loc[(formula, output), "cost_ratio_10k"] > by.loc[(serial, output), "cost_ratio_10k"]
        assert by.loc[(formula, output), "delay_ratio_10k"] == pytest.approx(by.loc[(serial, output),
                                                                                   "delay_ratio_10k"], rel=1e-12)


def test_figure2_workload_plans_to_the_breakeven_costs():
    """The example's workload (20 contexts at each thousand tokens, 1K–10K, 5 uses within the hour) planned on
    the example's catalog stores every context on io2, and its total and its all-recompute baseline are 20 times
    the sum of breakeven's per-context costs: the planner and the break-even table price the same options."""
    result = CliRunner().invoke(main, ["plan", str(EXAMPLE / "workload.yaml"), "--catalog",
                                       str(EXAMPLE / "catalog.yaml"), "--json", "-q"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    contexts = pd.read_csv(EXAMPLE / "contexts.csv")
    assert len(contexts) == 200 and set(contexts["tokens"].value_counts()) == {20}
    (prompt,), (output,), (reuses,) = (contexts[c].unique() for c in ("prompt_tokens", "output_tokens",
                                                                       "reuses_per_month"))
    hours = yaml.safe_load((EXAMPLE / "workload.yaml").read_text())["hours_per_month"]
    catalog = load_catalog(str(EXAMPLE / "catalog.yaml"), MODELS)
    frame = breakeven.breakeven_table(CARD, catalog, np.unique(contexts["tokens"]), 0,
                                      breakeven.Setting(prompt_tokens=int(prompt), output_tokens=int(output),
                                                        hours_per_month=hours),
                                      reuses_per_hour=reuses / hours, delay=True)
    assert plan["total_usd"] == pytest.approx(20 * frame["usd_per_month_stored"].sum(), rel=1e-6)
    assert plan["baselines"]["all_recompute"]["total_usd"] == pytest.approx(
        20 * frame["usd_per_month_recompute"].sum(), rel=1e-9)

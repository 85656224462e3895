"""The analytical model against hand computations from MODEL.md §2, §4 and §6 and the paper's own numbers."""

from pathlib import Path

import numpy as np
import pytest

from planner.costmodel import tensor_parallel
from planner.inputs.catalog import load_catalog, load_models
from planner.inputs.workload import parse_workload
from planner.plan.options import option_table, prepare
from planner.plan.runner import make_plan

MODELS = load_models()
PAPER = load_catalog("paper-2025", MODELS)
AWS = load_catalog("aws", MODELS)


def workload(contexts, model="Llama-7B-paper", mode="per_use", hours=730, ttft=100.0, **extra):
    data = {"model": model, "mode": mode, "hours_per_month": hours, "slo": {"ttft_s": ttft}, "contexts": contexts,
            **extra}
    return parse_workload(data, "test.yaml", MODELS, Path("."))


def paper_context(reuses, tokens=10_000, prompt=1, output=1):
    return [{"id": "ctx", "tokens": tokens, "reuses_per_month": reuses, "prompt_tokens": prompt,
             "output_tokens": output}]


# --- hand computations of MODEL.md's formulas, written out independently of planner/costmodel.py -----------

def flops(card, n, p):
    return 2 * card.params_b * 1e9 * n + 4 * card.n_layers * card.n_heads * card.attn_head_dim * n * (p + n / 2)


def paper_costs(tokens, prompt, output, reuses, hours):
    """C_text and C_KV of MODEL.md §2 for the paper-2025 catalog (one V100-32GB at $3/h, io2)."""
    card = MODELS["Llama-7B-paper"]
    rate = flops(card, 10_000, 0) / 7.0          # FLOP/s: calibrated so that 10K tokens take 7 s
    s = 2 * 32 * 32 * 128 * 2
    weights = card.params_b * 1e9 * 2
    batch = min(32, (32e9 - weights) // (s * (tokens + prompt + output)))
    t_step = (weights + batch * s * (tokens + prompt)) / (900e9 * 0.6)
    t_decode = output * t_step / batch            # seconds per request
    c_gpu = 3.0                                   # $ per hour: tp · price / gpus = 1 · 3 / 1
    size = s * tokens / 1e9
    c_text = c_gpu * reuses * (flops(card, tokens + prompt, 0) / rate + t_decode) / 3600
    c_kv = (c_gpu * (reuses * (t_decode + flops(card, prompt, tokens) / rate) + flops(card, tokens, 0) / rate) / 3600
            + 0.125 * size * hours / 730)
    return c_text, c_kv, batch, t_step


def test_kv_bytes_per_token_of_the_cards():
    assert MODELS["Llama-2-7B"].kv_bytes_per_token == 524_288
    assert MODELS["Llama-2-7B"].kv_bytes_per_token * 10_000 / 1e9 == pytest.approx(5.24288)  # the paper's 5.2 GB
    assert MODELS["Llama-3.1-8B"].kv_bytes_per_token == 2 * 32 * 8 * 128 * 2
    assert MODELS["Llama-3.1-70B"].kv_bytes_per_token == 327_680
    assert MODELS["Qwen2.5-7B"].kv_bytes_per_token == 57_344
    assert MODELS["DeepSeek-V3"].kv_bytes_per_token == 61 * (512 + 64) * 2
    assert MODELS["DeepSeek-V3"].attn_head_dim == 160
    assert MODELS["DeepSeek-V3"].weight_bytes == pytest.approx(671e9 * MODELS["DeepSeek-V3"].weight_dtype_bytes)


def test_paper_storage_per_hour_on_io2():
    # The paper: $0.125 per GB-month = 0.00017 $/GB-h; 0.00017 × 5.2 GB = $0.00088 per hour.
    assert round(0.125 / 730, 5) == 0.00017
    assert 0.00017 * 5.2 == pytest.approx(0.00088, abs=5e-6)
    # The model keeps 5.24288 GB for one hour (H = 1): the paper's figure before its rounding.
    plan = make_plan(workload(paper_context(10_000), hours=1), PAPER, baselines=False)
    assert plan["contexts"][0]["tier"] == "ebs_io2"
    assert plan["breakdown_usd"]["storage"] == pytest.approx(5.24288 * 0.125 / 730, abs=1e-6)
    assert plan["breakdown_usd"]["storage"] == pytest.approx(0.00088, rel=0.025)


def test_paper_prefill_takes_7_seconds_and_costs_0_0058():
    model = prepare(workload(paper_context(1, prompt=0, output=0)), PAPER)
    seconds = flops(MODELS["Llama-7B-paper"], 10_000, 0) / model.fleet.prefill_rate[0]
    assert seconds == pytest.approx(7.0, rel=1e-12)
    assert round(3 * seconds / 3600, 4) == 0.0058


def test_worked_example_of_model_md_section_6():
    table = option_table(prepare(workload(paper_context(10)), PAPER))
    assert table.batch[0] == 3
    assert table.tpot_s[0] * 1e3 == pytest.approx(54.09, abs=0.005)
    low = make_plan(workload(paper_context(10)), PAPER)
    assert low["contexts"][0]["tier"] == "recompute"
    assert low["total_usd"] == pytest.approx(0.058490, abs=5e-7)
    high = make_plan(workload(paper_context(1000)), PAPER)
    assert high["contexts"][0]["tier"] == "ebs_io2"
    assert high["total_usd"] == pytest.approx(0.676897, abs=5e-7)
    assert high["breakdown_usd"]["storage"] == pytest.approx(0.655360, abs=5e-7)
    assert high["breakdown_usd"]["compute"] == pytest.approx(0.021537, abs=5e-7)
    assert high["baselines"]["all_recompute"]["total_usd"] == pytest.approx(5.849037, abs=5e-7)
    assert high["baselines"]["all_recompute"]["savings_ratio"] == pytest.approx(8.6, abs=0.05)


@pytest.mark.parametrize("tokens,prompt,output,reuses,hours", [
    (10_000, 1, 1, 1000, 730), (10_000, 1, 1, 10, 730), (4_000, 50, 20, 5, 1), (25_000, 300, 100, 400, 730),
    (1_000, 10, 100, 60, 24), (30_000, 0, 1, 2, 730),
])
def test_per_use_plan_equals_c_text_and_c_kv_to_the_cent(tokens, prompt, output, reuses, hours):
    c_text, c_kv, _, _ = paper_costs(tokens, prompt, output, reuses, hours)
    plan = make_plan(workload(paper_context(reuses, tokens, prompt, output), hours=hours), PAPER)
    assert plan["baselines"]["all_recompute"]["total_usd"] == pytest.approx(c_text, abs=0.005)
    assert plan["baselines"]["ebs_io2"]["total_usd"] == pytest.approx(c_kv, abs=0.005)
    assert plan["total_usd"] == pytest.approx(min(c_text, c_kv), abs=0.005)
    # Tighter than the cent: the two implementations are the same formulas.
    assert plan["baselines"]["all_recompute"]["total_usd"] == pytest.approx(c_text, rel=1e-6)
    assert plan["baselines"]["ebs_io2"]["total_usd"] == pytest.approx(c_kv, rel=1e-6)


def test_break_even_reuse_rate_follows():
    # C_text(N) = a·N and C_KV(N) = b + c·N: the plan flips from recompute to io2 at N* = b / (a - c).
    c_text_1, c_kv_1, _, _ = paper_costs(10_000, 1, 1, 1, 730)
    c_text_2, c_kv_2, _, _ = paper_costs(10_000, 1, 1, 2, 730)
    a, c = c_text_2 - c_text_1, c_kv_2 - c_kv_1
    b = c_kv_1 - c
    n_star = b / (a - c)
    assert n_star == pytest.approx(113.35, abs=0.005)
    assert n_star / 730 < 1  # 0.155 an hour: "more than once per hour" is on the safe side
    assert make_plan(workload(paper_context(n_star * 0.99)), PAPER, baselines=False)["contexts"][0]["tier"] == \
        "recompute"
    assert make_plan(workload(paper_context(n_star * 1.01)), PAPER, baselines=False)["contexts"][0]["tier"] == \
        "ebs_io2"


def test_tensor_parallel_degree():
    a100_40 = next(o for o in AWS.offerings if o.name == "p4d.24xlarge")
    a100_80 = next(o for o in AWS.offerings if o.name == "p4de.24xlarge")
    h100 = next(o for o in AWS.offerings if o.name == "p5.48xlarge")
    h200 = next(o for o in AWS.offerings if o.name == "p5en.48xlarge")
    llama70 = MODELS["Llama-3.1-70B"]
    # W/tp <= 0.8 · hbm: the smallest power of two that fits
    for offering in (a100_40, a100_80, h100):
        tp = tensor_parallel(llama70, offering.gpus, offering.gpu.hbm_gb)
        assert llama70.weight_bytes / tp <= 0.8 * offering.gpu.hbm_gb * 1e9
        assert tp == 1 or llama70.weight_bytes / (tp // 2) > 0.8 * offering.gpu.hbm_gb * 1e9
    assert tensor_parallel(llama70, 8, 40.0) == 8
    assert tensor_parallel(llama70, 8, 80.0) == 4
    assert tensor_parallel(MODELS["Llama-3.1-8B"], 1, 24.0) == 1
    assert tensor_parallel(MODELS["Llama-3.1-70B"], 1, 24.0) == 0          # does not fit: cannot serve
    deepseek = MODELS["DeepSeek-V3"]
    assert tensor_parallel(deepseek, h200.gpus, h200.gpu.hbm_gb) == 8 * (
        deepseek.weight_bytes / 8 <= 0.8 * h200.gpu.hbm_gb * 1e9)


def test_ttft_of_a_host_memory_load_by_hand():
    card = MODELS["Llama-3.1-8B"]
    w = workload([{"id": "d", "tokens": 20_000, "reuses_per_month": 1000, "prompt_tokens": 200,
                   "output_tokens": 100}], model="Llama-3.1-8B", mode="provisioned")
    model = prepare(w, AWS)
    table = option_table(model)
    g = model.fleet.names.index("g6e.xlarge")
    t = model.tiers.names.index("host_memory")
    row = np.flatnonzero((table.g == g) & (table.t == t) & (table.c != 1))[0]
    offering = AWS.offerings[model.fleet.offering[g]]
    size = card.kv_bytes_per_token * 20_000 / 1e9
    load = size / (offering.gpu.pcie_gbps * 1)
    prefill = flops(card, 200, 20_000) / (offering.gpu.tflops * 1e12 * 0.4)
    assert table.ttft_s[row] == pytest.approx(load + prefill, rel=1e-12)
    recompute = np.flatnonzero((table.g == g) & (table.t == 0) & (table.c != 1))[0]
    assert table.ttft_s[recompute] == pytest.approx(flops(card, 20_200, 0) / (offering.gpu.tflops * 1e12 * 0.4))
    # HBM: no load at all
    hbm = np.flatnonzero((table.g == g) & (table.t == model.tiers.names.index("hbm")))[0]
    assert table.ttft_s[hbm] == pytest.approx(prefill, rel=1e-12)


def test_storage_request_and_transfer_charges_by_hand():
    """An object tier with chunking and per-GB charges: reads f·(objects·GET + S·(retrieval+transfer)),
    writes w·(objects·PUT + S·transfer), storage S·price·H/730."""
    card = MODELS["Llama-3.1-8B"]
    w = workload([{"id": "d", "tokens": 50_000, "reuses_per_month": 3000, "prompt_tokens": 10,
                   "output_tokens": 10, "writes_per_month": 4}], model="Llama-3.1-8B", mode="provisioned",
                 hours=500)
    raw = {**AWS.raw, "tiers": [{"name": "obj", "kind": "object", "price_gb_month": 0.02,
                                 "read_request_price": 4e-7, "write_request_price": 5e-6, "retrieval_per_gb": 0.01,
                                 "transfer_per_gb": 0.02, "first_byte_latency_s": 0.02, "read_gbps": 2.0,
                                 "object_tokens": 256}]}
    from planner.inputs.catalog import parse_catalog
    catalog = parse_catalog(raw, "test-catalog.yaml", MODELS)
    table = option_table(prepare(w, catalog))
    row = np.flatnonzero(table.t == 1)[0]
    size = card.kv_bytes_per_token * 50_000 / 1e9
    objects = -(-50_000 // 256)
    assert table.storage_usd[row] == pytest.approx(size * 0.02 * 500 / 730)
    assert table.requests_usd[row] == pytest.approx(3000 * objects * 4e-7 + 4 * objects * 5e-6)
    assert table.network_usd[row] == pytest.approx(3000 * size * 0.03 + 4 * size * 0.02)
    recompute = np.flatnonzero(table.t == 0)[0]
    assert table.direct_usd[recompute] == 0

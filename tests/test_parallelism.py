"""Tensor parallelism as a decision, measured profiles and loads that hold the GPU (MODEL.md §3.2, §4), checked
against hand computations of the formulas, written out here independently of planner/costmodel.py."""

import numpy as np
import pytest

from planner.inputs.catalog import load_models, parse_catalog
from planner.costmodel import (Demand, Settings, build_fleet, build_tiers, evaluate, prefill_seconds, step_seconds,
                               tp_versions)
from planner.inputs.errors import InputError

MODELS = load_models()
CARD = MODELS["Llama-3.1-8B"]
GPUS = {"H100": {"tflops": 989, "hbm_gb": 80, "hbm_gbps": 3350, "pcie_gbps": 64},
        "L4": {"tflops": 121, "hbm_gb": 24, "hbm_gbps": 300, "pcie_gbps": 32}}


def flops(card, n, p):
    return 2 * card.params_b * 1e9 * n + 4 * card.n_layers * card.n_heads * card.attn_head_dim * n * (p + n / 2)


def catalog(offerings, tiers=(), profiles=None, defaults=None):
    data = {"name": "t", "as_of": "2026-12-01", "gpus": GPUS, "offerings": list(offerings),
            "tiers": list(tiers) or [{"name": "host", "kind": "host_memory"}]}
    if profiles is not None:
        data["profiles"] = profiles
    if defaults:
        data["defaults"] = defaults
    return parse_catalog(data, "t.yaml", MODELS)


def offering(name, gpu="H100", gpus=8, price=40.0, **extra):
    return {"name": name, "gpu": gpu, "gpus": gpus, "price_per_hour": {"on_demand": price},
            "host_memory_gb": 2000, "local_nvme_gb": 8000, "local_nvme_gbps": 20, "network_gbps": 200,
            "block_storage_gbps": 80, **extra}


def demand(tokens, prompt=100, output=50, reuses=1000.0, ttft=100.0):
    one = lambda v, t=float: np.array([v], dtype=t)  # noqa: E731
    return Demand(one(tokens, np.int64), one(prompt, np.int64), one(output, np.int64), one(reuses), one(1.0),
                  one(ttft), one(np.inf), one(1, np.int64))


SETTINGS = Settings("provisioned", 730.0, 1.0, hbm_cache_possible=False)


def test_every_power_of_two_from_the_smallest_that_holds_the_weights():
    seventy = MODELS["Llama-3.1-70B"]
    assert tp_versions(CARD, 8, 80) == [1, 2, 4, 8]
    assert tp_versions(CARD, 1, 24) == [1]
    # 70B: 141 GB of weights; per GPU at most 0.8 * 80 = 64 GB -> tp 4 (35 GB) is the smallest on H100
    assert seventy.weight_bytes / 2 > 0.8 * 80e9 >= seventy.weight_bytes / 4
    assert tp_versions(seventy, 8, 80) == [4, 8]
    assert tp_versions(seventy, 2, 80) == []
    assert tp_versions(CARD, 6, 80) == [1, 2, 4]   # 8 > 6 GPUs


def test_a_pool_per_version_with_its_replicas_and_capacities():
    F = build_fleet(CARD, catalog([offering("p5")]), "on_demand")
    assert F.names == ("p5 tp1", "p5 tp2", "p5 tp4", "p5 tp8")
    assert F.offering_names == ("p5",) * 4
    assert F.tp.tolist() == [1, 2, 4, 8] and F.replicas.tolist() == [8, 4, 2, 1]
    W = CARD.weight_bytes
    for g, tp in enumerate([1, 2, 4, 8]):
        assert F.kv_space[g] == pytest.approx(tp * 80e9 - W)
        assert F.gpu_capacity[g] == pytest.approx(0.8 * (8 // tp) * tp)
        assert F.hbm_cache_gb[g] == pytest.approx((8 // tp) * 0.5 * (tp * 80e9 - W) / 1e9)
    assert F.pool("p5", 4) == 2 and F.pool("p5") == 0
    with pytest.raises(KeyError):
        F.pool("p5", 16)


def test_a_larger_tp_prefills_faster_at_the_same_gpu_seconds():
    cat = catalog([offering("p5")])
    F, T = build_fleet(CARD, cat, "on_demand"), build_tiers(cat)
    d = demand(60_000, prompt=512)
    o = evaluate(CARD, F, T, d, SETTINGS, np.zeros(4, np.int64), np.arange(4), np.zeros(4, np.int64),
                 np.zeros(4, np.int64))
    for g, tp in enumerate([1, 2, 4, 8]):
        t = flops(CARD, 60_512, 0) / (tp * 989e12 * 0.4)
        assert o.ttft_s[g] == pytest.approx(t, rel=1e-12)
    # GPU-seconds of the prefill (tp · t) are the same at every tp; decode differs only through the batch
    prefill_gpu_s = flops(CARD, 60_512, 0) / (989e12 * 0.4)
    for g, tp in enumerate([1, 2, 4, 8]):
        space = tp * 80e9 - CARD.weight_bytes
        b = min(32, np.floor(space / (CARD.kv_bytes_per_token * (60_000 + 512 + 50))))
        step = (CARD.weight_read_bytes + b * CARD.kv_bytes_per_token * 60_512) / (tp * 3350e9 * 0.6)
        busy = prefill_gpu_s + 50 * tp * step / b
        assert o.gpu_load[g] == pytest.approx(1000 / (730 * 3600) * busy, rel=1e-12)


def test_a_profile_replaces_the_roofline_for_its_model_gpu_and_tp():
    profile = {"model": "Llama-3.1-8B", "gpu": "H100", "tp": 2, "prefill_s": {1000: 0.05, 4000: 0.3, 16000: 1.5},
               "decode_step_s": {"kv_tokens": 2000, "by_batch": {1: 0.006, 8: 0.008, 32: 0.014}},
               "source": "test", "as_of": "2026-12-01"}
    cat = catalog([offering("p5")], profiles=[profile])
    F = build_fleet(CARD, cat, "on_demand")
    g2, g4 = F.pool("p5", 2), F.pool("p5", 4)
    L = np.array([500, 1000, 2500, 16000, 32000], dtype=float)
    t, beyond = prefill_seconds(CARD, F, np.full(5, g2), L)
    roof_last = flops(CARD, 16000, 0)
    expected = [0.05 * 500 / 1000, 0.05, 0.05 + (0.3 - 0.05) * 1500 / 3000, 1.5,
                1.5 * flops(CARD, 32000, 0) / roof_last]
    assert t == pytest.approx(expected, rel=1e-12)
    assert beyond.tolist() == [False, False, False, False, True]
    # another tp of the same GPU keeps the roofline
    t4, beyond4 = prefill_seconds(CARD, F, np.array([g4]), np.array([4000.0]))
    assert t4[0] == pytest.approx(flops(CARD, 4000, 0) / (4 * 989e12 * 0.4)) and not beyond4[0]
    # decode: interpolated by batch, scaled by the KV bytes read at another KV length
    s, W = CARD.kv_bytes_per_token, CARD.weight_read_bytes
    step, past = step_seconds(CARD, F, np.full(3, g2), np.array([4.0, 8.0, 64.0]), np.array([3000.0, 2000, 2000]))
    at4 = 0.006 + (0.008 - 0.006) * 3 / 7
    assert step[0] == pytest.approx(at4 * (W + 4 * s * 3000) / (W + 4 * s * 2000), rel=1e-12)
    assert step[1] == pytest.approx(0.008, rel=1e-12)
    assert step[2] == pytest.approx(0.014 * (W + 64 * s * 2000) / (W + 32 * s * 2000), rel=1e-12)
    assert past.tolist() == [False, False, True]


def test_an_option_prefills_n_tokens_after_p_cached_as_the_profiles_difference():
    profile = {"model": "Llama-3.1-8B", "gpu": "H100", "tp": 1, "prefill_s": {1000: 0.08, 10000: 1.0},
               "source": "test", "as_of": "2026-12-01"}
    cat = catalog([offering("p5", gpus=1)], profiles=[profile])
    F, T = build_fleet(CARD, cat, "on_demand"), build_tiers(cat)
    d = demand(5000, prompt=2000, ttft=100)
    o = evaluate(CARD, F, T, d, SETTINGS, np.zeros(2, np.int64), np.zeros(2, np.int64), np.array([0, 1]),
                 np.zeros(2, np.int64))
    T_ = lambda L: 0.08 + (1.0 - 0.08) * (L - 1000) / 9000  # noqa: E731
    size = CARD.kv_bytes_per_token * 5000 / 1e9
    assert o.ttft_s[0] == pytest.approx(T_(7000), rel=1e-12)                       # recompute 7,000 tokens
    assert o.ttft_s[1] == pytest.approx(size / 64 + T_(7000) - T_(5000), rel=1e-12)  # host load, then 2,000
    assert not o.extrapolated.any()


def test_profiles_are_checked():
    bad = [({"prefill_s": {1000: 0.5, 2000: 0.4}}, "must grow"),
           ({"prefill_s": {1000: -0.1}}, "above 0"),
           ({"prefill_s": {200000: 9.0}}, "beyond"),
           ({"gpu": "Z100"}, "unknown GPU"),
           ({"model": "Nope"}, "unknown model"),
           ({"tp": 3}, "power of two"),
           ({"decode_step_s": {"kv_tokens": 1000, "by_batch": {1: 0.01, 8: 0.009}}}, "must grow")]
    for change, message in bad:
        entry = {"model": "Llama-3.1-8B", "gpu": "H100", "tp": 1, "prefill_s": {1000: 0.1}, **change}
        with pytest.raises(InputError, match=message):
            catalog([offering("p5")], profiles=[entry])


def test_a_load_that_holds_the_gpu_adds_its_seconds_to_the_gpu_load():
    cat_async = catalog([offering("one", gpus=1)])
    cat_serial = catalog([offering("one", gpus=1)], defaults={"load_blocks_gpu": True})
    d = demand(20000, reuses=5000)
    loads = []
    for cat in (cat_async, cat_serial):
        F, T = build_fleet(CARD, cat, "on_demand"), build_tiers(cat)
        o = evaluate(CARD, F, T, d, SETTINGS, np.zeros(2, np.int64), np.zeros(2, np.int64), np.array([0, 1]),
                     np.zeros(2, np.int64))
        loads.append(o)
    size = CARD.kv_bytes_per_token * 20000 / 1e9
    load_s = size / 64.0                       # host memory over PCIe at tp 1
    rate = 5000 / (730 * 3600)
    assert loads[1].gpu_load[1] - loads[0].gpu_load[1] == pytest.approx(rate * load_s, rel=1e-9)
    assert loads[1].gpu_load[0] == loads[0].gpu_load[0]   # recompute loads nothing

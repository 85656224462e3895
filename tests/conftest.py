"""Fixtures shared by the test modules, and the one path entry for the bench's workload generator
(bench/generate.py; bench/ is not a package)."""

import inspect
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from planner.inputs.catalog import load_catalog, load_models, parse_catalog
from planner.inputs.workload import load_workload, parse_workload
from planner.plan.runner import make_plan

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
MODELS = load_models()


def _click_results_as_in_8_2() -> None:
    """SkyPilot (the test extra, for tests/test_export.py) pins click below 8.2; there CliRunner mixes stderr into
    stdout unless told not to, and `output` is stdout alone. Keep them apart, and `output` all a user sees, as
    click 8.2 and later do, so that the same assertions hold on either."""
    from click.testing import CliRunner, Result

    if "mix_stderr" not in inspect.signature(CliRunner.__init__).parameters:
        return
    init = CliRunner.__init__

    def separate(self, *args, mix_stderr=False, **kwargs):
        init(self, *args, mix_stderr=mix_stderr, **kwargs)

    CliRunner.__init__ = separate
    Result.output = property(lambda self: self.stdout + (self.stderr if self.stderr_bytes is not None else ""))


_click_results_as_in_8_2()


@pytest.fixture(scope="session")
def models():
    """The bundled model cards."""
    return MODELS


@pytest.fixture(scope="session")
def aws(models):
    """The bundled aws catalog."""
    return load_catalog("aws", models)


@pytest.fixture(scope="session")
def example_plan(models, aws):
    """A bundled example planned on aws as `kvplan plan` plans it (baselines included), once per session."""
    plans = {}

    def plan(name: str) -> dict:
        if name not in plans:
            plans[name] = make_plan(load_workload(ROOT / "examples" / name / "workload.yaml", models), aws)
        return plans[name]
    return plan


@pytest.fixture(scope="session")
def rag_docs_head(models):
    """The first n documents of the rag-docs example as a workload of their own (contexts inline)."""
    def head(n: int):
        folder = ROOT / "examples" / "rag-docs"
        data = yaml.safe_load((folder / "workload.yaml").read_text())
        data.pop("contexts_file")
        data["contexts"] = pd.read_csv(folder / "contexts.csv").head(n).to_dict(orient="records")
        return parse_workload(data, f"rag{n}.yaml", models, folder)
    return head


@pytest.fixture
def bench_workload(tmp_path):
    """A generated benchmark workload (bench/generate.py) of n contexts: the path of its workload.yaml."""
    from generate import write

    return lambda n, seed: write(n, tmp_path / "bench", seed=seed)


# --- random small instances ----------------------------------------------------------------------------------

GPUS = {
    "L40S": {"tflops": 362, "hbm_gb": 48, "hbm_gbps": 864, "pcie_gbps": 32},
    "A100-80GB": {"tflops": 312, "hbm_gb": 80, "hbm_gbps": 2039, "pcie_gbps": 32},
    "A10G": {"tflops": 70, "hbm_gb": 24, "hbm_gbps": 600, "pcie_gbps": 16},
}


TIER_POOL = [
    {"name": "hbm", "kind": "hbm"},
    {"name": "host", "kind": "host_memory"},
    {"name": "nvme", "kind": "local_nvme"},
    {"name": "blk", "kind": "block", "price_gb_month": 0.125, "first_byte_latency_s": 0.001, "read_gbps": 4.0},
    {"name": "obj", "kind": "object", "price_gb_month": 0.023, "read_request_price": 4e-7,
     "write_request_price": 5e-6, "transfer_per_gb": 0.01, "first_byte_latency_s": 0.03, "read_gbps": 1.5},
    {"name": "fast_obj", "kind": "object", "price_gb_month": 0.11, "retrieval_per_gb": 0.0006,
     "first_byte_latency_s": 0.005, "read_gbps": 3.0, "object_tokens": 4096},
]


def _random_instance(rng, n_contexts, n_offerings, n_tiers, mode):
    offerings = []
    for i in range(n_offerings):
        gpu = rng.choice(list(GPUS))
        offerings.append({
            "name": f"off{i}", "gpu": str(gpu), "gpus": int(rng.choice([1, 1, 2])),
            "price_per_hour": {"on_demand": float(np.round(rng.uniform(0.5, 6), 3))},
            "host_memory_gb": float(rng.choice([16, 64, 256])), "local_nvme_gb": float(rng.choice([50, 250, 900])),
            "local_nvme_gbps": float(rng.choice([0.5, 2.0])), "network_gbps": float(rng.choice([10, 25])),
            "block_storage_gbps": float(rng.choice([5, 10])),
            **({"max_instances": int(rng.integers(1, 3))} if rng.random() < 0.5 else {}),
        })
    tiers = [TIER_POOL[i] for i in sorted(rng.choice(len(TIER_POOL), n_tiers, replace=False))]
    catalog = parse_catalog({"name": "random", "as_of": "2026-11-26", "gpus": GPUS, "offerings": offerings,
                             "tiers": tiers}, "random.yaml", MODELS)
    contexts = [{"id": f"c{i}", "tokens": int(np.exp(rng.uniform(np.log(2_000), np.log(120_000)))),
                 "reuses_per_month": float(np.round(np.exp(rng.uniform(0, np.log(3e6))), 1)),
                 "prompt_tokens": int(rng.integers(10, 500)), "output_tokens": int(rng.integers(1, 300)),
                 "writes_per_month": float(rng.choice([1, 1, 3])),
                 "ttft_slo_s": float(rng.choice([1.0, 3.0, 10.0, 60.0]))} for i in range(n_contexts)]
    model = str(rng.choice(["Llama-3.1-8B", "Qwen2.5-7B", "Mistral-7B"]))
    for c in contexts:  # Mistral-7B's window is 8,192 tokens
        if model == "Mistral-7B":
            c["tokens"] = min(c["tokens"], 7_000)
    workload = parse_workload({"model": model, "mode": mode, "peak_to_mean": float(rng.choice([1, 2, 4])),
                               "slo": {"ttft_s": 10.0}, "contexts": contexts}, "random-workload.yaml", MODELS,
                              Path("."))
    return workload, catalog


@pytest.fixture(scope="session")
def random_instance():
    """random_instance(rng, contexts, offerings, tiers, mode) -> (workload, catalog): a random small instance."""
    return _random_instance

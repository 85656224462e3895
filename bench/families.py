"""Workload families for the solver benchmark (issue #23), generated at fixed seeds.

Each family models one kind of service and is shaped so that one kind of resource sets the fleet; `make(family,
n, seed)` returns the workload YAML (its contexts in `contexts.csv` beside it) and the contexts as a DataFrame
(columns of planner/workload.py), vectorised in numpy from 100 to 1,000,000 contexts. All use Llama-3.1-8B
(131,072 KV bytes per token: 8K tokens are 1.07 GB), the bundled examples' model. Popularity is Zipf over a random
ranking: context of rank r gets reuses ∝ r^-a, scaled to the family's mean reuses per context.

- **compute**: an assistant/agent product. Shared prefixes (system prompts, tool specs, conversation heads;
  log-normal, median 3K tokens, 500-32K), reused 3,000 times a month on average (Zipf a = 0.8), long generations
  (median 1,000 tokens, 100-4,000), TTFT SLOs of 3-10 s, TPOT 100 ms, and chat turns that reuse nothing beside
  them. Decode dominates every request and the caches are small, so the GPU rows set the fleet.
- **storage**: the issue's document set: documents log-normal (median 8K tokens, sigma 1, 500-120K), TTFT SLO drawn
  from {1, 2, 5, 10} s, Zipf reuse (a = 1, 100 a month on average), rag-docs' prompts, outputs and background.
  Long documents with a 1-2 s TTFT cannot be recomputed (120K tokens take about 40 s on an L40S) nor read from
  NVMe or remote tiers in time: they must sit in HBM or host memory, and the fleet is bought for that capacity
  while its GPUs idle. The issue's shape: at 1,500 contexts it reported a 35% gap, at 100,000 a 63% one.
- **path**: document QA over a large corpus (contracts, code bases): long documents (median 24K tokens, 3 GB;
  4K-120K), queried 5,000 times a month each on average with a flat popularity (Zipf a = 0.4), short prompts and
  extractive answers (1-19 tokens), TTFT SLOs of 3 or 5 s. Recomputing 24K tokens takes about 3.5 s on an L40S and
  costs more GPU than loading them; the corpus soon outgrows the host memory and NVMe of the fleet the GPUs
  need, so most reuses stream from EBS or S3 and the instances' block-storage and network bandwidth set the fleet.
- **mixed**: a platform hosting all of the above: per-context TTFT SLOs log-uniform from 0.5 to 30 s (the tightest
  ones on the shorter contexts, as interactive prefixes are), lengths log-normal (median 4K, sigma 1.5) from 200 to
  120K tokens, Zipf reuse (a = 1, 1,000 a month on average), a TPOT SLO of 100 ms on a third of them, and
  background traffic (500 requests a month per context).
- **examples**: the bundled examples (examples/*/workload.yaml), each at its own size (`examples()`).

What each family binds, checked on aws with `python -m planner plan W --catalog aws --no-baselines --method scale
--time-limit 60` (seed 0; 2026-12-07). GPU is the plan's peak utilisation, whose cap is utilization_max = 0.8;
storage and path are the fleet's use over its capacity (bench/usage.py), 1.0 where the row binds:

- compute, 1,000: 5 g6e.xlarge + 1 g5.xlarge, $7,527; GPU 80% (the row binds), host memory 86%, NVMe 22%, no
  remote reads: the GPU rows set the fleet.
- storage, 1,000: g6e.8xlarge + g6e.16xlarge, $8,862 (bound $6,717, gap 24%); host memory 100%, GPU 25% and 2%.
  1,500: one g6e.24xlarge, $11,060 (bound $9,406, gap 15%; the issue saw $14,392 over $9,381); host memory
  100%, HBM 95%, GPU 11%. At 500 the same generator gave one g6e.16xlarge at $5,535 (the issue: $5,547.30).
- path, 1,000: one g6e.16xlarge, $5,641; block-storage path 100% (EBS io2), network 53%, host, HBM and NVMe full,
  GPU 58%. 3,000: 3 g6.8xlarge + 2 g6e.16xlarge, block 100%, network 48%. Once the fleet's own host memory and
  NVMe are full (they cost nothing more), every further cache streams over the instances' paths, so path and
  attached capacity bind together. On gcp (no EBS, no local NVMe path) the network binds: 1,000 contexts on
  an a3-highgpu-1g and 5 g2-standard-32, network 86%. On lambda remote tiers have no path at all (the catalog
  lists no network bandwidth), so there this family is storage-bound. At 10,000 on aws the current engine's plan
  (two p4d.24xlarge, gap 32.5%; bench/RESULTS.md) fills the GPUs and the caches and leaves the network at 49%.
- mixed, 1,000: one g6e.xlarge, $1,404; GPU 80%, host memory and NVMe full, network 70%: every kind of row at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ("compute", "storage", "path", "mixed")
MODEL = "Llama-3.1-8B"
MAX_TOKENS = 120_000


@dataclass(frozen=True)
class Generated:
    """One generated workload: its YAML text (contexts_file: contexts.csv) and its contexts."""
    yaml: str
    contexts: pd.DataFrame

    def write(self, folder: Path) -> Path:
        """Write workload.yaml and contexts.csv into folder; returns the workload's path."""
        folder.mkdir(parents=True, exist_ok=True)
        self.contexts.to_csv(folder / "contexts.csv", index=False)
        (folder / "workload.yaml").write_text(self.yaml)
        return folder / "workload.yaml"


def _yaml(family: str, n: int, seed: int, *, peak_to_mean: float, ttft_s: float, tpot_s: float | None,
          background: int, prompt: int, output: int) -> str:
    tpot = "" if tpot_s is None else f"\n  tpot_s: {tpot_s}"
    return (f"# Benchmark family {family!r}: {n:,} contexts, seed {seed} (bench/families.py).\n"
            f"name: {family}-{n}\nmodel: {MODEL}\nmode: provisioned\nhours_per_month: 730\n"
            f"peak_to_mean: {peak_to_mean}\nslo:\n  ttft_s: {ttft_s}{tpot}\n"
            f"traffic:\n  requests_per_month: {background}\n  prompt_tokens: {prompt}\n  output_tokens: {output}\n"
            "contexts_file: contexts.csv\n")


def _lognormal(rng: np.random.Generator, n: int, median: float, sigma: float, low: int, high: int) -> np.ndarray:
    return np.clip(np.round(rng.lognormal(np.log(median), sigma, n)), low, high).astype(np.int64)


def zipf_reuses(rng: np.random.Generator, n: int, mean: float, exponent: float) -> np.ndarray:
    """Reuses per month: rank r (a random permutation) gets mean · n · r^-a / Σ r^-a, to 0.01."""
    weight = (rng.permutation(n) + 1.0) ** -exponent
    return np.round(mean * n * weight / weight.sum(), 2)


def _ids(prefix: str, n: int) -> list[str]:
    width = max(6, len(str(n - 1)))
    return [f"{prefix}-{i:0{width}d}" for i in range(n)]


def _frame(prefix: str, tokens, reuses, prompt, output, ttft, tpot, writes) -> pd.DataFrame:
    return pd.DataFrame({"id": _ids(prefix, len(tokens)), "tokens": tokens, "reuses_per_month": reuses,
                         "prompt_tokens": prompt, "output_tokens": output, "ttft_slo_s": ttft, "tpot_slo_s": tpot,
                         "writes_per_month": writes})


def compute(n: int, seed: int) -> Generated:
    rng = np.random.default_rng(seed)
    tokens = _lognormal(rng, n, 3_000, 0.7, 500, 32_000)
    reuses = zipf_reuses(rng, n, 3_000.0, 0.8)
    prompt = _lognormal(rng, n, 300, 0.6, 20, 4_000)
    output = _lognormal(rng, n, 1_000, 0.5, 100, 4_000)
    ttft = rng.choice([3.0, 5.0, 10.0], n)
    writes = rng.choice([1.0, 4.0, 30.0], n, p=[0.6, 0.3, 0.1])
    frame = _frame("prefix", tokens, reuses, prompt, output, ttft, np.full(n, np.nan), writes)
    return Generated(_yaml("compute", n, seed, peak_to_mean=1.5, ttft_s=5.0, tpot_s=0.1, background=1_000 * n,
                           prompt=500, output=800), frame)


def storage(n: int, seed: int) -> Generated:
    rng = np.random.default_rng(seed)
    tokens = _lognormal(rng, n, 8_000, 1.0, 500, MAX_TOKENS)
    reuses = zipf_reuses(rng, n, 100.0, 1.0)
    ttft = rng.choice([1.0, 2.0, 5.0, 10.0], n)
    prompt = rng.integers(50, 400, n)
    output = rng.integers(100, 500, n)
    writes = np.where(rng.random(n) < 0.1, 4.0, 1.0)
    frame = _frame("doc", tokens, reuses, prompt, output, ttft, np.full(n, np.nan), writes)
    return Generated(_yaml("storage", n, seed, peak_to_mean=2.0, ttft_s=10.0, tpot_s=0.1, background=500_000,
                           prompt=600, output=250), frame)


def path(n: int, seed: int) -> Generated:
    rng = np.random.default_rng(seed)
    tokens = _lognormal(rng, n, 24_000, 0.5, 4_000, MAX_TOKENS)
    reuses = zipf_reuses(rng, n, 5_000.0, 0.4)
    prompt = rng.integers(20, 200, n)
    output = rng.integers(1, 20, n)
    ttft = rng.choice([3.0, 5.0], n)
    writes = np.ones(n)
    frame = _frame("corpus", tokens, reuses, prompt, output, ttft, np.full(n, np.nan), writes)
    return Generated(_yaml("path", n, seed, peak_to_mean=1.5, ttft_s=10.0, tpot_s=None, background=0,
                           prompt=200, output=50), frame)


def mixed(n: int, seed: int) -> Generated:
    rng = np.random.default_rng(seed)
    tokens = _lognormal(rng, n, 4_000, 1.5, 200, MAX_TOKENS)
    reuses = zipf_reuses(rng, n, 1_000.0, 1.0)
    prompt = _lognormal(rng, n, 300, 0.8, 20, 4_000)
    output = _lognormal(rng, n, 250, 0.8, 10, 2_000)
    # SLOs log-uniform on 0.5-30 s, sorted against length so that the tightest go to the shortest contexts
    # (a 120K-token context cannot reach its first token in 0.5 s from anywhere but HBM).
    slo = np.round(np.exp(rng.uniform(np.log(0.5), np.log(30.0), n)), 2)
    ttft = np.empty(n)
    ttft[np.argsort(tokens + rng.uniform(0, 2_000, n), kind="stable")] = np.sort(slo)
    tpot = np.where(rng.random(n) < 1 / 3, 0.1, np.nan)
    writes = rng.choice([1.0, 4.0, 30.0], n, p=[0.8, 0.15, 0.05])
    frame = _frame("ctx", tokens, reuses, prompt, output, ttft, tpot, writes)
    return Generated(_yaml("mixed", n, seed, peak_to_mean=1.5, ttft_s=5.0, tpot_s=None, background=500 * n,
                           prompt=500, output=300), frame)


_MAKERS = {"compute": compute, "storage": storage, "path": path, "mixed": mixed}


def make(family: str, n: int, seed: int = 0) -> tuple[str, pd.DataFrame]:
    """The workload YAML text and contexts of `family` at `n` contexts and `seed`."""
    if family not in _MAKERS:
        raise ValueError(f"unknown family {family!r} (known: {', '.join(FAMILIES)})")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    generated = _MAKERS[family](n, seed)
    return generated.yaml, generated.contexts


def write(family: str, n: int, folder: Path, seed: int = 0) -> Path:
    """Generate and write workload.yaml and contexts.csv into folder; returns the workload's path."""
    return Generated(*make(family, n, seed)).write(folder)


def examples() -> list[Path]:
    """The bundled examples' workloads, by name."""
    return sorted((ROOT / "examples").glob("*/workload.yaml"))

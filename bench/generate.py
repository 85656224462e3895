"""Realistic synthetic workloads for the scale benchmark (issue #6), with fixed seeds.

A RAG / agent platform on Qwen2.5-7B-Instruct-1M: context lengths log-normal (median 4,000 tokens, clipped to
500-200,000), popularity Zipf (exponent 1.0 over a random ranking, 200 reuses per context per month on
average), prompts and outputs log-normal, writes mostly monthly, and a mix of SLO classes:
interactive (TTFT 2 s, TPOT 100 ms), standard (5 s), batch (20 s).

    python bench/generate.py 100000 --out /tmp/bench-100k     # writes workload.yaml and contexts.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

WORKLOAD = """\
# Synthetic benchmark workload ({n:,} contexts, seed {seed}); see bench/generate.py.
name: bench-{n}
model: Qwen2.5-7B-Instruct-1M
mode: provisioned
hours_per_month: 730
peak_to_mean: 1.5
slo:
  ttft_s: 5.0
traffic:
  requests_per_month: {background}
  prompt_tokens: 500
  output_tokens: 300
contexts_file: contexts.csv
"""


def contexts(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)

    def lognormal(median: float, sigma: float, low: int, high: int) -> np.ndarray:
        return np.clip(np.round(rng.lognormal(np.log(median), sigma, n)), low, high).astype(np.int64)

    tokens = lognormal(4000, 1.0, 500, 200_000)
    rank = rng.permutation(n) + 1
    harmonic = np.sum(1.0 / np.arange(1, n + 1))
    reuses = np.round(200.0 * n / harmonic / rank, 2)
    slo_class = rng.choice(3, n, p=[0.3, 0.5, 0.2])
    ttft = np.array([2.0, 5.0, 20.0])[slo_class]
    tpot = np.where(slo_class == 0, 0.1, np.nan)
    writes = rng.choice([1.0, 4.0, 30.0], n, p=[0.8, 0.15, 0.05])
    return pd.DataFrame({
        "id": [f"doc-{i:07d}" for i in range(n)],
        "tokens": tokens,
        "reuses_per_month": reuses,
        "prompt_tokens": lognormal(300, 0.8, 20, 4000),
        "output_tokens": lognormal(200, 0.8, 10, 2000),
        "ttft_slo_s": ttft,
        "tpot_slo_s": tpot,
        "writes_per_month": writes,
    })


def write(n: int, out: Path, seed: int = 0) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    contexts(n, seed).to_csv(out / "contexts.csv", index=False)
    (out / "workload.yaml").write_text(WORKLOAD.format(n=n, seed=seed, background=5 * n))
    return out / "workload.yaml"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("contexts", type=int)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(write(args.contexts, args.out, args.seed))

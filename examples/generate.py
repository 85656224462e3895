"""Regenerate the example contexts files (fixed seeds): `python examples/generate.py`."""

from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent


def rag_docs(n: int = 300, seed: int = 7) -> pd.DataFrame:
    """Documents of 1K-100K tokens (log-uniform); reuse Zipf-like over a random popularity order."""
    rng = np.random.default_rng(seed)
    tokens = np.round(np.exp(rng.uniform(np.log(1_000), np.log(100_000), n))).astype(int)
    rank = rng.permutation(n) + 1
    reuses = np.round(60_000 / rank**1.1, 1)
    return pd.DataFrame({"id": [f"doc-{i:04d}" for i in range(n)], "tokens": tokens, "reuses_per_month": reuses,
                         "prompt_tokens": rng.integers(50, 400, n), "output_tokens": rng.integers(100, 500, n),
                         "writes_per_month": np.where(rng.random(n) < 0.1, 4, 1)})


def paper(n: int = 200, seed: int = 3) -> pd.DataFrame:
    """The paper's experiment: 200 TriviaQA contexts of 1K-10K tokens, each used 5 times, outputs 1-100 tokens."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"id": [f"trivia-{i:03d}" for i in range(n)],
                         "tokens": rng.integers(1_000, 10_001, n), "reuses_per_month": 5,
                         "prompt_tokens": rng.integers(10, 40, n), "output_tokens": rng.integers(1, 101, n)})


def chatbot_prompts(seed: int = 11) -> pd.DataFrame:
    """Shared system prompts of a chatbot product: few, short, reused very often, tight TTFT for some."""
    rng = np.random.default_rng(seed)
    n = 40
    reuses = np.round(5_000_000 / (np.arange(n) + 1) ** 1.3)
    return pd.DataFrame({"id": [f"assistant-{i:02d}" for i in range(n)],
                         "tokens": rng.integers(1_500, 12_000, n), "reuses_per_month": reuses,
                         "prompt_tokens": rng.integers(30, 300, n), "output_tokens": rng.integers(80, 400, n),
                         "ttft_slo_s": np.where(np.arange(n) < 10, 0.5, np.nan)})


if __name__ == "__main__":
    rag_docs().to_csv(HERE / "rag-docs" / "contexts.csv", index=False)
    paper().to_csv(HERE / "paper" / "contexts.csv", index=False)
    chatbot_prompts().to_csv(HERE / "chatbot-prompts" / "contexts.csv", index=False)

"""The paper's Figure 2 (arXiv 2503.14647) from kvplan: recomputing each context from text against reusing its
stored KV cache, cost and end-to-end delay per input length, 1K to 10K tokens.

From the repository root:  python examples/paper-figure2/figure2.py [OUT_DIR]   (default: this folder)

Every number comes from `kvplan breakeven --delay` (run as `python -m planner` from the repository root, so a
checkout runs its own code). Writes:
  figure2.csv     the command's CSV, as it prints it
  figure2.md      cost and delay, recompute against reuse, and their ratios, per input length
  figure2.png     the command's chart: delay, cost and break-even reuse rate by length
  sensitivity.md  the ratios at 1K and 10K tokens for other output lengths, and with loads costed as the paper's
                  formula does (no GPU time while a cache loads)
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CATALOG = "examples/paper-figure2/catalog.yaml"                 # the paper's serial pipeline
PAPER_FORMULA = "examples/paper-figure2/catalog-paper-formula.yaml"  # the same, loads not charged as GPU time
LENGTHS = ",".join(str(n) for n in range(1_000, 10_001, 1_000))
PROMPT_TOKENS, OUTPUT_TOKENS = 25, 50   # as in workload.yaml
REUSES, HOURS = 5, 1                    # each context used 5 times within the hour


def command(catalog: str = CATALOG, tokens: str = LENGTHS, output_tokens: int = OUTPUT_TOKENS) -> list[str]:
    """The `kvplan breakeven --delay` arguments for the paper's setting."""
    return ["breakeven", "--model", "Llama-7B-paper", "--catalog", catalog, "--tokens", tokens,
            "--prompt-tokens", str(PROMPT_TOKENS), "--output-tokens", str(output_tokens),
            "--reuses-per-hour", str(REUSES), "--hours-per-month", str(HOURS), "--delay"]


def kvplan(args: list[str]) -> str:
    """Run `kvplan ARGS` from the repository root; its standard output."""
    result = subprocess.run([sys.executable, "-m", "planner", *args, "-q"], cwd=ROOT, capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise SystemExit(f"kvplan {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def markdown(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table: the first column left-aligned, the numbers right-aligned."""
    lines = ["| " + " | ".join(headers) + " |", "|:---|" + "|".join("---:" for _ in headers[1:]) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def figure2(out: Path) -> pd.DataFrame:
    """The table and chart: `kvplan breakeven --delay` over 1K..10K tokens on the example's catalog."""
    out.mkdir(parents=True, exist_ok=True)
    text = kvplan(command() + ["--csv", "--plot", str((out / "figure2.png").resolve())])
    (out / "figure2.csv").write_text(text)
    frame = pd.read_csv(io.StringIO(text))
    rows = [[f"{r.tokens:,}", f"{r.usd_per_month_recompute:.5f}", f"{r.usd_per_month_stored:.5f}",
             f"{r.cost_ratio:.2f}", f"{r.delay_recompute_s:.2f}", f"{r.delay_stored_s:.2f}", f"{r.delay_ratio:.2f}"]
            for r in frame.itertuples()]
    title = (f"Llama-7B-paper on one V100 ($3/h), EBS io2; prompt {PROMPT_TOKENS} and output {OUTPUT_TOKENS} "
             f"tokens; {REUSES} uses within {HOURS} h. Cost: one context over the hour (USD); delay: one request "
             "(s), TTFT + output × TPOT.\n\n")
    (out / "figure2.md").write_text(title + markdown(
        ["input tokens", "recompute USD", "KV reuse USD", "cost saving ×", "recompute delay s", "KV reuse delay s",
         "delay saving ×"], rows))
    return frame


def sensitivity(out: Path, outputs: tuple[int, ...] = (5, 10, 20, 50, 100)) -> pd.DataFrame:
    """The cost and delay ratios at 1K and 10K tokens, by output length and by who pays for a load's wait."""
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for pipeline, catalog in (("serial: a load holds the GPU", CATALOG),
                              ("paper's formula: loads not charged", PAPER_FORMULA)):
        for output_tokens in outputs:
            frame = pd.read_csv(io.StringIO(kvplan(command(catalog, "1000,10000", output_tokens) + ["--csv"])))
            at = frame.set_index("tokens")
            records.append({"pipeline": pipeline, "output_tokens": output_tokens,
                            "cost_ratio_1k": at.loc[1000, "cost_ratio"], "cost_ratio_10k": at.loc[10000, "cost_ratio"],
                            "delay_ratio_1k": at.loc[1000, "delay_ratio"],
                            "delay_ratio_10k": at.loc[10000, "delay_ratio"]})
    table = pd.DataFrame(records)
    rows = [[r.pipeline, str(r.output_tokens), f"{r.cost_ratio_1k:.2f}–{r.cost_ratio_10k:.2f}",
             f"{r.delay_ratio_1k:.2f}–{r.delay_ratio_10k:.2f}"] for r in table.itertuples()]
    (out / "sensitivity.md").write_text(
        "Savings of KV reuse over text recompute at 1K–10K input tokens (the paper: cost 1.3–3.6×, delay "
        "1.1–2.9×).\n\n" + markdown(["cost of a load", "output tokens", "cost saving ×", "delay saving ×"], rows))
    return table


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    frame = figure2(target)
    sensitivity(target)
    print((target / "figure2.md").read_text() + "\n" + (target / "sensitivity.md").read_text())
    print(f"wrote figure2.csv, figure2.md, figure2.png and sensitivity.md in {target}")

"""`kvplan breakeven` against MODEL.md §2's hand computation for the paper's setting, and the CLI."""

import numpy as np
import pytest
from click.testing import CliRunner

from planner.analyses import breakeven
from planner.cli import main
from planner.inputs.catalog import load_catalog, load_models

MODELS = load_models()
PAPER = load_catalog("paper-2025", MODELS)
CARD = MODELS["Llama-7B-paper"]

# MODEL.md §2, by hand: Llama-7B (32 layers, 32 KV heads of 128, fp16) keeps 2·32·32·128·2 = 524,288 bytes a token;
# EBS io2 at $0.125 per GB-month; one V100 at $3 an hour prefills 10K tokens in 7 s (the catalog's calibration).
KV_GB_10K = 10_000 * 2 * 32 * 32 * 128 * 2 / 1e9          # 5.24288 GB ("5.2 GB" in the paper)
PREFILL_USD = 3.0 * 7.0 / 3600                              # $0.0058 per prefill of the context
STORAGE_USD_PER_HOUR = KV_GB_10K * 0.125 / 730              # $0.00090 per hour ("0.00017 x 5.2 = $0.00088")


def test_paper_breakeven_matches_the_hand_computation():
    """Storing for a month costs the storage and one prefill to build the cache; each reuse then saves one
    prefill (no prompt, no output: nothing else differs). Break-even: (storage + build) / prefill reuses."""
    g = breakeven.default_offering(CARD, PAPER)
    frame = breakeven.breakeven_table(CARD, PAPER, np.array([10_000]), g,
                                      breakeven.Setting(prompt_tokens=0, output_tokens=0))
    row = frame.set_index("tier").loc["ebs_io2"]
    per_month = (STORAGE_USD_PER_HOUR * 730 + PREFILL_USD) / PREFILL_USD
    assert row["breakeven_per_month"] == pytest.approx(per_month, rel=1e-9)
    assert row["breakeven_per_hour"] == pytest.approx(per_month / 730, rel=1e-9)
    assert row["breakeven_per_hour"] == pytest.approx(0.1553, abs=1e-4)    # well under the paper's "once per hour"
    assert row["usd_per_reuse_recompute"] == pytest.approx(PREFILL_USD, rel=1e-9)
    assert row["ttft_recompute_s"] == pytest.approx(7.0, rel=1e-9)
    assert row["ttft_stored_s"] == pytest.approx(0.001 + KV_GB_10K / 4.0, rel=1e-9)   # io2 at 4 GB/s, 1 ms first byte


def test_paper_cost_ratio_within_one_hour():
    """MODEL.md §2's C_text / C_KV for N = 5 reuses within T = 1 hour (the paper's experiment), no prompt or
    output: C_text = C_GPU·N·T_prefill(L); C_KV = C_GPU·T_prefill(L) + C_storage·S·T."""
    g = breakeven.default_offering(CARD, PAPER)
    setting = breakeven.Setting(prompt_tokens=0, output_tokens=0, hours_per_month=1.0)
    frame = breakeven.breakeven_table(CARD, PAPER, np.array([10_000]), g, setting, reuses_per_hour=5.0)
    c_text = 5 * PREFILL_USD
    c_kv = PREFILL_USD + STORAGE_USD_PER_HOUR * 1.0
    assert frame.set_index("tier").loc["ebs_io2", "cost_ratio"] == pytest.approx(c_text / c_kv, rel=1e-9)


def test_breakeven_falls_with_length_where_storage_is_cheap():
    """Prefill grows faster than linearly in length (attention), storage linearly: longer contexts break even
    at lower reuse on object storage."""
    aws = load_catalog("aws", MODELS)
    card = MODELS["Llama-3.1-8B"]
    g = breakeven.default_offering(card, aws)
    frame = breakeven.breakeven_table(card, aws, np.array([1_000, 10_000, 100_000]), g).set_index(["tier", "tokens"])
    s3 = frame.loc["s3_standard", "breakeven_per_hour"].to_numpy()
    assert np.all(np.diff(s3) < 0) and np.all(s3 > 0)


def test_parse_range():
    assert breakeven.parse_range("1000..10000").tolist() == [1000, 2000, 5000, 10000]
    assert breakeven.parse_range("1000..100000:3").tolist() == [1000, 10000, 100000]
    assert breakeven.parse_range("5000,1000").tolist() == [1000, 5000]
    with pytest.raises(ValueError):
        breakeven.parse_range("10..1")


def test_cli_breakeven_table_csv_and_chart(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["breakeven", "--model", "Llama-7B-paper", "--catalog", "paper-2025", "--tokens",
                                  "10000", "--prompt-tokens", "0", "--output-tokens", "0", "--csv"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    header = lines[0].split(",")
    row = dict(zip(header, lines[1].split(",")))
    assert row["tier"] == "ebs_io2"
    assert float(row["breakeven_per_hour"]) == pytest.approx((STORAGE_USD_PER_HOUR * 730 + PREFILL_USD)
                                                             / PREFILL_USD / 730, rel=1e-6)
    plot = tmp_path / "be.png"
    result = runner.invoke(main, ["breakeven", "--model", "Llama-3.1-8B", "--catalog", "aws", "--tokens",
                                  "1000..100000:5", "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert "break-even reuses/h" in result.output and "s3_standard" in result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = runner.invoke(main, ["breakeven", "--model", "nope", "--catalog", "aws"])
    assert bad.exit_code == 2 and "unknown model 'nope'" in bad.output

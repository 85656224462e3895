"""Workloads from traces (planner/fromtrace.py, `kvplan workload from-trace`): tiny hand-made traces whose contexts
and rates are known, bad input, and excerpts of the real Mooncake and Azure traces (tests/data/traces, with their
source and licence) built into workloads, checked against the bundled examples, and planned end to end."""

from __future__ import annotations

import json
import lzma
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from planner.cli import main
from planner.inputs.catalog import load_catalog, load_models
from planner.inputs.fromtrace import azure_workload, mooncake_workload, peak_to_mean
from planner.inputs.traces import read_azure, read_mooncake
from planner.inputs.workload import load_workload
from planner.plan.runner import make_plan

REPO = Path(__file__).resolve().parents[1]
TRACES = REPO / "tests" / "data" / "traces"
MOONCAKE_1000 = TRACES / "mooncake" / "conversation_trace.first1000.jsonl.xz"  # its first 1,000 lines
AZURE_500 = TRACES / "azure" / "AzureLLMInferenceTrace_conv.first500.csv"      # its first 500 rows
MODELS = load_models()
LLAMA = MODELS["Llama-3.1-8B"]
MONTH_S = 730 * 3600

# (timestamp s, input tokens, output tokens, hash_ids); line 4 arrives before line 3
TINY = [
    (0, 1500, 100, [1, 2, 3]),        # line 1: sends [1], [1 2] (its last block is partial: 1500 tokens)
    (10, 2048, 200, [1, 2, 4, 5]),    # line 2: reads [1 2] from line 1 (1,024 tokens), sends [1 2 4 5]
    (30, 2400, 300, [1, 2, 4, 5, 7]),  # line 3: reads [1 2 4 5] from line 2 (2,048 tokens)
    (20, 700, 50, [1, 6]),            # line 4: reads [1] (512 tokens)
    (40, 2048, 100, [1, 2, 4, 5]),    # line 5: the same input as line 2: reads all of it, prompt 0
    (40, 100, 10, [9]),               # line 6: shares nothing
]


def write_mooncake(path: Path, rows: list[tuple]) -> Path:
    path.write_text("".join(json.dumps({"timestamp": int(t * 1000), "input_length": i, "output_length": o,
                                        "hash_ids": h}) + "\n" for t, i, o, h in rows), encoding="utf-8")
    return path


def test_tiny_mooncake_trace_gives_the_known_contexts_and_rates(tmp_path):
    built = mooncake_workload(read_mooncake(write_mooncake(tmp_path / "t.jsonl", TINY)), LLAMA)
    scale = MONTH_S / 40  # the trace spans 40 s
    expected = pd.DataFrame({
        "id": ["line1-1blk", "line1-2blk", "line2-4blk"],
        "tokens": [512, 1024, 2048],  # whole prefixes: line2-4blk holds its parent [1 2] too
        "reuses_per_month": [round(scale, 3), round(scale, 3), round(2 * scale, 3)],
        "prompt_tokens": [700 - 512, 2048 - 1024, (2400 - 2048 + 0) // 2],
        "output_tokens": [50, 200, (300 + 100) // 2],
        "writes_per_month": [1.0, 1.0, 1.0],
    })
    pd.testing.assert_frame_equal(built.contexts, expected, check_dtype=False)
    assert built.traffic.requests_per_month == round(2 * scale, 3)  # lines 1 and 6
    assert (built.traffic.prompt_tokens, built.traffic.output_tokens) == ((1500 + 100) // 2, (100 + 10) // 2)
    assert (built.requests, built.dropped, built.reads, built.span_s) == (6, 0, 4, 40.0)
    inputs = sum(row[1] for row in TINY)
    assert built.reusable_share == pytest.approx((512 + 1024 + 2048 + 2048) / inputs)
    assert built.peak_to_mean == 1.0  # one 60 s window


def test_a_partial_last_block_caps_the_context_and_rarer_prefixes_become_background(tmp_path):
    rows = [(0, 700, 10, [1, 2]), (5, 600, 20, [1, 2]), (9, 3000, 30, [1, 2, 3, 4, 5, 6])]
    built = mooncake_workload(read_mooncake(write_mooncake(tmp_path / "t.jsonl", rows)), LLAMA)
    assert built.contexts["tokens"].tolist() == [600]  # [1 2] is never more than the 600 tokens of line 2
    assert built.contexts["prompt_tokens"].tolist() == [(0 + 2400) // 2]
    strict = mooncake_workload(read_mooncake(write_mooncake(tmp_path / "t.jsonl", TINY)), LLAMA, min_reuses=2)
    assert strict.contexts["id"].tolist() == ["line2-4blk"]
    assert strict.traffic.requests_per_month == round(4 * MONTH_S / 40, 3)
    assert strict.reusable_share == pytest.approx(2 * 2048 / sum(row[1] for row in TINY))


def test_requests_beyond_max_context_are_dropped_and_counted(tmp_path):
    rows = [(0, 1000, 10, [1, 2]), (5, 1024, 10, [1, 2, 3]), (9, 4000, 200, [1, 2, 3, 4, 5, 6, 7, 8])]
    built = mooncake_workload(read_mooncake(write_mooncake(tmp_path / "t.jsonl", rows)), MODELS["Llama-2-7B"])
    assert (built.requests, built.dropped, built.span_s) == (3, 1, 5.0)
    assert built.contexts["id"].tolist() == ["line1-2blk"]


def test_peak_to_mean_is_the_busiest_window_over_the_mean():
    assert peak_to_mean(np.array([0, 10, 20, 30, 40, 40.0]), 10) == 2.0  # windows [1, 1, 1, 3]: 3 / 1.5
    assert peak_to_mean(np.array([0, 0.5, 0.7, 3.9]), 1) == 3.0
    assert peak_to_mean(np.array([0, 1, 2.0]), 60) == 1.0


def test_tiny_azure_trace_is_background_traffic_at_its_rate(tmp_path):
    path = tmp_path / "azure.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00.0,100,10\n"
                    "2023-11-16 18:00:00.5,300,30\n2023-11-16 18:00:00.7,500,50\n2023-11-16 18:00:03.9,700,70\n")
    built = azure_workload(read_azure(path), LLAMA, window_s=1)
    assert built.contexts.empty and built.reusable_share is None
    assert built.traffic.requests_per_month == round(4 * MONTH_S / 3.9, 3)
    assert (built.traffic.prompt_tokens, built.traffic.output_tokens) == (400, 40)
    assert built.peak_to_mean == 3.0


def test_cli_writes_a_workload_that_plans(tmp_path):
    trace = write_mooncake(tmp_path / "tiny.jsonl", TINY)
    out = tmp_path / "tiny" / "workload.yaml"
    result = CliRunner().invoke(main, ["workload", "from-trace", "mooncake", str(trace), "--model", "Llama-3.1-8B",
                                       "--window", "10", "--out", str(out)])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "contexts: 3 prefixes that an earlier request sent, read by 4 requests; reusable prefill tokens: 64.0%" \
        in result.stdout
    assert "peak-to-mean: 2.00 (the busiest 10 s window over the mean)" in result.stdout
    assert out.read_text().startswith("# Made by: kvplan workload from-trace mooncake tiny.jsonl --model "
                                      "Llama-3.1-8B --slo-ttft 3 --window 10\n")
    workload = load_workload(out, MODELS)
    assert workload.name == "tiny" and workload.peak_to_mean == 2.0 and workload.ttft_slo_s == 3.0
    assert workload.contexts["id"].tolist() == ["line1-1blk", "line1-2blk", "line2-4blk"]
    plan = make_plan(workload, load_catalog("lambda", MODELS), baselines=False)
    assert plan["violations"] == [] and plan["total_usd"] > 0
    again = CliRunner().invoke(main, ["workload", "from-trace", "mooncake", str(trace), "--model", "Llama-3.1-8B",
                                      "--out", str(out)])
    assert again.exit_code == 2 and again.stderr == f"error: {out}: exists; pass --force to overwrite it\n"


@pytest.mark.parametrize("trace_format, name, text, message", [
    ("mooncake", "t.jsonl", '{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [1]}\n'
     '{"timestamp": 5, "input_length": 10, "output_len', "line 2: not a JSON object"),
    ("mooncake", "t.jsonl", '{"timestamp": 7, "input_length": 10, "output_length": 1, "hash_ids": [1]}\n'
     '{"timestamp": 7, "input_length": 20, "output_length": 1, "hash_ids": [1]}\n',
     "the trace spans 0 s (2 requests at one time): no rate to scale to a month"),
    ("azure", "t.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00,10,1\n2023-11-16 18:00:01,x,1\n",
     "row 2, column ContextTokens: expected a whole number >= 0, found 'x'"),
])
def test_bad_traces_are_one_line_naming_the_file_and_line(tmp_path, trace_format, name, text, message):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(main, ["workload", "from-trace", trace_format, str(path), "--model", "Llama-3.1-8B",
                                       "--out", str(tmp_path / "w.yaml")])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {path}: {message}") and result.stderr.count("\n") == 1
    assert not (tmp_path / "w.yaml").exists()


def test_an_unknown_model_is_bad_input(tmp_path):
    trace = write_mooncake(tmp_path / "t.jsonl", TINY)
    result = CliRunner().invoke(main, ["workload", "from-trace", "mooncake", str(trace), "--model", "GPT-9"])
    assert result.exit_code == 2 and result.stderr.startswith("error: --model GPT-9: unknown model (known: ")


# --- excerpts of the real traces ------------------------------------------------------------------------------

def mooncake_first_1000(folder: Path) -> Path:
    """The first 1,000 lines of the Mooncake conversation trace, under the trace's own file name."""
    path = folder / "conversation_trace.jsonl"
    path.write_bytes(lzma.decompress(MOONCAKE_1000.read_bytes()))
    return path


def made_by(example: str) -> list[str]:
    """The kvplan arguments an example's workload.yaml says it was made with."""
    text = (REPO / "examples" / example / "workload.yaml").read_text()
    return re.search(r"^# Made by: kvplan (.*)$", text, re.M).group(1).split()


def test_the_mooncake_example_is_what_the_command_makes_and_it_plans(tmp_path):
    trace = mooncake_first_1000(tmp_path)
    command = made_by("mooncake-conversation")
    assert command[:4] == ["workload", "from-trace", "mooncake", trace.name] and "--limit" in command
    out = tmp_path / "mooncake-conversation" / "workload.yaml"
    result = CliRunner().invoke(main, [*command[:3], str(trace), *command[4:], "--out", str(out), "-q"])
    assert result.exit_code == 0, (result.output, result.exception)
    folder = REPO / "examples" / "mooncake-conversation"
    assert sorted(p.name for p in out.parent.iterdir()) == ["workload.contexts.csv", "workload.yaml"]
    for made in sorted(out.parent.iterdir()):
        assert made.read_bytes() == (folder / made.name).read_bytes(), made.name
    plan = make_plan(load_workload(folder / "workload.yaml", MODELS), load_catalog("lambda", MODELS), baselines=False)
    assert plan["violations"] == [] and plan["total_usd"] > 0


def test_the_real_mooncake_excerpt_matches_a_request_by_request_reading_of_the_rule(tmp_path):
    lines = [json.loads(line) for line in mooncake_first_1000(tmp_path).read_text().splitlines()]
    rows = [(item["timestamp"] / 1000, item["input_length"], item["output_length"], item["hash_ids"])
            for item in lines]
    built = mooncake_workload(read_mooncake(tmp_path / "conversation_trace.jsonl"), LLAMA)
    reads = naive_reads(rows)
    assert len(built.contexts) == len(reads) and built.reads == sum(len(items) for items in reads.values())
    by_id = built.contexts.set_index("id")
    for (line, b), items in reads.items():
        assert by_id.loc[f"line{line}-{b}blk", "tokens"] == items[0][0]
    assert built.reusable_share == pytest.approx(sum(i[0] for items in reads.values() for i in items)
                                                 / sum(r[1] for r in rows))
    # the figures examples/mooncake-conversation/README.md states for these requests
    readme = " ".join((REPO / "examples" / "mooncake-conversation" / "README.md").read_text().split())
    assert f"{len(reads)} contexts" in readme and f"read by {built.reads} of the {len(rows):,} requests" in readme
    assert f"{built.reusable_share:.1%} of the prefill tokens" in readme
    assert f"({built.span_s:.0f} s)" in readme


def test_the_azure_excerpt_with_the_examples_command_gives_its_rates_and_means(tmp_path):
    command = made_by("azure-conversation")
    assert command[:4] == ["workload", "from-trace", "azure", "AzureLLMInferenceTrace_conv.csv"]
    out = tmp_path / "azure" / "workload.yaml"
    result = CliRunner().invoke(main, [*command[:3], str(AZURE_500), *command[4:], "--out", str(out), "-q"])
    assert result.exit_code == 0, (result.output, result.exception)
    rows = pd.read_csv(AZURE_500)
    seconds = (pd.to_datetime(rows["TIMESTAMP"]) - pd.to_datetime(rows["TIMESTAMP"]).min()).dt.total_seconds()
    span = seconds.max()
    windows = int(np.ceil(span / 60))  # 60 s windows from the first arrival; the last one closes at the span
    busiest = max(((seconds >= 60 * w) & ((seconds < 60 * (w + 1)) | (w == windows - 1))).sum()
                  for w in range(windows))
    made = yaml.safe_load(out.read_text())
    example = yaml.safe_load((REPO / "examples" / "azure-conversation" / "workload.yaml").read_text())
    assert made["traffic"] == {"requests_per_month": round(len(rows) * 730 * 3600 / span, 3),
                               "prompt_tokens": round(rows["ContextTokens"].mean()),
                               "output_tokens": round(rows["GeneratedTokens"].mean())}
    assert made["peak_to_mean"] == round(busiest / (len(rows) / windows), 3)
    assert {k: v for k, v in made.items() if k not in ("traffic", "peak_to_mean", "name")} == \
        {k: v for k, v in example.items() if k not in ("traffic", "peak_to_mean", "name")}
    plan = make_plan(load_workload(out, MODELS), load_catalog("aws", MODELS), baselines=False)
    assert plan["violations"] == [] and plan["total_usd"] > 0
    example_plan = make_plan(load_workload(REPO / "examples" / "azure-conversation" / "workload.yaml", MODELS),
                             load_catalog("aws", MODELS), baselines=False)
    assert example_plan["violations"] == [] and example_plan["total_usd"] > 0


def arrival_order(rows: list[tuple]) -> list[int]:
    return sorted(range(len(rows)), key=lambda r: (rows[r][0], r))


def naive_reads(rows: list[tuple]) -> dict[tuple, list[tuple]]:
    """The rule of planner/fromtrace.py, one request at a time: prefix -> [(tokens, prompt, output)] of its readers,
    a prefix written as (line of its first sender, blocks)."""
    holders: dict[tuple, list[int]] = {}  # prefix -> inputs of the requests that hold it
    for _, inputs, _, hashes in rows:
        for b in range(1, len(hashes) + 1):
            holders.setdefault(tuple(hashes[:b]), []).append(inputs)
    sent: dict[tuple, int] = {}  # prefix -> line of the request that sent it first
    reads: dict[tuple, list[tuple]] = {}
    for r in arrival_order(rows):
        _, inputs, output, hashes = rows[r]
        prefixes = [tuple(hashes[:b]) for b in range(1, len(hashes) + 1)]
        b = max((b for b, prefix in enumerate(prefixes, start=1) if prefix in sent), default=0)
        if b:
            tokens = min(512 * b, min(holders[prefixes[b - 1]]))
            reads.setdefault((sent[prefixes[b - 1]], b), []).append((tokens, inputs - tokens, output))
        for prefix in prefixes:
            sent.setdefault(prefix, r + 1)
    return reads


@pytest.mark.parametrize("seed", range(20))
def test_random_traces_match_a_request_by_request_reading_of_the_rule(tmp_path, seed):
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(int(rng.integers(2, 40))):
        blocks = int(rng.integers(0, 6))
        hashes = [int(rng.integers(0, 3)) if k < 3 else int(rng.integers(0, 50)) for k in range(blocks)]
        rows.append((int(rng.integers(0, 20)), max(1, 512 * blocks - int(rng.integers(0, 512))),
                     int(rng.integers(1, 100)), hashes))
    rows[-1] = (25, *rows[-1][1:])  # a span of at least 5 s
    built = mooncake_workload(read_mooncake(write_mooncake(tmp_path / "t.jsonl", rows)), LLAMA)
    reads = naive_reads(rows)
    rank = {r + 1: i for i, r in enumerate(arrival_order(rows))}  # line -> arrival rank
    assert built.contexts["id"].tolist() == [f"line{line}-{b}blk" for line, b in
                                             sorted(reads, key=lambda key: (rank[key[0]], key[1]))]
    by_id = built.contexts.set_index("id")
    for (line, b), items in reads.items():
        row = by_id.loc[f"line{line}-{b}blk"]
        assert row["tokens"] == items[0][0]
        assert row["prompt_tokens"] == np.round(np.mean([i[1] for i in items]))
        assert row["output_tokens"] == np.round(np.mean([i[2] for i in items]))
        assert row["reuses_per_month"] == round(len(items) * MONTH_S / built.span_s, 3)
    assert built.reads == sum(len(items) for items in reads.values())
    assert built.reusable_share == pytest.approx(sum(i[0] for items in reads.values() for i in items)
                                                 / sum(r[1] for r in rows))


def test_the_summary_counts_requests_no_offering_serves_within_the_slo(tmp_path):
    """With --catalog, the summary says how many contexts (and their requests a month) meet the TTFT SLO on no
    offering at any tensor-parallel size: here recompute only, on one GPU of 100 TFLOPS at MFU 0.4 (MODEL.md §4)."""
    catalog = tmp_path / "c.yaml"
    catalog.write_text(yaml.safe_dump({"name": "slow", "as_of": "2026-12-01",
                                       "gpus": {"G": {"tflops": 100, "hbm_gb": 80, "hbm_gbps": 1000}},
                                       "offerings": [{"name": "one", "gpu": "G", "gpus": 1, "price_per_hour": 1.0}]}))
    flops = lambda n: 2 * LLAMA.params_b * 1e9 * n + 4 * LLAMA.n_layers * LLAMA.n_heads * LLAMA.attn_head_dim * n * n / 2  # noqa: E731
    ttft = {name: flops(n) / (100e12 * 0.4) for name, n in
            (("line1-1blk", 512 + 188), ("line1-2blk", 1024 + 1024), ("line2-4blk", 2048 + 176))}
    slo = (ttft["line1-1blk"] + ttft["line1-2blk"]) / 2   # only the shortest context meets it
    assert ttft["line1-1blk"] < slo < min(ttft["line1-2blk"], ttft["line2-4blk"])
    trace = write_mooncake(tmp_path / "t.jsonl", TINY)
    result = CliRunner().invoke(main, ["workload", "from-trace", "mooncake", str(trace), "--model", LLAMA.name,
                                       "--slo-ttft", repr(slo), "--catalog", str(catalog),
                                       "--out", str(tmp_path / "w.yaml"), "-q"])
    assert result.exit_code == 0, result.output
    scale = MONTH_S / 40
    requests = round(scale, 3) + round(2 * scale, 3)          # line1-2blk and line2-4blk's reuses a month
    line = next(x for x in result.stdout.splitlines() if x.startswith("SLO on slow:"))
    assert f"2 contexts ({requests:,.0f} requests a month) cannot meet it" in line
    assert "line2-4blk" in line or "line1-2blk" in line

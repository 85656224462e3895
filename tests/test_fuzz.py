"""Property tests: whatever the input, the workload, catalog and trace loaders either load it or raise one
InputError (the CLI's one-line message, exit 2); never any other exception."""

import copy
import json
import math
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.inputs.catalog import load_catalog, load_models
from planner.inputs.errors import InputError
from planner.inputs.traces import read_azure, read_mooncake
from planner.inputs.workload import load_workload

MODELS = load_models()
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                    st.sampled_from(["1e6", "nan", "-inf", "12k", "", "Llama-3.1-8B", "per_use", "aws"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)

BASE_WORKLOAD = {
    "model": "Llama-3.1-8B", "mode": "provisioned", "hours_per_month": 730, "peak_to_mean": 2,
    "slo": {"ttft_s": 2.0, "tpot_s": 0.1},
    "traffic": {"requests_per_month": 1000, "prompt_tokens": 100, "output_tokens": 100},
    "contexts": [{"id": "a", "tokens": 1000, "reuses_per_month": 10, "prompt_tokens": 10, "output_tokens": 10}],
}
WORKLOAD_PATHS = [("model",), ("mode",), ("hours_per_month",), ("peak_to_mean",), ("slo",), ("slo", "ttft_s"),
                  ("slo", "tpot_s"), ("traffic",), ("traffic", "requests_per_month"), ("contexts",),
                  ("contexts", 0), ("contexts", 0, "id"), ("contexts", 0, "tokens"), ("contexts", 0, "reuses_per_month"),
                  ("contexts", 0, "ttft_slo_s"), ("contexts_file",), ("pricing",), ("unknown_key",)]


def mutate(base, edits):
    data = copy.deepcopy(base)
    for path, value in edits:
        node = data
        for key in path[:-1]:
            if isinstance(node, dict) and key in node:
                node = node[key]
            elif isinstance(node, list) and isinstance(key, int) and key < len(node):
                node = node[key]
            else:
                break
        else:
            if isinstance(node, dict) or (isinstance(node, list) and isinstance(path[-1], int)
                                          and path[-1] < len(node)):
                node[path[-1]] = value
    return data


def loads_or_input_error(load):
    try:
        load()
    except InputError as exc:
        assert str(exc).count("\n") == 0, str(exc)  # one line


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(WORKLOAD_PATHS), values), min_size=1, max_size=4))
def test_workload_loader_on_mutated_workloads(tmp_path, edits):
    path = tmp_path / "workload.yaml"
    path.write_text(yaml.safe_dump(mutate(BASE_WORKLOAD, edits), allow_unicode=True))
    loads_or_input_error(lambda: load_workload(path, MODELS))


@SETTINGS
@given(st.binary(max_size=400))
def test_workload_loader_on_arbitrary_bytes(tmp_path, data):
    path = tmp_path / "workload.yaml"
    path.write_bytes(data)
    loads_or_input_error(lambda: load_workload(path, MODELS))


csv_cells = st.one_of(st.sampled_from(["", "1", "-1", "1.5", "nan", "inf", "1e30", "x", '"a,b"', "1000"]),
                      st.text(max_size=6))


@SETTINGS
@given(st.lists(st.lists(csv_cells, min_size=0, max_size=7), max_size=6),
       st.sampled_from(["id,tokens,reuses_per_month,prompt_tokens,output_tokens",
                        "id,tokens,reuses_per_month,prompt_tokens,output_tokens,ttft_slo_s,writes_per_month",
                        "id,tokens", ""]))
def test_contexts_csv_loader(tmp_path, rows, header):
    (tmp_path / "contexts.csv").write_text(header + "\n" + "\n".join(",".join(r) for r in rows))
    (tmp_path / "workload.yaml").write_text(yaml.safe_dump({**{k: v for k, v in BASE_WORKLOAD.items()
                                                                 if k != "contexts"}, "contexts_file": "contexts.csv"}))
    loads_or_input_error(lambda: load_workload(tmp_path / "workload.yaml", MODELS))


BASE_CATALOG = yaml.safe_load((Path(__file__).resolve().parent.parent / "catalogs" / "paper-2025.yaml").read_text())
CATALOG_PATHS = [("name",), ("as_of",), ("defaults",), ("defaults", "prefill_mfu"), ("defaults", "decode_batch"),
                 ("defaults", "prefill_calibration"), ("gpus",), ("gpus", "V100-32GB"), ("gpus", "V100-32GB", "tflops"),
                 ("gpus", "V100-32GB", "shapes"), ("offerings",), ("offerings", 0), ("offerings", 0, "gpus"),
                 ("offerings", 0, "gpu"), ("offerings", 0, "price_per_hour"), ("offerings", 0, "max_instances"),
                 ("offerings", 0, "block_storage_gbps"), ("tiers",), ("tiers", 0), ("tiers", 0, "kind"),
                 ("tiers", 0, "price_gb_month"), ("tiers", 0, "read_gbps"), ("tiers", 0, "first_byte_latency_s"),
                 ("tiers", 0, "object_tokens"), ("tiers", 0, "node_gb"), ("extends",), ("discounts",),
                 ("remove_tiers",)]


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(CATALOG_PATHS), values), min_size=1, max_size=4))
def test_catalog_loader_on_mutated_catalogs(tmp_path, edits):
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(mutate(BASE_CATALOG, edits), allow_unicode=True))
    loads_or_input_error(lambda: load_catalog(str(path), MODELS))


GOOD_LINE = {"timestamp": 0, "input_length": 1024, "output_length": 10, "hash_ids": [0, 1]}


@SETTINGS
@given(st.lists(st.one_of(
    st.just(json.dumps(GOOD_LINE)),
    st.builds(lambda k, v: json.dumps({**GOOD_LINE, k: v}), st.sampled_from(list(GOOD_LINE)), values),
    st.builds(lambda n: json.dumps(GOOD_LINE)[:n], st.integers(0, 60)),   # a line cut off
    st.text(max_size=30)), min_size=0, max_size=6))
def test_mooncake_reader(tmp_path, lines):
    path = tmp_path / "trace.jsonl"
    path.write_text("\n".join(lines))
    loads_or_input_error(lambda: read_mooncake(path))


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(["2023-11-16 18:15:46.6805900", "yesterday", "", "2023-13-40 99:00"]),
                          csv_cells, csv_cells), max_size=6),
       st.booleans())
def test_azure_reader(tmp_path, rows, cut):
    text = "TIMESTAMP,ContextTokens,GeneratedTokens\n" + "\n".join(",".join(r) for r in rows)
    path = tmp_path / "trace.csv"
    path.write_text(text[: max(1, len(text) - 7)] if cut else text)
    loads_or_input_error(lambda: read_azure(path))


def test_the_fuzzed_loaders_do_load_valid_inputs(tmp_path):
    """The properties above are not vacuous: the unmutated inputs load."""
    path = tmp_path / "workload.yaml"
    path.write_text(yaml.safe_dump(BASE_WORKLOAD))
    assert len(load_workload(path, MODELS).contexts) == 1
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump(BASE_CATALOG))
    assert load_catalog(str(catalog), MODELS).offerings[0].prices["on_demand"] == 3.0
    trace = tmp_path / "trace.jsonl"
    trace.write_text(json.dumps(GOOD_LINE) + "\n")
    assert read_mooncake(trace)["input_length"].tolist() == [1024]
    assert not math.isnan(read_mooncake(trace)["timestamp_ms"][0])

"""Bad input through the CLI: exit code 2, one line `error: FILE: KEY PATH (or row N, column C): ...`, no traceback.

Every case writes its own files into a fresh tmp_path (the test runs there, so relative names are what the
messages show) and runs `kvplan plan WORKLOAD --catalog CATALOG --no-baselines` (or `kvplan evaluate PLAN`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from planner.cli import main

DROP: Any = object()  # a key to remove


def ctx(id_: str, tokens: Any = 1000, reuses: Any = 10, prompt: Any = 100, output: Any = 100, **extra: Any) -> dict:
    return {"id": id_, "tokens": tokens, "reuses_per_month": reuses, "prompt_tokens": prompt,
            "output_tokens": output, **extra}


BASE_WORKLOAD: dict[str, Any] = {
    "name": "bad-input",
    "model": "Llama-3.1-8B",
    "mode": "provisioned",
    "hours_per_month": 730,
    "slo": {"ttft_s": 3.0, "tpot_s": 0.1},
    "contexts": [ctx("a", 1000), ctx("b", 2000)],
}

BASE_CATALOG: dict[str, Any] = {
    "name": "tiny",
    "provider": "test",
    "region": "here",
    "as_of": "2026-01-01",
    "gpus": {"A100-80GB": {"tflops": 312, "hbm_gb": 80, "hbm_gbps": 2039, "pcie_gbps": 32}},
    "offerings": [{"name": "box", "gpu": "A100-80GB", "gpus": 1, "price_per_hour": {"on_demand": 4.0},
                   "host_memory_gb": 200, "network_gbps": 100}],
    "tiers": [{"name": "host", "kind": "host_memory"},
              {"name": "s3", "kind": "object", "price_gb_month": 0.023, "first_byte_latency_s": 0.03,
               "read_gbps": 1.0}],
}

HEADER = "id,tokens,reuses_per_month,prompt_tokens,output_tokens\n"
ROW_A = "a,1000,10,100,100\n"


def edited(base: dict, **changes: Any) -> dict:
    data = copy.deepcopy(base)
    for key, value in changes.items():
        if value is DROP:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def workload(**changes: Any) -> str:
    return yaml.safe_dump(edited(BASE_WORKLOAD, **changes), sort_keys=False)


def csv_workload(**changes: Any) -> str:
    return workload(contexts=DROP, contexts_file="contexts.csv", **changes)


def catalog(path: tuple = (), value: Any = None) -> str:
    """The base catalog with the value at `path` (keys and list indices) replaced, or removed for DROP."""
    data = copy.deepcopy(BASE_CATALOG)
    if path:
        node = data
        for key in path[:-1]:
            node = node[key]
        if value is DROP:
            del node[path[-1]]
        elif isinstance(node, list) and path[-1] == len(node):
            node.append(value)
        else:
            node[path[-1]] = value
    return yaml.safe_dump(data, sort_keys=False)


def plan_args(workload_file: str = "workload.yaml", catalog_ref: str = "aws") -> list[str]:
    return ["plan", workload_file, "--catalog", catalog_ref, "--no-baselines"]


def catalog_case(path: tuple, value: Any, *expect: str) -> Case:
    return Case({"workload.yaml": workload(), "catalog.yaml": catalog(path, value)},
                expect=("catalog.yaml", *expect), args=plan_args(catalog_ref="catalog.yaml"))


@dataclass
class Case:
    files: dict[str, str | bytes | None]  # name -> text, bytes, or None for a directory
    expect: tuple[str, ...]               # substrings of the one error line (the file's name first)
    args: list[str] = field(default_factory=plan_args)
    plan_edit: Callable[[dict], None] | None = None  # for evaluate: edit a real saved plan, write plan.json


def _drop_workload_key(key: str) -> Callable[[dict], None]:
    def edit(plan: dict) -> None:
        del plan["inputs"]["workload"][key]
    return edit


def _set(path: tuple, value: Any) -> Callable[[dict], None]:
    def edit(plan: dict) -> None:
        node = plan
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return edit


EXACT_LINES = dict(line.split("\t", 1) for line in
                   (Path(__file__).parent / "bad_input_lines.tsv").read_text(encoding="utf-8").splitlines()
                   if line and not line.startswith("#"))

CASES = [
    # --- the workload file itself -------------------------------------------------------------------------
    pytest.param(Case({}, ("missing.yaml", "file not found"), plan_args("missing.yaml")), id="workload-missing"),
    pytest.param(Case({"wdir.yaml": None}, ("wdir.yaml", "is a directory"), plan_args("wdir.yaml")),
                 id="workload-is-directory"),
    pytest.param(Case({"workload.yaml": b"name: caf\xe9\nmodel: Llama-3.1-8B\n"}, ("workload.yaml", "not UTF-8")),
                 id="workload-not-utf8"),
    pytest.param(Case({"workload.yaml": "model: Llama-3.1-8B\nslo: {ttft_s: 3\nmode: provisioned\n"},
                      ("workload.yaml", "line 3", "YAML syntax error")), id="workload-yaml-syntax"),
    pytest.param(Case({"workload.yaml": "- model: Llama-3.1-8B\n- slo: 3\n"},
                      ("workload.yaml", "expected a mapping", "a list")), id="workload-top-level-list"),
    pytest.param(Case({"workload.yaml": ""}, ("workload.yaml", "expected a mapping")), id="workload-empty-file"),
    # --- workload keys ------------------------------------------------------------------------------------
    pytest.param(Case({"workload.yaml": workload(model=DROP)}, ("workload.yaml", ": model", "missing key")),
                 id="model-missing"),
    pytest.param(Case({"workload.yaml": workload(model="Llama-9-1B")},
                      ("workload.yaml", ": model", "unknown model 'Llama-9-1B'", "Llama-3.1-8B")),
                 id="model-unknown"),
    pytest.param(Case({"workload.yaml": workload(model={"name": "custom", "params_b": 7, "n_layers": 32,
                                                        "n_heads": 32, "head_dim": 128})},
                      ("workload.yaml", "model.n_kv_heads", "missing key")), id="inline-model-card-incomplete"),
    pytest.param(Case({"workload.yaml": workload(slo={"tpot_s": 0.1})}, ("workload.yaml", "slo.ttft_s", "missing key")),
                 id="slo-ttft-missing"),
    pytest.param(Case({"workload.yaml": workload(slo={"ttft_s": "fast"})}, ("workload.yaml", "slo.ttft_s", "'fast'")),
                 id="slo-ttft-text"),
    pytest.param(Case({"workload.yaml": workload(slo={"ttft_s": True})},
                      ("workload.yaml", "slo.ttft_s", "expected a number")), id="slo-ttft-boolean"),
    pytest.param(Case({"workload.yaml": workload(slo={"ttft_s": 0})}, ("workload.yaml", "slo.ttft_s", "above 0")),
                 id="slo-ttft-zero"),
    pytest.param(Case({"workload.yaml": workload(slo=3.0)}, ("workload.yaml", ": slo", "expected a mapping")),
                 id="slo-not-mapping"),
    pytest.param(Case({"workload.yaml": workload(hours_per_month=-730)},
                      ("workload.yaml", "hours_per_month", "-730")), id="hours-negative"),
    pytest.param(Case({"workload.yaml": workload(peak_to_mean=".nan")},
                      ("workload.yaml", "peak_to_mean")), id="peak-to-mean-nan"),
    pytest.param(Case({"workload.yaml": workload(mode="serverless")},
                      ("workload.yaml", ": mode", "provisioned", "per_use", "'serverless'")), id="mode-unknown"),
    pytest.param(Case({"workload.yaml": workload(pricing="cheap")}, ("workload.yaml", ": pricing", "on_demand")),
                 id="pricing-unknown"),
    pytest.param(Case({"workload.yaml": workload(traffic={"requests_per_month": 10, "prompt_tokens": 1.5,
                                                          "output_tokens": 10})},
                      ("workload.yaml", "traffic.prompt_tokens", "whole number")), id="traffic-fractional"),
    pytest.param(Case({"workload.yaml": workload(contexts=[], traffic=DROP)},
                      ("workload.yaml", "contexts", "empty workload")), id="empty-workload"),
    pytest.param(Case({"workload.yaml": workload(contexts={"a": 1})},
                      ("workload.yaml", ": contexts", "list of mappings")), id="contexts-not-list"),
    pytest.param(Case({"workload.yaml": workload(contexts_file="contexts.csv"), "contexts.csv": HEADER + ROW_A},
                      ("workload.yaml", "contexts_file", "not both")), id="contexts-and-contexts-file"),
    # --- inline contexts ----------------------------------------------------------------------------------
    pytest.param(Case({"workload.yaml": workload(contexts=[ctx("a", tokens="lots")])},
                      ("workload.yaml", "contexts[0].tokens", "'lots'")), id="inline-tokens-text"),
    pytest.param(Case({"workload.yaml": workload(contexts=[ctx("a"), ctx("b", reuses=-3)])},
                      ("workload.yaml", "contexts[1].reuses_per_month", ">= 0")), id="inline-reuses-negative"),
    pytest.param(Case({"workload.yaml": workload(contexts=[ctx("a"), ctx("b"), ctx("a")])},
                      ("workload.yaml", "contexts[2].id", "duplicate context id 'a'")), id="inline-duplicate-id"),
    pytest.param(Case({"workload.yaml": workload(contexts=[ctx("a"), ctx("  ")])},
                      ("workload.yaml", "contexts[1].id", "empty id")), id="inline-empty-id"),
    pytest.param(Case({"workload.yaml": workload(model="Llama-2-7B", contexts=[ctx("long", tokens=4000)])},
                      ("workload.yaml", "contexts[0].tokens", "max_context of 4096")), id="inline-too-long"),
    pytest.param(Case({"workload.yaml": workload(contexts=[ctx("a", ttft_slo_s=0)])},
                      ("workload.yaml", "contexts[0].ttft_slo_s", "above 0")), id="inline-ttft-slo-zero"),
    pytest.param(Case({"workload.yaml": workload(contexts=[ctx("a", tokens=True)])},
                      ("workload.yaml", "contexts[0].tokens", "expected a number")),
                 id="inline-tokens-boolean"),
    pytest.param(Case({"workload.yaml": workload(contexts=[ctx("a", tokens=-5)])},
                      ("workload.yaml", "contexts[0].tokens", "found -5")),
                 id="inline-message-shows-plain-number"),
    pytest.param(Case({"workload.yaml": workload(contexts=[ctx("huge", tokens="1e30")])},
                      ("workload.yaml", "contexts[0].tokens", "expected at most 1,000,000,000 tokens")),
                 id="inline-tokens-overflow"),
    # --- contexts file (CSV; rows count data rows from 1) ------------------------------------------------
    pytest.param(Case({"workload.yaml": csv_workload()}, ("contexts.csv", "file not found")),
                 id="csv-missing-file"),
    pytest.param(Case({"workload.yaml": csv_workload(), "contexts.csv": ""}, ("contexts.csv", "empty file")),
                 id="csv-empty-file"),
    pytest.param(Case({"workload.yaml": csv_workload(),
                       "contexts.csv": "id,tokens,prompt_tokens,output_tokens\na,1000,100,100\n"},
                      ("contexts.csv", "missing column 'reuses_per_month'")), id="csv-missing-column"),
    pytest.param(Case({"workload.yaml": csv_workload(), "contexts.csv": HEADER + ROW_A + "b,12k,10,100,100\n"},
                      ("contexts.csv", "row 2, column tokens", "'12k'")), id="csv-non-numeric"),
    pytest.param(Case({"workload.yaml": csv_workload(), "contexts.csv": HEADER + "a,1000,-1,100,100\n"},
                      ("contexts.csv", "row 1, column reuses_per_month", ">= 0")), id="csv-negative-reuses"),
    pytest.param(Case({"workload.yaml": csv_workload(), "contexts.csv": HEADER + ROW_A + "b,1000,nan,100,100\n"},
                      ("contexts.csv", "row 2, column reuses_per_month", "finite")), id="csv-nan"),
    pytest.param(Case({"workload.yaml": csv_workload(), "contexts.csv": HEADER + ROW_A + "b,1000,inf,100,100\n"},
                      ("contexts.csv", "row 2, column reuses_per_month", "finite")), id="csv-inf"),
    pytest.param(Case({"workload.yaml": csv_workload(), "contexts.csv": HEADER + "a,1000.5,10,100,100\n"},
                      ("contexts.csv", "row 1, column tokens", "whole number")), id="csv-fractional-tokens"),
    pytest.param(Case({"workload.yaml": csv_workload(), "contexts.csv": HEADER + "a,1000,10,,100\n"},
                      ("contexts.csv", "row 1, column prompt_tokens", "empty cell")), id="csv-empty-cell"),
    pytest.param(Case({"workload.yaml": csv_workload(), "contexts.csv": HEADER + ROW_A + "b,1,1,1,1\n" + ROW_A},
                      ("contexts.csv", "row 3, column id", "duplicate context id 'a'")), id="csv-duplicate-id"),
    pytest.param(Case({"workload.yaml": csv_workload(model="Llama-2-7B"),
                       "contexts.csv": HEADER + ROW_A + "long,4000,10,100,100\n"},
                      ("contexts.csv", "row 2, column tokens", "max_context of 4096")), id="csv-too-long"),
    pytest.param(Case({"workload.yaml": csv_workload(),
                       "contexts.csv": HEADER.rstrip("\n") + ",ttft_slo_s\n" + "a,1000,10,100,100,-1\n"},
                      ("contexts.csv", "row 1, column ttft_slo_s", "above 0")), id="csv-negative-slo"),
    pytest.param(Case({"workload.yaml": csv_workload(), "contexts.csv": b"id,tokens\n\xff\xfe,1\n"},
                      ("contexts.csv", "not UTF-8")), id="csv-not-utf8"),
    pytest.param(Case({"workload.yaml": csv_workload(), "contexts.csv": HEADER + ROW_A + "b,1000,10,100,100,7\n"},
                      ("contexts.csv: row 2", "6 fields, but the header has 5")), id="csv-ragged-row"),
    pytest.param(Case({"workload.yaml": csv_workload(), "contexts.csv": HEADER + "a,1000,10,100,100,7\n"},
                      ("contexts.csv: row 1", "6 fields, but the header has 5")),
                 id="csv-every-row-one-field-too-many"),
    pytest.param(Case({"workload.yaml": csv_workload(model="Llama-2-7B"), "contexts.csv": HEADER + "a,1e30,10,100,100\n"},
                      ("contexts.csv", "row 1, column tokens", "expected at most 1,000,000,000 tokens")),
                 id="csv-tokens-overflow"),
    # --- catalogs -----------------------------------------------------------------------------------------
    pytest.param(Case({"workload.yaml": workload()}, ("nocatalog.yaml", "file not found"),
                      plan_args(catalog_ref="nocatalog.yaml")), id="catalog-missing"),
    pytest.param(Case({"workload.yaml": workload()}, ("--catalog moon-cloud", "no bundled catalog", "aws"),
                      plan_args(catalog_ref="moon-cloud")), id="catalog-unknown-bundled-name"),
    pytest.param(Case({"workload.yaml": workload(), "catalog.yaml": "name: [tiny\ngpus: {}\n"},
                      ("catalog.yaml", "YAML syntax error"), plan_args(catalog_ref="catalog.yaml")),
                 id="catalog-yaml-syntax"),
    pytest.param(catalog_case(("offerings", 0, "gpu"), "H999", "offerings[0].gpu", "unknown GPU 'H999'"),
                 id="catalog-unknown-gpu"),
    pytest.param(catalog_case(("tiers", 1, "kind"), "tape", "tiers[1].kind", "'tape'"), id="catalog-tier-kind-tape"),
    pytest.param(catalog_case(("offerings", 0, "price_per_hour"), {"spot": 1.0},
                              "offerings[0].price_per_hour.on_demand", "missing key"),
                 id="catalog-on-demand-missing"),
    pytest.param(catalog_case(("tiers", 1, "price_gb_month"), -0.01, "tiers[1].price_gb_month", ">= 0"),
                 id="catalog-negative-price"),
    pytest.param(catalog_case(("gpus", "A100-80GB", "tflops"), -312, "gpus.A100-80GB.tflops", "above 0"),
                 id="catalog-negative-tflops"),
    pytest.param(catalog_case(("offerings", 0, "utilization_max"), 1.5, "offerings[0].utilization_max", "fraction"),
                 id="catalog-fraction-above-one"),
    pytest.param(catalog_case(("offerings",), [], "offerings", "no offerings"), id="catalog-no-offerings"),
    pytest.param(catalog_case(("offerings", 1), dict(BASE_CATALOG["offerings"][0]), "offerings[1].name",
                              "duplicate offering 'box'"), id="catalog-duplicate-offering"),
    # --- evaluate -----------------------------------------------------------------------------------------
    pytest.param(Case({"plan.json": workload()}, ("plan.json", "line 1: JSON syntax error"), ["evaluate", "plan.json"]),
                 id="evaluate-yaml-not-json"),
    pytest.param(Case({"plan.json": json.dumps({"total_usd": 1.0})}, ("plan.json", "not a kvplan plan"),
                      ["evaluate", "plan.json"]), id="evaluate-not-a-plan"),
    pytest.param(Case({"plan.json": "[1, 2]\n"}, ("plan.json", "not a kvplan plan"), ["evaluate", "plan.json"]),
                 id="evaluate-list"),
    pytest.param(Case({}, ("plan.json", "file not found"), ["evaluate", "plan.json"]), id="evaluate-missing"),
    pytest.param(Case({}, ("plan.json", "inputs.models", "missing key"), ["evaluate", "plan.json"],
                      plan_edit=_set(("inputs",), {})), id="evaluate-inputs-empty"),
    pytest.param(Case({}, ("plan.json", "contexts[0].tier", "'tape'"), ["evaluate", "plan.json"],
                      plan_edit=_set(("contexts", 0, "tier"), "tape")), id="evaluate-unknown-tier"),
    pytest.param(Case({}, ("plan.json", "fleet[0].instances", "'many'"), ["evaluate", "plan.json"],
                      plan_edit=_set(("fleet", 0, "instances"), "many")), id="evaluate-instances-text"),
    pytest.param(Case({}, ("plan.json", "inputs.workload.slo"), ["evaluate", "plan.json"],
                      plan_edit=_drop_workload_key("slo")),
                 id="evaluate-slo-missing"),
    pytest.param(Case({}, ("plan.json", "inputs.workload.slo"), ["evaluate", "plan.json"],
                      plan_edit=_set(("inputs", "workload", "slo"), None)),
                 id="evaluate-slo-null"),
    pytest.param(Case({}, ("plan.json", "total_usd"), ["evaluate", "plan.json"],
                      plan_edit=_set(("total_usd",), "abc")),
                 id="evaluate-total-text"),
    pytest.param(Case({}, ("plan.json", "inputs.workload.mode", "'serverless'"), ["evaluate", "plan.json"],
                      plan_edit=_set(("inputs", "workload", "mode"), "serverless")),
                 id="evaluate-mode-key-path"),
]


@pytest.fixture(scope="module")
def saved_plan(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("saved")
    (folder / "workload.yaml").write_text(workload(), encoding="utf-8")
    result = CliRunner().invoke(main, plan_args(str(folder / "workload.yaml")) + ["--json"])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def write_files(folder: Path, files: dict[str, str | bytes | None]) -> None:
    for name, content in files.items():
        path = folder / name
        if content is None:
            path.mkdir()
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


@pytest.mark.parametrize("case", CASES)
def test_bad_input(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    monkeypatch.chdir(tmp_path)
    write_files(tmp_path, case.files)
    if case.plan_edit is not None:
        plan = copy.deepcopy(request.getfixturevalue("saved_plan"))
        case.plan_edit(plan)
        (tmp_path / "plan.json").write_text(json.dumps(plan), encoding="utf-8")
    result = CliRunner().invoke(main, case.args)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for expected in case.expect:
        assert expected in lines[0], (expected, lines[0])
    assert lines[0] == EXACT_LINES[request.node.callspec.id]
    assert result.stdout == ""


def test_case_ids_distinct() -> None:
    ids = [param.id for param in CASES]
    assert len(ids) == len(set(ids)) >= 30
    assert set(ids) == set(EXACT_LINES)  # every case has its exact line, and every line a case


# --- controls: the bases the cases edit are valid --------------------------------------------------------

@pytest.mark.parametrize("files, args", [
    ({"workload.yaml": workload()}, plan_args()),
    ({"workload.yaml": csv_workload(), "contexts.csv": HEADER + ROW_A + "b,2000,5,50,50\n"}, plan_args()),
    ({"workload.yaml": workload(), "catalog.yaml": catalog()}, plan_args(catalog_ref="catalog.yaml")),
], ids=["inline-workload", "csv-workload", "custom-catalog"])
def test_bases_are_valid(files: dict, args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_files(tmp_path, files)
    result = CliRunner().invoke(main, args + ["--quiet"])
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""


def test_unknown_key_warns_and_plans(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_files(tmp_path, {"workload.yaml": workload(peak_to_meen=2)})
    result = CliRunner().invoke(main, plan_args())
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, result.stderr
    assert "workload.yaml" in warnings[0]
    assert "peak_to_meen" in warnings[0]
    assert "did you mean 'peak_to_mean'" in warnings[0]
    quiet = CliRunner().invoke(main, plan_args() + ["--quiet"])
    assert quiet.exit_code == 0
    assert "warning:" not in quiet.stderr


def test_missing_tier_latency_is_assumed_zero_with_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_files(tmp_path, {"workload.yaml": workload(),
                           "catalog.yaml": catalog(("tiers", 1, "first_byte_latency_s"), DROP)})
    result = CliRunner().invoke(main, plan_args(catalog_ref="catalog.yaml"))
    assert result.exit_code == 0, result.stderr
    assert "tiers[1].first_byte_latency_s: missing: assumed no first-byte latency" in result.stderr


def test_debug_keeps_the_exception(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_files(tmp_path, {"workload.yaml": workload(model=DROP)})
    result = CliRunner().invoke(main, plan_args() + ["--debug"])
    assert result.exit_code != 0
    assert type(result.exception).__name__ == "InputError"


# A valid edge input: background traffic alone (no contexts): the capacity checks add the float background
# load to the empty context arrays' bincounts.
def test_traffic_only_workload_plans(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_files(tmp_path, {"workload.yaml": workload(contexts=DROP, traffic={
        "requests_per_month": 10000, "prompt_tokens": 200, "output_tokens": 100})})
    result = CliRunner().invoke(main, plan_args() + ["--json"])
    assert result.exit_code == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["contexts"] == []
    assert sum(row["instances"] for row in plan["fleet"]) >= 1

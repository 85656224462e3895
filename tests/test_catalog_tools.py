"""Catalog tooling: sanity warnings, `extends`, SkyPilot import on catalog rows kept in tests/data/skypilot,
and compare."""

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from planner.cli import main
from planner.inputs.catalog import known_gpus, load_catalog, load_models, parse_catalog
from planner.inputs.errors import InputError
from planner.inputs.skypilot import import_offerings, read_csvs
from planner.inputs.validate import sanity_warnings

ROOT = Path(__file__).resolve().parent.parent
SKYPILOT = ROOT / "tests" / "data" / "skypilot"  # rows of SkyPilot's catalogs, with their source
MODELS = load_models()


def small_catalog(**changes):
    """A valid one-offering catalog; `changes` edits the offering (key=value) or a tier (tier_key=value)."""
    offering = {"name": "box", "gpu": "L40S", "gpus": 1, "price_per_hour": {"on_demand": 2.0, "spot": 1.0},
                "host_memory_gb": 64, "network_gbps": 25, "source": "test", "as_of": "2026-11-26"}
    tier = {"name": "obj", "kind": "object", "price_gb_month": 0.023, "first_byte_latency_s": 0.03,
            "read_gbps": 1.0, "source": "test", "as_of": "2026-11-26"}
    for key, value in changes.items():
        if key.startswith("tier_"):
            tier[key[5:]] = value
        else:
            offering[key] = value
    return {"name": "small", "as_of": "2026-11-26", "offerings": [offering], "tiers": [tier]}


def warnings_of(data):
    return sanity_warnings(parse_catalog(data, "small.yaml", MODELS))


def test_a_clean_catalog_has_no_warnings():
    assert warnings_of(small_catalog()) == []
    for name in ("aws", "paper-2025"):
        assert sanity_warnings(load_catalog(name, MODELS)) == []


@pytest.mark.parametrize("changes,expected", [
    ({"price_per_hour": {"on_demand": 2.0, "spot": 3.0}}, "spot: 3 is above on-demand 2"),
    ({"price_per_hour": {"on_demand": 2.0, "spot": 2.0}}, "spot: equals on-demand"),
    ({"price_per_hour": {"on_demand": 0}}, "on_demand: zero price"),
    ({"price_per_hour": {"on_demand": 2.0, "reserved_1y": 2.5}}, "reserved_1y: 2.5 is above on-demand"),
    ({"gpus": 12, "gpu": "H100"}, "12 x H100 is not a known shape"),
    ({"network_gbps": 25000}, "network_gbps: 25000 Gbit/s is above any instance link"),
    ({"source": None}, "offerings[0] (box): missing source or as_of"),
    ({"tier_price_gb_month": 23.0}, "looks like a price per TB-month"),
    ({"tier_price_gb_month": 0.0}, "tiers[0] (obj).price_gb_month: zero price"),
    ({"tier_read_gbps": 8000}, "read_gbps: 8000 GB/s is above any path"),
    ({"tier_as_of": None}, "tiers[0] (obj): missing source or as_of"),
])
def test_each_sanity_warning(changes, expected):
    found = warnings_of(small_catalog(**changes))
    assert len(found) == 1 and expected in found[0], found


def test_validate_command_prints_the_warnings(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(small_catalog(price_per_hour={"on_demand": 2.0, "spot": 3.0})))
    result = CliRunner().invoke(main, ["catalogs", "validate", str(path)])
    assert result.exit_code == 0
    assert "warning: " in result.output and "spot: 3 is above on-demand" in result.output and "1 warnings" in result.output
    path.write_text("name: broken\nofferings: 3\n")
    result = CliRunner().invoke(main, ["catalogs", "validate", str(path)])
    assert result.exit_code == 2 and "offerings" in result.output


def test_extends_overrides_merges_and_discounts(tmp_path):
    child = tmp_path / "negotiated.yaml"
    child.write_text(yaml.safe_dump({
        "extends": "aws", "name": "aws-negotiated", "as_of": "2026-12-01",
        "discounts": {"on_demand": 0.25},
        "remove_offerings": ["p3dn.24xlarge"],
        "remove_tiers": ["efs_standard"],
        "offerings": [
            {"name": "g6e.xlarge", "max_instances": 3},                       # merged field by field
            {"name": "owned-l40s", "gpu": "L40S", "gpus": 4, "price_per_hour": {"on_demand": 4.0},
             "host_memory_gb": 512, "network_gbps": 100, "source": "our cluster, amortised", "as_of": "2026-12-01"},
        ],
        "tiers": [{"name": "s3_standard", "price_gb_month": 0.02}],
    }))
    base = load_catalog("aws", MODELS)
    catalog = load_catalog(str(child), MODELS)
    assert catalog.name == "aws-negotiated" and catalog.region == "us-east-1" and catalog.as_of == "2026-12-01"
    names = [o.name for o in catalog.offerings]
    assert "p3dn.24xlarge" not in names and names[-1] == "owned-l40s"
    assert len(names) == len(base.offerings)  # one removed, one added
    g6e = catalog.offering("g6e.xlarge")
    assert g6e.max_instances == 3
    assert g6e.prices["on_demand"] == pytest.approx(base.offering("g6e.xlarge").prices["on_demand"] * 0.75)
    assert g6e.prices["spot"] == base.offering("g6e.xlarge").prices["spot"]          # only on_demand discounted
    assert g6e.host_memory_gb == base.offering("g6e.xlarge").host_memory_gb         # the rest inherited
    assert catalog.offering("owned-l40s").prices["on_demand"] == pytest.approx(3.0)
    s3 = next(t for t in catalog.tiers if t.name == "s3_standard")
    # merged field by field: the override's 0.02 is in the unit the base tier states (price_unit: GiB-month)
    assert s3.price_unit == "GiB-month" and s3.price_gb_month == pytest.approx(0.02 / 1.073741824, rel=1e-12)
    assert s3.read_request_price == pytest.approx(4e-7)
    assert "efs_standard" not in {t.name for t in catalog.tiers}


def test_extends_refuses_a_cycle(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\nname: a\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\nname: b\n")
    result = CliRunner().invoke(main, ["catalogs", "validate", str(tmp_path / "a.yaml")])
    assert result.exit_code == 2 and "extends itself" in result.output


def skypilot_rows(name):
    return SKYPILOT / name


def test_skypilot_import_of_the_aws_csv():
    frame = read_csvs([skypilot_rows("aws_us-east-1_gpu_vms.csv")])
    raw = pd.read_csv(skypilot_rows("aws_us-east-1_gpu_vms.csv"), comment="#")
    assert len(frame) == len(raw) == 104
    result = import_offerings(frame, "us-east-1", set(known_gpus()), "aws")
    types = raw["InstanceType"].nunique()
    assert result.types_in_region == types
    assert len(result.offerings) + sum(map(len, result.unknown_gpus.values())) == types
    assert result.unknown_gpus == {}   # every GPU of the CSV, B200 included, is in catalogs/gpus.yaml
    by_name = {o["name"]: o for o in result.offerings}
    # cheapest zone per type: the lowest on-demand price, then the lowest spot price
    for name, rows in raw.groupby("InstanceType"):
        if name not in by_name:
            continue
        best = rows.sort_values(["Price", "SpotPrice"]).iloc[0]
        assert by_name[name]["price_per_hour"]["on_demand"] == pytest.approx(best["Price"])
        if pd.notna(best["SpotPrice"]):
            assert by_name[name]["price_per_hour"]["spot"] == pytest.approx(best["SpotPrice"])
        else:
            assert "spot" not in by_name[name]["price_per_hour"]
        assert best["AvailabilityZone"] in by_name[name]["note"]
    assert by_name["p4d.24xlarge"]["price_per_hour"]["spot"] == pytest.approx(raw[raw.InstanceType == "p4d.24xlarge"]
                                                                               ["SpotPrice"].min())
    assert by_name["p5.48xlarge"]["gpus"] == 8 and by_name["p5.48xlarge"]["gpu"] == "H100"
    assert by_name["p4d.24xlarge"]["gpu"] == "A100-40GB"  # SkyPilot's "A100"


def test_skypilot_import_adds_gcp_host_and_gpu_rows(tmp_path):
    out = tmp_path / "gcp.yaml"
    result = CliRunner().invoke(main, ["catalogs", "import-skypilot", str(skypilot_rows("gcp_gpu_vms_hostonly.csv")),
                                       str(skypilot_rows("gcp_gpu_accelerator_rows.csv")), "--provider", "gcp",
                                       "--region", "us-east4", "--as-of", "2026-11-26", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "unknown GPU 'H100-MEGA'" in result.output  # a3-megagpu-8g: reported, not guessed
    catalog = yaml.safe_load(out.read_text())
    by_name = {o["name"]: o for o in catalog["offerings"]}
    # facts §A.2: a3-ultragpu-8g = host 12.266 + 8 x H200 74.49392; a2-ultragpu-8g = 9.90664 + 16.63498
    assert by_name["a3-ultragpu-8g"]["price_per_hour"]["on_demand"] == pytest.approx(12.266 + 74.49392)
    assert by_name["a3-ultragpu-8g"]["price_per_hour"]["spot"] == pytest.approx(2.80034 + 29.2536)
    assert by_name["a2-ultragpu-8g"]["price_per_hour"]["on_demand"] == pytest.approx(9.90664 + 16.63498)
    assert by_name["a3-highgpu-1g"]["price_per_hour"]["on_demand"] == pytest.approx(1.18251 + 9.79655)
    assert by_name["a3-highgpu-1g"]["gpus"] == 1 and by_name["a2-ultragpu-8g"]["gpu"] == "A100-80GB"
    assert set(by_name) == {"a2-ultragpu-1g", "a2-ultragpu-8g", "a3-highgpu-1g", "a3-ultragpu-8g"}
    # the written catalog is a valid catalog that kvplan can plan on
    assert load_catalog(str(out), MODELS).offering("a3-ultragpu-8g").gpu.name == "H200"


def test_skypilot_import_of_lambda_and_azure_csvs():
    frame = read_csvs([skypilot_rows("lambda_gpu_vms.csv")])
    result = import_offerings(frame, "us-east-1", set(known_gpus()), "lambda")
    assert result.rows_read == len(pd.read_csv(skypilot_rows("lambda_gpu_vms.csv"), comment="#"))
    assert "gpu_8x_a100_80gb_sxm4" in {o["name"] for o in result.offerings}
    assert "spot" not in next(o for o in result.offerings if o["name"] == "gpu_8x_a100_80gb_sxm4")["price_per_hour"]
    azure = import_offerings(read_csvs([skypilot_rows("azure_gpu_vms.csv")]), "eastus", set(known_gpus()), "azure")
    nd = next(o for o in azure.offerings if o["name"] == "Standard_ND96amsr_A100_v4")
    assert nd["price_per_hour"]["on_demand"] == pytest.approx(32.77) and nd["gpus"] == 8


def test_compare_totals_equal_separate_plans(tmp_path):
    workload = tmp_path / "workload.yaml"
    workload.write_text(yaml.safe_dump({
        "name": "small", "model": "Llama-3.1-8B", "slo": {"ttft_s": 3.0},
        "traffic": {"requests_per_month": 200000, "prompt_tokens": 500, "output_tokens": 200},
        "contexts": [{"id": f"c{i}", "tokens": 4000 * (i + 1), "reuses_per_month": 3000 / (i + 1),
                      "prompt_tokens": 100, "output_tokens": 100} for i in range(8)]}))
    runner = CliRunner()
    result = runner.invoke(main, ["compare", str(workload), "--catalog", "aws", "--catalog", "paper-2025",
                                  "--json", "-q"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert sorted(r["catalog"] for r in rows) == ["aws", "paper-2025"]
    totals = [r["total_usd"] for r in rows]
    assert totals == sorted(totals, key=lambda t: (t is None, t or 0))  # cheapest first, infeasible last
    aws = next(r for r in rows if r["catalog"] == "aws")
    single = json.loads(runner.invoke(main, ["plan", str(workload), "--catalog", "aws", "--json", "-q"]).stdout)
    assert aws["total_usd"] == pytest.approx(single["total_usd"], abs=0.005)
    assert aws["all_recompute_usd"] == pytest.approx(single["baselines"]["all_recompute"]["total_usd"], abs=0.005)
    csv = runner.invoke(main, ["compare", str(workload), "--catalog", "aws", "--csv", "-q"])
    assert csv.exit_code == 0 and csv.stdout.splitlines()[0].startswith("catalog,provider,region")
    table = runner.invoke(main, ["compare", str(workload), "--catalog", "aws", "--catalog", "paper-2025", "-q"])
    assert table.exit_code == 0 and "aws" in table.stdout


def test_compare_row_says_why_a_catalog_cannot_serve(tmp_path):
    workload = tmp_path / "workload.yaml"
    workload.write_text(yaml.safe_dump({
        "model": "Llama-3.1-70B", "slo": {"ttft_s": 3.0},
        "contexts": [{"id": "c", "tokens": 4000, "reuses_per_month": 100, "prompt_tokens": 10,
                      "output_tokens": 10}]}))
    result = CliRunner().invoke(main, ["compare", str(workload), "--catalog", "paper-2025", "--json", "-q"])
    (row,) = json.loads(result.stdout)
    assert row["status"] == "infeasible" and row["total_usd"] is None
    assert "no offering of paper-2025 can serve Llama-3.1-70B" in row["reason"] and "do not fit" in row["reason"]


def test_catalogs_list_and_show():
    runner = CliRunner()
    listed = runner.invoke(main, ["catalogs", "list"])
    assert listed.exit_code == 0 and "aws" in listed.output and "us-east-1" in listed.output
    shown = runner.invoke(main, ["catalogs", "show", "aws", "--gpu", "H100"])
    assert shown.exit_code == 0 and "p5.48xlarge" in shown.output and "g5.xlarge" not in shown.output
    assert "s3_standard" in shown.output and "estimated" in shown.output


@pytest.mark.parametrize("offerings", [None, [None], [{"name": "x", "price_per_hour": "cheap"}]])
def test_discounts_on_broken_offerings_give_an_input_error(tmp_path, offerings):
    """A discount over missing or malformed offerings is an input error naming the file (a case hypothesis found)."""
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"name": "c", "as_of": "2026-11-26", "discounts": {"on_demand": 0.1},
                                    "offerings": offerings, "tiers": []}))
    with pytest.raises(InputError, match=str(path)):
        load_catalog(str(path), MODELS)

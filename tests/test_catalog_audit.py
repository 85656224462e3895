"""Catalog corrections of issue 27, and the guards that keep them: stated price units (GB vs GiB), the billed
basis of GCP rows, GPU parts and their shapes, and the new B200 offerings against their SkyPilot rows."""

import logging
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from planner.inputs.catalog import bundled_dir, known_gpus, load_catalog, load_models, parse_catalog
from planner.cli import main
from planner.inputs.validate import sanity_warnings

MODELS = load_models()
ROWS = pd.read_csv(Path(__file__).parent / "data" / "skypilot_gpu_rows.csv")
GIB = 1_073_741_824 / 1e9          # GB in one GiB (2^30 / 1e9)
BUNDLED = ["aws", "azure", "gcp", "lambda", "paper-2025"]
# GCP us-east4 Local SSD, USD per GiB-month (Cyclenerd google-cloud-pricing-cost-calculator pricing.yml @fd66b26,
# compute.storage.local.cost.us-east4: month 0.088, month_spot 0.0528); a month is 730 h as in the catalog.
LSSD_MONTH, LSSD_SPOT_MONTH = 0.088, 0.0528


def catalog(name):
    return load_catalog(name, MODELS)


def tier(cat, name):
    return next(t for t in cat.tiers if t.name == name)


def row(provider, instance="", accelerator="", count=None, zone=None):
    rows = ROWS[(ROWS.provider == provider) & (ROWS.InstanceType.fillna("") == instance)
                & (ROWS.AcceleratorName.fillna("") == accelerator)]
    if count is not None:
        rows = rows[rows.AcceleratorCount == count]
    if zone is not None:
        rows = rows[rows.AvailabilityZone == zone]
    assert len(rows) == 1, (provider, instance, accelerator, count, zone)
    return rows.iloc[0]


def small(provider="aws", **tier_keys):
    tier_data = {"name": "obj", "kind": "object", "price_gb_month": 0.023, "first_byte_latency_s": 0.03,
                 "read_gbps": 1.0, "source": "test", "as_of": "2026-12-07", **tier_keys}
    return {"name": "small", "provider": provider, "as_of": "2026-12-07",
            "offerings": [{"name": "box", "gpu": "L40S", "gpus": 1, "price_per_hour": {"on_demand": 2.0},
                           "host_memory_gb": 64, "network_gbps": 25, "source": "test", "as_of": "2026-12-07"}],
            "tiers": [tier_data]}


# --- price units --------------------------------------------------------------------------------------------

def test_a_gib_price_is_converted_once_to_gb():
    parsed = parse_catalog(small(price_unit="GiB-month", retrieval_per_gb=0.0006, transfer_per_gb=0.01,
                                 read_request_price=4e-7), "small.yaml", MODELS)
    (t,) = parsed.tiers
    assert t.price_gb_month == pytest.approx(0.0214204192, rel=1e-9)    # 0.023 / 1.073741824
    assert t.retrieval_per_gb == pytest.approx(0.000558794, rel=1e-6)   # 0.0006 / 1.073741824
    assert t.transfer_per_gb == pytest.approx(0.00931322575, rel=1e-9)  # 0.01 / 1.073741824
    assert t.read_request_price == 4e-7                                  # per request: no byte unit
    assert t.price_unit == "GiB-month" and t.unit_gb == pytest.approx(GIB)
    (plain,) = parse_catalog(small(provider="test"), "small.yaml", MODELS).tiers
    assert plain.price_gb_month == 0.023 and plain.price_unit == "GB-month"


def test_an_unknown_price_unit_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(small(price_unit="TB-month")))
    result = CliRunner().invoke(main, ["catalogs", "validate", str(path)])
    assert result.exit_code == 2
    assert "tiers[0].price_unit" in result.output and "GiB-month" in result.output
    assert "Traceback" not in result.output


def test_bundled_storage_prices_are_per_gb_of_1e9_bytes():
    aws, gcp, azure = catalog("aws"), catalog("gcp"), catalog("azure")
    # AWS list prices per GiB-month (S3 FAQ, EBS sizes in GiB), per GB here
    assert tier(aws, "s3_standard").price_gb_month == pytest.approx(0.023 / GIB)
    express = tier(aws, "s3_express_one_zone")
    assert express.price_gb_month == pytest.approx(0.11 / GIB)
    assert express.retrieval_per_gb == pytest.approx(0.0006 / GIB)
    assert tier(aws, "ebs_gp3").price_gb_month == pytest.approx(0.08 / GIB)
    assert tier(aws, "ebs_io2").price_gb_month == pytest.approx(0.125 / GIB)
    efs = tier(aws, "efs_standard")
    assert efs.price_gb_month == pytest.approx(0.30 / GIB) and efs.retrieval_per_gb == pytest.approx(0.03 / GIB)
    assert tier(gcp, "gcs_standard").price_gb_month == pytest.approx(0.023 / GIB)
    assert tier(gcp, "pd_ssd").price_gb_month == pytest.approx(0.187 / GIB)
    # Azure Blob and Files read alike (both '1 GB/Month' in the price API; Files documented base-2)
    assert tier(azure, "blob_hot").price_gb_month == pytest.approx(0.0208 / GIB)
    assert tier(azure, "azure_files_premium").price_gb_month == pytest.approx(0.16 / GIB)
    assert tier(azure, "ultra_disk").price_gb_month == pytest.approx(0.000164 * 730 / GIB)
    # the paper's own assumption stays as the paper states it
    assert tier(catalog("paper-2025"), "ebs_io2").price_gb_month == 0.125


def test_catalogs_show_prints_the_price_as_given_and_per_gb():
    result = CliRunner().invoke(main, ["catalogs", "show", "aws"])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("s3_standard "))
    assert "$0.023/GiB-month" in line and f"${0.023 / GIB:.6g}" in line


def test_a_round_per_gb_price_from_a_gib_billing_provider_is_warned_about():
    def found(data):
        return [w for w in sanity_warnings(parse_catalog(data, "small.yaml", MODELS)) if "GiB-month" in w]

    (warning,) = found(small())
    assert "tiers[0] (obj).price_gb_month: $0.023 looks like aws's list price per GiB-month" in warning
    assert len(found(small(provider="gcp", kind="block", price_gb_month=0.11))) == 1
    assert found(small(price_unit="GiB-month")) == []               # stated unit
    assert found(small(price_gb_month=0.0214204)) == []             # already converted
    assert found(small(provider="test")) == []                      # a provider not known to bill per GiB


def test_the_warning_is_printed_when_a_catalog_loads(tmp_path, caplog):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(small()))
    with caplog.at_level(logging.WARNING, logger="kvplan"):
        load_catalog(str(path), MODELS)
    assert any("looks like aws's list price per GiB-month" in r.getMessage() for r in caplog.records)


# --- GPU parts ----------------------------------------------------------------------------------------------

def test_a_part_under_a_shared_name_with_other_figures_is_warned_about():
    data = small(provider="test")
    data["offerings"][0]["gpu"] = "A100-80GB"
    data["gpus"] = {"A100-80GB": {"tflops": 312, "hbm_gb": 85.9, "hbm_gbps": 1935, "pcie_gbps": 32,
                                  "source": "test", "as_of": "2026-12-07"}}
    found = sanity_warnings(parse_catalog(data, "small.yaml", MODELS))
    assert found == ["gpus.A100-80GB.hbm_gbps: 1935 here, 2039 in catalogs/gpus.yaml for the same name: "
                     "a different part needs its own name"]
    data["gpus"] = {"A100-80GB-PCIe": data["gpus"]["A100-80GB"]}
    data["offerings"][0]["gpu"] = "A100-80GB-PCIe"
    assert sanity_warnings(parse_catalog(data, "small.yaml", MODELS)) == []


def test_nc_a100_v4_runs_the_pcie_a100_and_nd_the_sxm_part():
    azure = catalog("azure")
    for name in ("Standard_NC24ads_A100_v4", "Standard_NC48ads_A100_v4", "Standard_NC96ads_A100_v4"):
        gpu = azure.offering(name).gpu
        assert (gpu.name, gpu.hbm_gbps, gpu.tflops) == ("A100-80GB-PCIe", 1935, 312)
    assert azure.offering("Standard_ND96amsr_A100_v4").gpu.hbm_gbps == 2039


def test_b200_memory_is_what_the_device_reports():
    mib = row("aws", "p6-b200.48xlarge", "B200").GpuMemMiB                # 183,359 MiB (EC2)
    expected = mib * 2**20 / 1e9                                          # 192.266 GB
    for name in ("aws", "gcp", "lambda"):
        b200 = {o.gpu for o in catalog(name).offerings if o.gpu.name == "B200"}
        assert len(b200) == 1 and next(iter(b200)).hbm_gb == pytest.approx(expected, abs=0.005), name
    # Lambda's own rows say 184,320 MiB ('180 GB' read as GiB), which is not used
    assert row("lambda", "gpu_1x_b200_sxm6", "B200").GpuMemMiB * 2**20 / 1e9 > expected + 1


ALIASES = {"A100": "A100-40GB"}            # SkyPilot's names that differ from gpus.yaml's
# GCP host rows carry no GPU: the machine family names it and `-Ng` the count (accelerator-optimized machines)
GCP_FAMILIES = {"a2-highgpu": "A100-40GB", "a2-megagpu": "A100-40GB", "a2-ultragpu": "A100-80GB",
                "a3-highgpu": "H100", "a3-megagpu": "H100-MEGA", "a3-ultragpu": "H200", "a4-highgpu": "B200"}


def test_every_gpu_count_in_gpus_yaml_is_sold_somewhere():
    sold = {(ALIASES.get(r.AcceleratorName, r.AcceleratorName), int(r.AcceleratorCount))
            for r in ROWS.itertuples() if isinstance(r.AcceleratorName, str)}
    for r in ROWS[ROWS.AcceleratorName.isna()].itertuples():
        family, count = re.fullmatch(r"(.+)-(\d+)g", r.InstanceType).groups()
        if family in GCP_FAMILIES:
            sold.add((GCP_FAMILIES[family], int(count)))
    sold |= {(o.gpu.name, o.gpus) for name in BUNDLED for o in catalog(name).offerings}
    for part, spec in known_gpus().items():
        for count in spec["shapes"]:
            assert (part, count) in sold, (part, count)
    assert known_gpus()["L40S"]["shapes"] == [1, 4, 8]
    assert known_gpus()["V100-32GB"]["shapes"] == [8] and known_gpus()["H200"]["shapes"] == [8]


# --- offerings ----------------------------------------------------------------------------------------------

def test_p6_b200_is_its_skypilot_row():
    r = row("aws", "p6-b200.48xlarge", "B200")
    o = catalog("aws").offering("p6-b200.48xlarge")
    assert (o.gpu.name, o.gpus) == ("B200", int(r.AcceleratorCount)) == ("B200", 8)
    assert o.prices == pytest.approx({"on_demand": r.Price, "spot": r.SpotPrice})   # 113.9328, 21.0148
    assert o.host_memory_gb == pytest.approx(r.MemoryGiB * GIB, abs=0.005)          # 2048 GiB = 2199.02 GB
    assert o.network_gbps == 3200 and o.block_storage_gbps == 100 and o.local_nvme_gb == 30400


def test_a4_is_its_skypilot_rows_and_says_the_price_is_estimated():
    gpus = row("gcp", "", "B200", count=8, zone="us-east4-b")
    host = row("gcp", "a4-highgpu-8g")                       # the 0.0 placeholder host row
    cat = catalog("gcp")
    o = cat.offering("a4-highgpu-8g")
    assert (o.gpu.name, o.gpus) == ("B200", 8)
    assert o.prices["on_demand"] == pytest.approx(host.Price + gpus.Price)       # 0.0 + 64.44
    assert o.prices["spot"] == pytest.approx(host.SpotPrice + gpus.SpotPrice)    # 0.0 + 32.6064
    assert o.host_memory_gb == pytest.approx(host.MemoryGiB * GIB, abs=0.005)
    assert o.network_gbps == 400                              # the gVNICs; the CX-7 NICs carry GPU traffic only
    i = [x.name for x in cat.offerings].index("a4-highgpu-8g")
    assert {f"offerings[{i}].price_per_hour.on_demand", f"offerings[{i}].price_per_hour.spot"} <= set(cat.estimated)


BILLED = {  # offering: (host row zone, GPU name, GPU count); Local SSD from the offering's own local_nvme_gb
    "a3-highgpu-1g": ("us-east4-a", "H100", 1),
    "a3-megagpu-8g": ("us-east4-a", "H100-MEGA", 8),
    "a2-ultragpu-1g": ("us-east4-c", "A100-80GB", 1),
    "a2-ultragpu-8g": ("us-east4-c", "A100-80GB", 8),
}


@pytest.mark.parametrize("name", BILLED)
def test_gcp_rows_include_the_bundled_local_ssd(name):
    zone, gpu, count = BILLED[name]
    host = row("gcp", name, zone=zone)
    gpus = row("gcp", "", gpu, count=count, zone=zone)
    o = catalog("gcp").offering(name)
    lssd_gib = o.local_nvme_gb / GIB                          # 375 GiB per A100, 750 per H100
    assert lssd_gib == pytest.approx(count * (375 if gpu == "A100-80GB" else 750), abs=0.01)
    spot = host.SpotPrice + gpus.SpotPrice + lssd_gib * LSSD_SPOT_MONTH / 730
    assert o.prices["spot"] == pytest.approx(spot, abs=1e-5)
    if name.startswith("a3"):   # a2-ultragpu on-demand rows are Google's SKU totals (SkyPilot's are half of it)
        on_demand = host.Price + gpus.Price + lssd_gib * LSSD_MONTH / 730
        assert o.prices["on_demand"] == pytest.approx(on_demand, abs=1e-5)
        assert o.prices["reserved_1y"] < o.prices["on_demand"]


@pytest.mark.parametrize("family", ["a2-ultragpu", "a3-highgpu"])
def test_gcp_families_price_every_size_on_one_basis(family):
    """Sizes of one family bundle Local SSD in proportion to their GPUs: one basis gives one price per GPU."""
    for pricing in ("on_demand", "spot"):
        per_gpu = {o.name: o.prices[pricing] / o.gpus for o in catalog("gcp").offerings if o.name.startswith(family)}
        assert len(per_gpu) == 4
        assert max(per_gpu.values()) == pytest.approx(min(per_gpu.values()), rel=1e-5), (pricing, per_gpu)


def test_smaller_items_of_the_audit():
    aws, azure = catalog("aws"), catalog("azure")
    assert aws.offering("p5.4xlarge").network_gbps == 100
    # g6e small sizes on the EBS baseline of the g6 size with the same vCPUs and maximum, as g5/g6 small sizes
    assert aws.offering("g6e.xlarge").block_storage_gbps == aws.offering("g6.xlarge").block_storage_gbps == 1.0
    assert aws.offering("g6e.2xlarge").block_storage_gbps == 2.0
    assert aws.offering("g5.xlarge").block_storage_gbps == 0.7    # baseline 700 of 3,500 Mbps
    assert tier(azure, "ultra_disk").read_gbps == 10.0             # 10,000 MB/s per disk


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_catalogs_validate_without_warnings(name):
    assert sanity_warnings(catalog(name)) == []
    raw = yaml.safe_load((bundled_dir() / f"{name}.yaml").read_text())
    for entry in raw.get("tiers", []):      # a tier that states a unit states one the loader knows
        assert entry.get("price_unit", "GB-month") in ("GB-month", "GiB-month"), entry["name"]

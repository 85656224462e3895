"""Import GPU offerings from SkyPilot catalog CSVs (github.com/skypilot-org/skypilot-catalog, `vms.csv`).

Columns are read by name: InstanceType, AcceleratorName, AcceleratorCount, vCPUs, MemoryGiB, Price, SpotPrice,
Region, AvailabilityZone (GpuInfo and other columns are ignored). For each instance type in the region the
cheapest zone is kept (lowest on-demand price, then lowest spot price, then zone name). GPUs are joined with
the shared specs (catalogs/gpus.yaml); unknown GPUs are reported, never guessed.

GCP lists a GPU VM's host (vCPU and memory) and its GPUs as separate rows: the host row names no accelerator,
and accelerator rows have no InstanceType. The importer adds the price of the accelerator row for the machine
type's GPUs in the same zone (or, failing that, region) to the host price, and says so in the offering's note.
Which GPUs a GCP machine type carries follows GCP's "GPU machine types" documentation
(cloud.google.com/compute/docs/gpus): a2-highgpu/a2-megagpu-Ng: N x A100 40GB; a2-ultragpu-Ng: N x A100 80GB;
a3-highgpu/a3-edgegpu-Ng: N x H100; a3-megagpu-8g: 8 x H100 (Mega); a3-ultragpu-8g: 8 x H200;
a4-highgpu-8g: 8 x B200; g2-standard-4/8/12/16/32: 1 x L4, -24: 2, -48: 4, -96: 8.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .errors import InputError
from .fields import read_text

REQUIRED = ("InstanceType", "AcceleratorName", "AcceleratorCount", "vCPUs", "MemoryGiB", "Price", "SpotPrice",
            "Region")
# SkyPilot's accelerator names -> the names of catalogs/gpus.yaml
ALIASES = {"A100": "A100-40GB", "V100": "V100-16GB", "H100-80GB": "H100"}
_GCP_FAMILIES = (("a2-highgpu", "A100"), ("a2-megagpu", "A100"), ("a2-ultragpu", "A100-80GB"),
                 ("a3-highgpu", "H100"), ("a3-edgegpu", "H100"), ("a3-megagpu", "H100-MEGA"),
                 ("a3-ultragpu", "H200"), ("a4-highgpu", "B200"))
_G2_L4 = {"g2-standard-24": 2, "g2-standard-48": 4, "g2-standard-96": 8}
GIB = 1.073741824


@dataclass
class Imported:
    offerings: list[dict]
    unknown_gpus: dict[str, list[str]] = field(default_factory=dict)  # GPU name -> instance types
    unpriced: list[str] = field(default_factory=list)                 # types with no usable price
    rows_read: int = 0
    types_in_region: int = 0


def read_csvs(paths: list[Path]) -> pd.DataFrame:
    frames = []
    for path in paths:
        text = "\n".join(line for line in read_text(path).splitlines() if not line.startswith("#"))
        try:
            frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""])
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise InputError(str(path), f"not a SkyPilot catalog CSV ({type(exc).__name__})") from None
        missing = [c for c in REQUIRED if c not in frame.columns]
        if missing:
            raise InputError(str(path), f"missing column {missing[0]!r} (a SkyPilot vms.csv has "
                             f"{', '.join(REQUIRED)}, AvailabilityZone)")
        frame["source_file"] = f"{path.name} (sha256 {hashlib.sha256(path.read_bytes()).hexdigest()[:12]})"
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    if "AvailabilityZone" not in frame.columns:
        frame["AvailabilityZone"] = frame["Region"]
    frame["AvailabilityZone"] = frame["AvailabilityZone"].fillna(frame["Region"])
    for column in ("AcceleratorCount", "vCPUs", "MemoryGiB", "Price", "SpotPrice"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def gcp_accelerators(instance_type: str) -> tuple[str, int] | None:
    """The GPU model (SkyPilot's name) and count of a GCP machine type, or None for a CPU-only type."""
    for prefix, gpu in _GCP_FAMILIES:
        if instance_type.startswith(prefix):
            match = re.search(r"-(\d+)g$", instance_type)
            return (gpu, int(match.group(1))) if match else None
    if instance_type.startswith("g2-standard-"):
        return "L4", _G2_L4.get(instance_type, 1)
    return None


def import_offerings(frame: pd.DataFrame, region: str, known_gpus: set[str], provider: str) -> Imported:
    rows = frame[frame["Region"] == region]
    accelerators = rows[rows["InstanceType"].isna() | (rows["InstanceType"] == "")]
    hosts = rows[rows["InstanceType"].notna() & (rows["InstanceType"] != "")]
    result = Imported(offerings=[], rows_read=len(frame), types_in_region=hosts["InstanceType"].nunique())
    for instance_type, group in hosts.groupby("InstanceType", sort=True):
        gpu, count, group = _gpus_and_prices(instance_type, group, accelerators, provider)
        if gpu is None:
            continue
        name = ALIASES.get(gpu, gpu)
        if name not in known_gpus:
            result.unknown_gpus.setdefault(gpu, []).append(instance_type)
            continue
        priced = group[group["Price"].notna() & (group["Price"] > 0)]
        if priced.empty:
            result.unpriced.append(instance_type)
            continue
        best = priced.sort_values(["Price", "SpotPrice", "AvailabilityZone"], na_position="last").iloc[0]
        prices = {"on_demand": round(float(best["Price"]), 6)}
        if pd.notna(best["SpotPrice"]) and best["SpotPrice"] > 0:
            prices["spot"] = round(float(best["SpotPrice"]), 6)
        note = f"cheapest zone {best['AvailabilityZone']} of {group['AvailabilityZone'].nunique()}"
        if "note" in best and isinstance(best["note"], str):
            note += f"; {best['note']}"
        offering = {"name": instance_type, "gpu": name, "gpus": count, "price_per_hour": prices}
        if pd.notna(best["vCPUs"]):
            offering["vcpus"] = int(best["vCPUs"])
        if pd.notna(best["MemoryGiB"]):
            offering["host_memory_gb"] = round(float(best["MemoryGiB"]) * GIB, 2)
        offering["source"] = f"SkyPilot catalog CSV {best['source_file']}, region {region}"
        offering["note"] = note
        result.offerings.append(offering)
    return result


def _gpus_and_prices(instance_type: str, group: pd.DataFrame, accelerators: pd.DataFrame,
                     provider: str) -> tuple[str | None, int, pd.DataFrame]:
    """The GPU model and count of a type, and its rows with prices that include the GPUs."""
    named = group["AcceleratorName"].dropna()
    if len(named):
        count = group["AcceleratorCount"].dropna()
        return str(named.iloc[0]), int(count.iloc[0]) if len(count) else 1, group
    gcp = gcp_accelerators(instance_type) if provider == "gcp" else None
    if gcp is None:
        return None, 0, group
    gpu, count = gcp
    matching = accelerators[(accelerators["AcceleratorName"] == gpu) & (accelerators["AcceleratorCount"] == count)]
    group = group.copy()
    notes, prices, spots = [], [], []
    for _, row in group.iterrows():
        same_zone = matching[matching["AvailabilityZone"] == row["AvailabilityZone"]]
        gpu_row = same_zone.iloc[0] if len(same_zone) else (matching.iloc[0] if len(matching) else None)
        if gpu_row is None or pd.isna(row["Price"]) or row["Price"] <= 0:
            prices.append(math.nan)
            spots.append(math.nan)
            notes.append("")
            continue
        prices.append(row["Price"] + gpu_row["Price"])
        spots.append(row["SpotPrice"] + gpu_row["SpotPrice"]
                     if pd.notna(row["SpotPrice"]) and pd.notna(gpu_row["SpotPrice"]) else math.nan)
        notes.append(f"host {row['Price']} + {count} x {gpu} {gpu_row['Price']} "
                     f"(accelerator row, zone {gpu_row['AvailabilityZone']}) = {round(row['Price'] + gpu_row['Price'], 6)}")
    group["Price"], group["SpotPrice"], group["note"] = prices, spots, notes
    return gpu, count, group

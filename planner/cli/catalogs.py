"""`kvplan catalogs`: list, show, validate and import provider catalogs."""

from __future__ import annotations

from pathlib import Path

import click

from ..inputs.catalog import bundled_names, known_gpus, load_catalog, load_models
from ..inputs.errors import InputError
from ..inputs.skypilot import import_offerings, read_csvs
from ..inputs.validate import sanity_warnings
from ..present.summary import table
from .common import command, write_atomic


@click.group("catalogs")
def catalogs_group() -> None:
    """List, show, validate and import provider catalogs."""


@catalogs_group.command("list")
@command
def catalogs_list(quiet: bool) -> None:
    """The bundled catalogs: name, provider, region, date, offerings and tiers."""
    models = load_models()
    rows = []
    for name in bundled_names():
        c = load_catalog(name, models)
        rows.append([c.name, c.provider, c.region or "—", c.as_of, len(c.offerings), len(c.tiers)])
    click.echo(table(["name", "provider", "region", "as_of", "offerings", "tiers"], rows, indent=""))


def _figure(value, estimated: bool) -> str:
    if value is None:
        return "—"
    return (f"{value:,.0f}" if value >= 100 else f"{value:.4g}") + ("*" if estimated else "")


@catalogs_group.command("show")
@click.argument("name")
@click.option("--gpu", help="Only offerings with this GPU.")
@command
def catalogs_show(name: str, gpu: str | None, quiet: bool) -> None:
    """Offerings and storage tiers of catalog NAME (a bundled name or a path). * marks an estimated figure."""
    catalog = load_catalog(name, load_models())
    estimated = set(catalog.estimated)
    click.echo(f"{catalog.name}: {catalog.provider} {catalog.region}, as of {catalog.as_of}, {catalog.currency}\n")
    rows = []
    for i, o in enumerate(catalog.offerings):
        if gpu and o.gpu.name != gpu:
            continue
        est = {key for key in ("host_memory_gb", "local_nvme_gb", "local_nvme_gbps", "network_gbps",
                               "block_storage_gbps") if f"offerings[{i}].{key}" in estimated}
        p = o.prices
        figures = [_figure(getattr(o, key), key in est) for key in ("host_memory_gb", "local_nvme_gb",
                                                                     "local_nvme_gbps", "network_gbps",
                                                                     "block_storage_gbps")]
        rows.append([o.gpu.name, o.gpus, o.name, f"{o.gpu.hbm_gb:.0f}", *figures,
                     f"${p['on_demand']:,.3f}", *(f"${p[k]:,.3f}" if k in p else "—"
                                                  for k in ("spot", "reserved_1y", "reserved_3y"))])
    click.echo(table(["GPU", "QTY", "INSTANCE", "GPU_GB", "HOST_GB", "NVME_GB", "NVME_GB/s", "NET_Gbit/s",
                      "BLOCK_Gbit/s", "ON_DEMAND/h", "SPOT/h", "1Y/h", "3Y/h"], rows, indent=""))
    rows = []
    for i, t in enumerate(catalog.tiers):
        def est(key: str, i: int = i) -> bool:
            return f"tiers[{i}].{key}" in estimated
        if t.attached:
            rows.append([t.name, t.kind, "in instance", "—", "—", "—", "—", "—", "path"])
            continue
        given = f"${t.price_gb_month * t.unit_gb:.6g}/{t.price_unit}"  # the catalog's own figure and unit
        rows.append([t.name, t.kind, given, f"${t.price_gb_month:.6g}", f"${t.read_request_price:.3g}",
                     f"${t.write_request_price:.3g}", f"${t.retrieval_per_gb + t.transfer_per_gb:.6g}",
                     _figure(t.first_byte_latency_s * 1e3, est("first_byte_latency_s")),
                     _figure(t.read_gbps, est("read_gbps"))])
    click.echo("")
    click.echo(table(["TIER", "KIND", "PRICE AS GIVEN", "$/GB-MONTH", "$/GET", "$/PUT", "$/GB READ", "FIRST_BYTE_ms",
                      "READ_GB/s"], rows, indent=""))
    click.echo("\nGB = 1e9 bytes; prices given per GiB (2^30 bytes) are divided by 1.073741824.")
    if estimated:
        click.echo(f"\n* estimated ({len(estimated)} figures in this catalog)")


@catalogs_group.command("validate")
@click.argument("path")
@command
def catalogs_validate(path: str, quiet: bool) -> None:
    """Check a catalog: schema errors (exit 2), then sanity warnings (spot above on-demand, zero prices, GPU
    counts no cloud sells, storage priced per TB, missing sources)."""
    catalog = load_catalog(path, load_models())
    found = sanity_warnings(catalog)
    for line in found:
        click.echo(f"warning: {catalog.path}: {line}")
    click.echo(f"{catalog.path}: {len(catalog.offerings)} offerings, {len(catalog.tiers)} tiers, "
               f"{len(catalog.estimated)} estimated figures, {len(found)} warnings")


@catalogs_group.command("import-skypilot")
@click.argument("csvs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--provider", required=True, help="aws, gcp, azure, lambda, ... (gcp adds host and GPU rows).")
@click.option("--region", required=True, help="The region to import, as the CSV names it.")
@click.option("--name", help="Catalog name (default: PROVIDER-REGION).")
@click.option("--as-of", help="Date of the CSV's prices (default: today).")
@click.option("--out", type=click.Path(path_type=Path), help="Write the catalog YAML here (default: stdout).")
@command
def catalogs_import(csvs: tuple[Path, ...], provider: str, region: str, name: str | None, as_of: str | None,
                    out: Path | None, quiet: bool) -> None:
    """Turn SkyPilot catalog CSVs (vms.csv) into catalog offerings: the cheapest zone per instance type, joined
    with the known GPU specs. Unknown GPUs are reported and left out. Add tiers, or `extends:` a catalog."""
    import datetime

    import yaml

    frame = read_csvs(list(csvs))
    known = set(known_gpus())
    result = import_offerings(frame, region, known, provider)
    if not result.offerings:
        raise InputError(", ".join(map(str, csvs)), f"no priced GPU offering in region {region!r}")
    date = as_of or datetime.date.today().isoformat()
    for offering in result.offerings:
        offering["as_of"] = date
    catalog = {"name": name or f"{provider}-{region}", "provider": provider, "region": region, "currency": "USD",
               "as_of": date, "offerings": result.offerings, "tiers": []}
    text = yaml.safe_dump(catalog, sort_keys=False, width=120)
    for gpu, types in sorted(result.unknown_gpus.items()):
        click.echo(f"warning: unknown GPU {gpu!r} (not in catalogs/gpus.yaml), left out: {', '.join(types)}",
                   err=True)
    for instance_type in result.unpriced:
        click.echo(f"warning: {instance_type}: no usable price in {region}, left out", err=True)
    if not quiet:
        click.echo(f"{result.rows_read} rows read, {result.types_in_region} instance types in {region}, "
                   f"{len(result.offerings)} offerings written", err=True)
    if out is None:
        click.echo(text, nl=False)
    else:
        write_atomic(out, text)

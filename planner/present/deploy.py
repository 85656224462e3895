"""The files of `kvplan export` (planner/present/export.py computes every figure; this module renders and writes them).

Per pool: task.yaml (SkyPilot 0.14.1 task, or SkyServe service where several instances run the pool),
vllm_serve.sh (the same `vllm serve` line, for a machine without SkyPilot) and lmcache.yaml (LMCache 0.5.6) where
LMCache serves a tier there. For the fleet: placement.csv (the warm-up list) and README.md.
"""

from __future__ import annotations

import csv
import io
import json
import shlex
from pathlib import Path

import yaml

from ..inputs.errors import InputError
from ..plan.options import Model
from ..plan.pricing import Priced
from .export import (GIB, GPU_MEMORY_SHARE, LMCACHE_VERSION, NVME_MOUNT, PORT, SKYPILOT_VERSION, VLLM_VERSION,
                     WARM_ORDER, ExportSummary, Pool, check_readable, gpu_memory_comment, plan_pools, pool_warnings)
from .output import write_atomic
from .summary import spreadsheet_safe

CONFIG_ON_NODE = "$HOME/kvplan/lmcache.yaml"   # where task.yaml mounts lmcache.yaml on each instance
CONNECTOR = {"kv_connector": "LMCacheConnectorV1", "kv_role": "kv_both"}   # vLLM 0.34's LMCache connector


def vllm_args(p: Pool, hf_id: str, served_name: str) -> list[str]:
    """`vllm serve` and its arguments for a pool: every flag is in tests/data/vllm_serve_flags.txt."""
    args = ["vllm", "serve", hf_id, "--served-model-name", served_name, "--port", str(PORT),
            "--tensor-parallel-size", str(p.tp)]
    if p.replicas > 1:   # one server, p.replicas engines of tp GPUs each, behind vLLM's own load balancer
        args += ["--data-parallel-size", str(p.replicas)]
    args += ["--max-num-seqs", str(p.max_num_seqs), "--max-model-len", str(p.max_model_len),
             "--gpu-memory-utilization", f"{GPU_MEMORY_SHARE:g}"]
    if p.hbm_cache:
        args.append("--enable-prefix-caching")   # the plan's HBM cache is vLLM's prefix cache
    if p.uses_lmcache:
        args += ["--kv-transfer-config", json.dumps(CONNECTOR, separators=(",", ":"))]
    return args


def command_text(args: list[str]) -> str:
    """The command, one flag and its value per line."""
    head, rest = args[:3], args[3:]
    lines, i = [" ".join(shlex.quote(a) for a in head)], 0
    while i < len(rest):
        take = 2 if i + 1 < len(rest) and not rest[i + 1].startswith("--") else 1
        lines.append("  " + " ".join(shlex.quote(a) for a in rest[i:i + take]))
        i += take
    return " \\\n".join(lines)


def _comment(lines: list[str]) -> str:
    return "".join(f"# {line}".rstrip() + "\n" for line in lines)


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, so run: reads as the shell script it is."""


_Dumper.add_representer(str, lambda dumper, value: dumper.represent_scalar(
    "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None))


def _yaml(data: dict) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=200, default_flow_style=False)


def _scalar(value) -> str:
    return yaml.dump(value, Dumper=_Dumper, default_flow_style=True, width=200).removesuffix("\n...\n").strip()


def task_yaml(p: Pool, model: Model, plan: dict, hf_id: str) -> str:
    catalog = model.catalog
    pricing = plan.get("pricing", "on_demand")
    served = model.card.name
    run = command_text(vllm_args(p, hf_id, served))
    if p.uses_lmcache:
        run = f"export LMCACHE_CONFIG_FILE={CONFIG_ON_NODE}\n{run}"
    resources = {"cloud": catalog.provider}
    if catalog.region:
        resources["region"] = catalog.region
    resources |= {"instance_type": p.offering, "accelerators": f"{p.accelerator}:{p.gpus}",
                  "use_spot": pricing == "spot", "ports": PORT}
    task: dict = {"name": f"kvplan-{p.name}".replace(".", "-"), "resources": resources, "num_nodes": 1}
    if p.uses_lmcache:
        task["file_mounts"] = {CONFIG_ON_NODE.replace("$HOME", "~"): "lmcache.yaml"}
    task["secrets"] = {"HF_TOKEN": None}
    packages = f"vllm=={VLLM_VERSION}" + (f" lmcache=={LMCACHE_VERSION}" if p.uses_lmcache else "")
    task["setup"] = f"pip install {packages}\n"
    task["run"] = run + "\n"
    if p.instances > 1:
        task["service"] = {"readiness_probe": "/v1/models", "replicas": p.instances}
    head = [f"SkyPilot {SKYPILOT_VERSION} task for pool {p.name} of the kvplan plan of {plan.get('model')} on "
            f"{catalog.name} ({catalog.provider} {catalog.region}).",
            f"{p.instances} x {p.offering} ({p.gpus} x {p.accelerator}), {pricing}"
            + ("" if pricing in ("on_demand", "spot") else " (a commitment bought from the provider, not a launch "
               "option: launched on demand here)") + f"; {p.contexts} contexts placed here.",
            "Launch from this folder (file_mounts and the lmcache.yaml path are relative to it): "
            + (f"sky serve up -n {task['name']} task.yaml --secret HF_TOKEN" if p.instances > 1
               else f"sky launch -c {task['name']} task.yaml --secret HF_TOKEN"),
            ("service: SkyServe runs one replica per instance, each a full instance serving the same model; its "
             "load balancer is not prefix-aware (see README)." if p.instances > 1 else
             "One instance: a plain task (SkyServe only where several instances run the same pool)."),
            "",
            f"vLLM {VLLM_VERSION}: --tensor-parallel-size {p.tp} is the plan's tp"
            + (f"; --data-parallel-size {p.replicas} runs one engine per {p.tp} GPU(s), {p.replicas} per instance, "
               "behind one API server (the plan's replicas)" if p.replicas > 1 else "") + ".",
            f"--max-num-seqs {p.max_num_seqs}: the largest decode batch the plan assumed here (its contexts' "
            f"batches run {p.min_batch} to {p.max_num_seqs}; vLLM admits a",
            "sequence only while KV blocks are free, so long contexts run in the smaller batches the plan gave them).",
            f"--max-model-len {p.max_model_len}: the longest context + prompt + output placed here.",
            *gpu_memory_comment(p)]
    if p.uses_lmcache:
        head.append("--kv-transfer-config: vLLM's LMCache connector; LMCache reads lmcache.yaml (LMCACHE_CONFIG_FILE).")
    else:
        head.append("No connector: the plan stores nothing off-GPU that LMCache serves on this pool.")
    head += [f"Not served by LMCache {LMCACHE_VERSION}: {u}" for u in p.unserved if not p.uses_lmcache]
    return _comment(head) + _yaml(task)


def lmcache_yaml(p: Pool) -> str:
    ranks, n = p.ranks, p.instances
    per = f"{ranks} rank(s) per instance ({p.tp} tp x {p.replicas} replica(s)) x {n} instance(s)"
    head = [f"LMCache {LMCACHE_VERSION} configuration for pool {p.name} (keys of lmcache/v1/config.py; sizes in GiB, "
            "as LMCache allocates size * 1024**3 bytes).",
            "LMCache runs one engine per GPU worker and allocates each setting per engine (host RAM used = "
            "ranks x the setting),",
            f"so each size is the plan's GB on this pool / ({per}) / {GIB} GB per GiB.",
            "LMCache writes a new cache to every backend below (CPU, disk, remote); warm up in placement.csv's "
            "order so the",
            "faster tiers end up holding what the plan put there. The plan's HBM tier is vLLM's prefix cache, not "
            "LMCache's."]
    head += [f"Not served here: {u}" for u in p.unserved]
    head += list(p.notes)
    items: list[tuple[str, object, str]] = [
        ("chunk_size", p.chunk_size, "tokens per stored chunk: the remote tier's object_tokens, else LMCache's "
         "default")]
    host = p.gb("host_memory")
    if host > 0:
        items += [("local_cpu", True, "the plan's host-memory tier"),
                  ("max_local_cpu_size", p.cpu_gib, f"GiB per rank: {host:.3f} GB on this pool = {ranks} x {n} x "
                   f"this x {GIB}")]
    else:
        items += [("local_cpu", False, "no host-memory tier in the plan here"),
                  ("max_local_cpu_size", p.staging_gib, "GiB per rank, a staging buffer only (LMCache loads disk "
                   "and remote caches through it): the largest context here / tp")]
    disk = p.gb("local_nvme")
    if disk > 0:
        items += [("local_disk", f"file://{NVME_MOUNT}/lmcache/", f"on the instance's local NVMe, mounted at "
                   f"{NVME_MOUNT}"),
                  ("max_local_disk_size", p.disk_gib, f"GiB per rank: {disk:.3f} GB on this pool = {ranks} x {n} x "
                   f"this x {GIB}")]
    if p.remote is not None:
        gb = next(t.gb for t in p.tiers if t.tier == p.remote.tier)
        items += [("remote_url", p.remote.url, f"{p.remote.tier} ({gb:.3f} GB on this pool): {p.remote.note}"),
                  ("remote_serde", "naive", "LMCache's default serializer, stated")]
        if p.remote.extra_config:
            items.append(("extra_config", p.remote.extra_config, "settings the remote backend reads"))
    body = "".join(f"# {comment}\n{key}: {_scalar(value)}\n" for key, value, comment in items)
    return _comment(head) + body


def _served_by(p: Pool, tier: str, kind: str) -> str:
    if kind == "recompute":
        return "recompute"
    if kind == "hbm":
        return "vLLM prefix cache"
    if kind in ("host_memory", "local_nvme") or (p.remote is not None and p.remote.tier == tier):
        return "LMCache"
    return "not served (see README)"


def placement_csv(model: Model, priced: Priced, pools: list[Pool]) -> str:
    """Every context: where it lives, its pool and GB; stored ones numbered in warm-up order (slow tiers first)."""

    o, F, T = priced.options, model.fleet, model.tiers
    pool_of = {}
    for p in pools:
        for g in range(len(F.names)):
            if F.offering_names[g] == p.offering and int(F.tp[g]) == p.tp:
                pool_of[g] = p
    pools_by_name = {p.name: p for p in pools}
    ids = model.workload.contexts["id"].tolist()
    reuses = model.workload.contexts["reuses_per_month"].tolist()
    rows = []
    for i in range(len(ids)):
        kind = T.kinds[o.t[i]]
        rows.append((WARM_ORDER.index(kind), pool_of[int(o.g[i])].name, i, kind))
    rows.sort()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["warm_order", "context_id", "pool", "offering", "tier", "kind", "gb", "reuses_per_month",
                     "served_by"])
    order = 0
    for _, pool, i, kind in rows:
        served = _served_by(pools_by_name[pool], T.names[o.t[i]], kind)
        warm = served in ("LMCache", "vLLM prefix cache")
        order += warm
        writer.writerow([order if warm else "", spreadsheet_safe(str(ids[i])), pool, F.offering_names[int(o.g[i])],
                         T.names[o.t[i]], kind, f"{o.stored_gb[i]:.6f}", reuses[i], served])
    return buffer.getvalue()


def readme(plan: dict, model: Model, pools: list[Pool], hf_id: str) -> str:
    w, catalog = model.workload, model.catalog
    slo = f"TTFT {w.ttft_slo_s:g} s" + (f", TPOT {w.tpot_slo_s:g} s" if w.tpot_slo_s else "")
    own = int((w.contexts["ttft_slo_s"].notna() | w.contexts["tpot_slo_s"].notna()).sum())
    breakdown = ", ".join(f"{k} ${v:,.2f}" for k, v in plan.get("breakdown_usd", {}).items())
    text = [f"# Deployment of `{w.name or 'the workload'}`: {model.card.name} on {catalog.name}", "",
            f"Written by `kvplan export` from a kvplan {plan.get('kvplan_version')} plan. The plan costs "
            f"**${plan['total_usd']:,.2f} per month** ({breakdown}) on {catalog.provider} {catalog.region} "
            f"(catalog as of {catalog.as_of}, {plan.get('pricing')} prices, {w.hours_per_month:g} h/month), and "
            f"meets every context's SLO: default {slo}" + (f" ({own} per-context SLOs)" if own else "") + ".",
            f"Model: `{hf_id}` served as `{model.card.name}`.", "",
            "## Fleet", "",
            "| pool | instances | instance type | GPUs | tp x replicas | HBM cache | contexts | --max-num-seqs "
            "| host GB | NVMe GB | remote tier |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in pools:
        text.append(f"| {p.name} | {p.instances} | {p.offering} | {p.gpus} x {p.accelerator} | {p.tp} x "
                    f"{p.replicas} | {'yes' if p.hbm_cache else 'no'} | {p.contexts} | {p.max_num_seqs} | "
                    f"{p.gb('host_memory'):.1f} | {p.gb('local_nvme'):.1f} | "
                    f"{p.remote.tier if p.remote else '-'} |")
    text += ["", "## Files", "",
             "- `<pool>/task.yaml`: the SkyPilot task (a SkyServe service where the pool has several instances): "
             "instance, GPUs, spot or on-demand, and a `run:` that starts vLLM.",
             "- `<pool>/vllm_serve.sh`: the same `vllm serve` command, to run on a machine you already have.",
             "- `<pool>/lmcache.yaml`: LMCache's tiers and sizes (only where the plan stores caches off-GPU that "
             "LMCache serves).",
             "- `placement.csv`: every context, its pool and tier, GB and reuses per month; stored ones numbered "
             "in warm-up order.",
             "- `README.md`: this file.", "",
             "## Launch", "",
             f"Pinned versions: SkyPilot {SKYPILOT_VERSION}, vLLM {VLLM_VERSION}, LMCache {LMCACHE_VERSION}. "
             "Set `HF_TOKEN` in your shell for gated models. Run each pool from its folder:", "", "```sh"]
    for p in pools:
        name = f"kvplan-{p.name}".replace(".", "-")
        verb = f"sky serve up -n {name}" if p.instances > 1 else f"sky launch -c {name}"
        text.append(f"(cd {p.name} && {verb} task.yaml --secret HF_TOKEN)")
    text += ["```", ""]
    holders = [f"- {p.name}: {h}" for p in pools for h in p.placeholders]
    if holders:
        text += ["Before launching:", "", *holders, ""]
    text += ["## Warm-up and routing", "",
             "Send each stored context of `placement.csv` once, in `warm_order`, to its pool's endpoint (the "
             "context as the prompt's prefix): LMCache writes each new cache to every tier configured on that "
             "pool, and by LRU the last written stay in the fastest ones, so the list goes from the slowest tiers "
             "to host memory and HBM. Afterwards route every request of a context to its pool: the plan sized "
             "each pool for the contexts placed on it. SkyServe's and vLLM's load balancers are not prefix-aware; "
             "within a pool of several instances, a prefix-aware router keeps a context's requests where its "
             "cache is, and a context is warmed on the instance that router sends it to.", ""]
    unserved = [f"- {p.name}: {u}" for p in pools for u in p.unserved]
    if unserved:
        text += [f"## Tiers LMCache {LMCACHE_VERSION} does not serve here", "",
                 "The plan stores these contexts there; with these files LMCache keeps them in the tiers it has on "
                 "that pool (taking room the plan gave other contexts) or they are recomputed, until a backend is "
                 "added:", "", *unserved, ""]
    notes = [f"- {n}" for p in pools for n in (*pool_warnings(p), *(f"{p.name}: {x}" for x in p.notes))]
    if notes:
        text += ["## Where the files depart from the plan", "", *notes, ""]
    return "\n".join(text).rstrip() + "\n"


def write_all(out: Path, plan: dict, model: Model, priced: Priced, pools: list[Pool], hf_id: str) -> list[str]:
    """Write every file; return their paths relative to `out`."""
    files = []

    def put(relative: str, text: str) -> None:
        write_atomic(out / relative, text)
        files.append(relative)

    for p in pools:
        put(f"{p.name}/task.yaml", task_yaml(p, model, plan, hf_id))
        script = command_text(vllm_args(p, hf_id, model.card.name))
        env = ('export LMCACHE_CONFIG_FILE="${LMCACHE_CONFIG_FILE:-$(cd "$(dirname "$0")" && pwd)/lmcache.yaml}"\n'
               if p.uses_lmcache else "")
        put(f"{p.name}/vllm_serve.sh", f"#!/usr/bin/env bash\n# vLLM {VLLM_VERSION} for pool {p.name} (see "
            f"task.yaml for why each flag is what it is)\nset -euo pipefail\n{env}{script}\n")
        (out / p.name / "vllm_serve.sh").chmod(0o755)
        if p.uses_lmcache:
            put(f"{p.name}/lmcache.yaml", lmcache_yaml(p))
    put("placement.csv", placement_csv(model, priced, pools))
    put("README.md", readme(plan, model, pools, hf_id))
    return files


def export_plan(plan: dict, source: str, out: Path, force: bool, model_id: str | None = None) -> ExportSummary:
    """Write the launch files of a saved plan to `out` (see the module's docstring)."""
    check_readable(plan, source)
    out = Path(out)
    existing = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if out.exists() and not out.is_dir():
        raise InputError(str(out), "exists and is not a folder")
    if existing and not force:
        raise InputError(str(out), f"is not empty ({len(existing)} entries); pass --force to write over it")
    model, priced, pools, hf_id = plan_pools(plan, source, model_id)
    files = write_all(out, plan, model, priced, pools, hf_id)
    written_top = {f.split("/")[0] for f in files}
    unserved = tuple(f"{p.name}: {u}" for p in pools for u in p.unserved)
    placeholders = tuple(f"{p.name}: {h}" for p in pools for h in p.placeholders)
    warnings = tuple(w for p in pools for w in pool_warnings(p))
    return ExportSummary(out, tuple(pools), tuple(files), unserved, placeholders, warnings,
                         tuple(e for e in existing if e not in written_top))

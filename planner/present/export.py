"""`kvplan export`: a saved plan as the files that run it (issue #26): per pool a SkyPilot task, the vLLM command
line and an LMCache config; the warm-up placement; a README for whoever launches it.

Every number is the plan's own: the saved plan is re-priced with the cost model (plan.reprice) and the batch,
stored GB per tier, tensor-parallel size and replicas are read from that pricing, never re-derived here.
Formats followed (looked up in each release's own source): SkyPilot 0.14.1 task YAML (sky/utils/schemas.py),
vLLM 0.34.0 `vllm serve` (vllm/engine/arg_utils.py, vllm/config/*.py), LMCache 0.5.6 config keys
(lmcache/v1/config.py) and remote URL schemes (lmcache/v1/storage_backend/connector/__init__.py).
Rendering and writing the files is planner/present/deploy.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..inputs.errors import InputError
from ..plan.files import reprice
from ..plan.options import Model
from ..plan.pricing import Priced

SKYPILOT_VERSION = "0.14.1"
VLLM_VERSION = "0.34.0"
LMCACHE_VERSION = "0.5.6"
READABLE_SCHEMAS = ("0.1",)   # kvplan_version major.minor of the plan.json layouts this module reads
PORT = 8000
GIB = 1.073741824             # GB (1e9 B) per GiB: LMCache sizes are GiB (it allocates size * 1024**3 bytes)
LMCACHE_CHUNK = 256           # LMCache 0.5.6's default chunk_size (tokens)
# vLLM 0.34's share of GPU memory for estimate-based KV sizing (CacheConfig.DEFAULT_GPU_MEMORY_UTILIZATION). The
# cost model counts all memory after weights as KV space; vLLM also needs activations, CUDA graphs and the LMCache
# connector's GPU buffers, so it gets this share and the rest stays free for them (see gpu_memory_comment).
GPU_MEMORY_SHARE = 0.92

# Clouds SkyPilot 0.14.1 launches on (sky/clouds/*.py); a catalog's provider must be one of them.
SKYPILOT_CLOUDS = ("aws", "azure", "cudo", "do", "fluidstack", "gcp", "hyperbolic", "ibm", "kubernetes", "lambda",
                   "nebius", "oci", "paperspace", "runpod", "scp", "vast", "vsphere")
# kvplan's GPU names where SkyPilot's catalogs spell them differently (skypilot-catalog v8 vms.csv AcceleratorName;
# the inverse of planner/skypilot.py's ALIASES, except H100, which those catalogs call H100).
SKYPILOT_GPU = {"A100-40GB": "A100", "V100-16GB": "V100"}
# Hugging Face repositories of the bundled model cards (catalogs/models.yaml names); others need --model-id.
HF_MODELS = {
    "Llama-2-7B": "meta-llama/Llama-2-7b-hf",
    "Llama-3.1-8B": "meta-llama/Llama-3.1-8B-Instruct",
    "Llama-3.1-70B": "meta-llama/Llama-3.1-70B-Instruct",
    "Llama-3.1-405B": "meta-llama/Llama-3.1-405B-Instruct",
    "Mistral-7B": "mistralai/Mistral-7B-Instruct-v0.2",
    "Mixtral-8x7B": "mistralai/Mixtral-8x7B-Instruct-v0.1",
    "Qwen2.5-7B": "Qwen/Qwen2.5-7B-Instruct",
    "Qwen2.5-72B": "Qwen/Qwen2.5-72B-Instruct",
    "DeepSeek-V3": "deepseek-ai/DeepSeek-V3",
    "Qwen2.5-7B-Instruct-1M": "Qwen/Qwen2.5-7B-Instruct-1M",
}
ATTACHED = ("host_memory", "local_nvme")
REMOTE = ("block", "file", "object", "memory_service")
NVME_MOUNT = "/mnt/nvme"       # where the launch files expect the instance's local NVMe (not mounted by default)
WARM_ORDER = ("memory_service", "object", "file", "block", "local_nvme", "host_memory", "hbm", "recompute")


@dataclass(frozen=True)
class TierUse:
    """One tier's share of a pool: the plan's GB on it (all instances together) and its contexts."""
    tier: str
    kind: str
    gb: float
    contexts: int
    largest_gb: float
    object_tokens: int          # 0: the plan stores one object per context


@dataclass(frozen=True)
class Remote:
    """The LMCache remote backend serving one remote tier."""
    tier: str
    url: str
    extra_config: dict
    note: str
    placeholders: tuple[str, ...]


@dataclass(frozen=True)
class Pool:
    """One rented version of an offering (offering, tp) and what its files say."""
    name: str                   # folder: the offering, or offering-tp<tp> where it runs at several tp
    offering: str
    accelerator: str            # SkyPilot's name for the GPU
    gpus: int                   # per instance
    tp: int
    replicas: int               # engines per instance (vLLM data-parallel ranks)
    instances: int
    hbm_cache: bool
    contexts: int
    max_num_seqs: int           # the largest decode batch the plan assumed here
    min_batch: int
    max_model_len: int          # the longest context + prompt + output placed here
    tiers: tuple[TierUse, ...]
    kv_space_gb: float          # K per replica (cost model)
    batch_space_gb: float       # the batch's share of K
    vllm_kv_gb: float           # what vLLM keeps for KV per replica at GPU_MEMORY_SHARE
    hbm_planned_gb: float       # HBM-tier GB per replica
    cpu_gib: float              # LMCache max_local_cpu_size per rank (0: no host-memory tier)
    staging_gib: float          # CPU buffer per rank where host memory is no tier but LMCache loads through it
    disk_gib: float             # LMCache max_local_disk_size per rank
    chunk_size: int
    remote: Remote | None
    unserved: tuple[str, ...]   # "tier: why" for stored tiers LMCache cannot serve here
    placeholders: tuple[str, ...]  # what to fill in or mount before launching
    notes: tuple[str, ...]

    @property
    def ranks(self) -> int:
        """LMCache engines per instance: one per GPU worker (tp per replica)."""
        return self.tp * self.replicas

    @property
    def uses_lmcache(self) -> bool:
        return self.cpu_gib > 0 or self.disk_gib > 0 or self.remote is not None

    def gb(self, kind: str) -> float:
        return sum(t.gb for t in self.tiers if t.kind == kind)


@dataclass(frozen=True)
class ExportSummary:
    out: Path
    pools: tuple[Pool, ...]
    files: tuple[str, ...]              # relative to out
    unserved: tuple[str, ...]           # "pool: tier: why"
    placeholders: tuple[str, ...]       # values to fill in before launching
    warnings: tuple[str, ...]
    kept: tuple[str, ...] = field(default=())   # entries already in out that this export did not write

    def lines(self) -> list[str]:
        text = [f"wrote {len(self.files)} files to {self.out} ({len(self.pools)} pool(s))"]
        for p in self.pools:
            stored = ", ".join(f"{t.tier} {t.gb:.1f} GB" for t in p.tiers if t.kind != "recompute") or "nothing"
            text.append(f"  {p.name}: {p.instances} x {p.offering}, tp {p.tp} x {p.replicas} replica(s), "
                        f"--max-num-seqs {p.max_num_seqs}; stores {stored}")
        text += [f"  not served by LMCache {LMCACHE_VERSION}: {u}" for u in self.unserved]
        text += [f"  fill in before launch: {p}" for p in self.placeholders]
        text += [f"  warning: {w}" for w in self.warnings]
        text += [f"  left in place (not from this export): {k}" for k in self.kept]
        return text


def check_readable(plan: object, source: str) -> dict:
    """The plan, if this module can export it; else one line naming what is wrong."""
    if not isinstance(plan, dict) or "kvplan_version" not in plan:
        raise InputError(source, "not a kvplan plan (no 'kvplan_version' key)")
    version = str(plan["kvplan_version"])
    if ".".join(version.split(".")[:2]) not in READABLE_SCHEMAS:
        raise InputError(f"{source}: kvplan_version", f"{version!r} is a plan layout this kvplan cannot read "
                         f"(it reads {', '.join(s + '.x' for s in READABLE_SCHEMAS)}); re-plan with this kvplan")
    violations = plan.get("violations") or []
    if violations:
        raise InputError(f"{source}: violations", f"the plan breaks {len(violations)} constraint(s) (first: "
                         f"{violations[0]}); fix the plan before exporting it")
    if plan.get("mode") != "provisioned":
        raise InputError(f"{source}: mode", f"{plan.get('mode')!r}: only a provisioned plan rents instances to "
                         "launch")
    return plan


def plan_pools(plan: dict, source: str, model_id: str | None = None) -> tuple[Model, Priced, list[Pool], str]:
    """The plan re-priced, its pools with their figures, and the engine's model id."""
    model, priced = reprice(plan, source)
    if priced.violations:
        raise InputError(source, f"re-priced, the plan breaks a constraint ({priced.violations[0]}); "
                         "re-plan before exporting")
    stored_total = plan.get("total_usd")
    if not isinstance(stored_total, (int, float)) or abs(priced.total - stored_total) > 0.005:
        raise InputError(f"{source}: total_usd", f"{stored_total!r}, but the cost model re-prices the plan at "
                         f"${priced.total:,.2f}: the file was edited or comes from another model; re-plan")
    provider = model.catalog.provider
    if provider not in SKYPILOT_CLOUDS:
        raise InputError(f"{source}: catalog.provider", f"{provider!r} is not a cloud SkyPilot {SKYPILOT_VERSION} "
                         f"launches on ({', '.join(SKYPILOT_CLOUDS)})")
    hf_id = model_id or HF_MODELS.get(model.card.name)
    if hf_id is None:
        raise InputError(f"{source}: model", f"no Hugging Face repository known for {model.card.name!r}; "
                         "pass --model-id")
    lines = [row for row in plan.get("fleet", []) if isinstance(row, dict) and row.get("instances", 0) > 0]
    tps: dict[str, set[int]] = {}
    for row in lines:
        tps.setdefault(str(row.get("offering")), set()).add(_int(row, "tp", source))
    pools = [_pool(model, priced, row, source, len(tps[str(row["offering"])]) > 1) for row in lines]
    return model, priced, pools, hf_id


def _int(row: dict, key: str, source: str) -> int:
    value = row.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InputError(f"{source}: fleet[{row.get('offering')}].{key}", f"expected a positive integer, got "
                         f"{value!r}")
    return value


def _pool(model: Model, priced: Priced, row: dict, source: str, several_tp: bool) -> Pool:
    F, T, card = model.fleet, model.tiers, model.card
    name, tp = str(row["offering"]), _int(row, "tp", source)
    rows = [g for g in range(len(F.names)) if F.offering_names[g] == name and int(F.tp[g]) == tp]
    if not rows:
        raise InputError(f"{source}: fleet[{name}].tp", f"{tp}: the cost model has no {name} pool at this "
                         "tensor-parallel size")
    g = rows[0]
    offering = model.catalog.offering(name)
    gpus = _int(row, "gpus", source)
    replicas = _int(row, "replicas", source) if "replicas" in row else gpus // tp
    instances = _int(row, "instances", source)
    o, bg = priced.options, priced.background
    on = o.g == g
    kinds = np.asarray(T.kinds, dtype=object)[o.t]
    batches = np.concatenate([o.batch[on], bg.batch[bg.g == g]]).astype(int)
    frame = model.workload.contexts
    lengths = (frame["tokens"] + frame["prompt_tokens"] + frame["output_tokens"]).to_numpy()[on]
    traffic = model.workload.traffic
    if traffic is not None and (bg.g == g).any():
        lengths = np.append(lengths, traffic.prompt_tokens + traffic.output_tokens)
    tiers = []
    for t in sorted(set(o.t[on].tolist())):
        here = on & (o.t == t)
        tiers.append(TierUse(T.names[t], T.kinds[t], float(o.stored_gb[here].sum()), int(here.sum()),
                             float(o.stored_gb[here].max()), int(T.object_tokens[t])))
    hbm_cache = bool(row.get("hbm_cache", False))
    kv_space = float(F.kv_space[g]) / 1e9
    batch_space = kv_space * (1 - float(F.hbm_cache_fraction[g])) if hbm_cache else kv_space
    vllm_kv = GPU_MEMORY_SHARE * tp * offering.gpu.hbm_gb - card.weight_bytes / 1e9
    hbm_gb = sum(t.gb for t in tiers if t.kind == "hbm") / (instances * replicas)
    ranks = tp * replicas
    per_rank = instances * ranks * GIB   # GB of the whole pool -> GiB per LMCache engine
    remote, unserved = _remote(model, tiers)
    served = [t for t in tiers if t.kind in ATTACHED or (remote is not None and t.tier == remote.tier)]
    host = sum(t.gb for t in tiers if t.kind == "host_memory")
    disk = sum(t.gb for t in tiers if t.kind == "local_nvme")
    staging = 0.0
    if host == 0 and served:   # LMCache stages disk and remote loads in a CPU buffer of max_local_cpu_size
        staging = _up(max(t.largest_gb for t in served) / tp / GIB)
    chunk = next((t.object_tokens for t in served if t.kind in REMOTE and t.object_tokens > 0), LMCACHE_CHUNK)
    notes = []
    r = T.names.index(remote.tier) if remote is not None else 0
    if remote is not None and T.object_tokens[r] == 0 and T.read_request_price[r] + T.write_request_price[r] > 0:
        notes.append(f"the plan priced {remote.tier} requests as one object per context; LMCache writes one object "
                     f"per {chunk}-token chunk, so requests cost more than planned")
    return Pool(
        name=f"{name}-tp{tp}" if several_tp else name, offering=name,
        accelerator=SKYPILOT_GPU.get(offering.gpu.name, offering.gpu.name), gpus=gpus, tp=tp,
        replicas=replicas, instances=instances, hbm_cache=hbm_cache, contexts=int(on.sum()),
        max_num_seqs=int(batches.max()) if len(batches) else int(F.decode_batch[g]),
        min_batch=int(batches.min()) if len(batches) else int(F.decode_batch[g]),
        max_model_len=int(lengths.max()) if len(lengths) else int(card.max_context or 0),
        tiers=tuple(tiers), kv_space_gb=kv_space, batch_space_gb=batch_space, vllm_kv_gb=vllm_kv,
        hbm_planned_gb=hbm_gb, cpu_gib=round(host / per_rank, 6), staging_gib=staging,
        disk_gib=round(disk / per_rank, 6), chunk_size=chunk, remote=remote, unserved=tuple(unserved),
        placeholders=((f"mount the instance's local NVMe at {NVME_MOUNT}",) if disk > 0 else ())
        + (remote.placeholders if remote else ()), notes=tuple(notes))


def _up(gib: float) -> float:
    """Rounded up to the MiB: a buffer never smaller than what it must hold."""
    return math.ceil(gib * 1024) / 1024


def _remote(model: Model, tiers: list[TierUse]) -> tuple[Remote | None, list[str]]:
    """The remote tier LMCache serves here (it takes one remote_url: the one holding the most GB), and the
    stored tiers it cannot serve."""
    provider, region = model.catalog.provider, model.catalog.region
    unserved, candidates = [], []
    for t in tiers:
        if t.kind not in REMOTE or t.gb == 0:
            continue
        backend = _backend(t, provider, region)
        if isinstance(backend, str):
            unserved.append(f"{t.tier} ({t.gb:.1f} GB, {t.contexts} contexts): {backend}")
        else:
            candidates.append((t.gb, t.tier, backend))
    if not candidates:
        return None, unserved
    candidates.sort(key=lambda c: (-c[0], c[1]))
    chosen = candidates[0][2]
    for gb, name, _ in candidates[1:]:
        count = next(t.contexts for t in tiers if t.tier == name)
        unserved.append(f"{name} ({gb:.1f} GB, {count} contexts): LMCache takes one remote_url per engine and "
                        f"it serves {chosen.tier}")
    return chosen, unserved


def _backend(t: TierUse, provider: str, region: str) -> Remote | str:
    """LMCache 0.5.6's remote backend for a tier, or why there is none."""
    mount = f"/mnt/kvplan/{t.tier}"
    if t.kind in ("block", "file"):
        what = "an attached volume" if t.kind == "block" else "the shared file system"
        return Remote(t.tier, f"fs://{mount}", {}, f"LMCache's fs:// backend on {what} mounted at {mount}",
                      (f"mount {what} ({t.tier}) at {mount} on every instance",))
    if t.kind == "memory_service":
        return Remote(t.tier, "redis://REPLACE_WITH_HOST:6379", {}, "LMCache's redis:// backend",
                      ("the memory service's host and port in remote_url",))
    if provider == "aws":
        return Remote(t.tier, f"s3://REPLACE_WITH_BUCKET.s3.{region}.amazonaws.com", {"s3_region": region},
                      "LMCache's s3:// backend (bucket endpoint URL; s3_region is required)",
                      ("the S3 bucket name in remote_url",))
    if provider == "azure":
        return Remote(t.tier, "azure://REPLACE_WITH_CONTAINER",
                      {"azure_account_url": "https://REPLACE_WITH_ACCOUNT.blob.core.windows.net"},
                      "LMCache's azure:// backend (Blob Storage container)",
                      ("the Blob Storage container and account",))
    return f"LMCache {LMCACHE_VERSION} has no backend for {provider} object storage"


def gpu_memory_comment(p: Pool) -> list[str]:
    """Why --gpu-memory-utilization is what it is, with the plan's figures."""
    lines = [f"GPU memory: vLLM takes {GPU_MEMORY_SHARE:g} of each GPU (vLLM {VLLM_VERSION}'s default for "
             "estimate-based KV sizing). The plan's KV space per replica is",
             f"K = {p.kv_space_gb:.2f} GB (HBM after weights); the batch gets {p.batch_space_gb:.2f} GB of it"
             + (f" and the HBM cache the rest ({p.hbm_planned_gb:.2f} GB placed per replica)." if p.hbm_cache
                else " (no HBM cache)."),
             "Both live in vLLM's paged KV pool: the HBM cache is its prefix cache, and --max-num-seqs keeps the "
             "running batch",
             f"to the plan's. At {GPU_MEMORY_SHARE:g} vLLM keeps about {p.vllm_kv_gb:.2f} GB per replica for KV "
             "before activations; the rest is",
             "left for activations, CUDA graphs and LMCache's GPU buffers, which the cost model does not count."]
    return lines


def pool_warnings(p: Pool) -> list[str]:
    found = []
    if p.vllm_kv_gb < p.batch_space_gb - 1e-9:
        found.append(f"{p.name}: vLLM keeps about {p.vllm_kv_gb:.2f} GB of KV per replica, less than the "
                     f"{p.batch_space_gb:.2f} GB the plan gave the batch: the longest contexts may run in smaller "
                     "batches than planned")
    elif p.hbm_cache and p.vllm_kv_gb - p.batch_space_gb < p.hbm_planned_gb - 1e-9:
        found.append(f"{p.name}: after the batch, vLLM's prefix cache has about "
                     f"{p.vllm_kv_gb - p.batch_space_gb:.2f} GB per replica for the {p.hbm_planned_gb:.2f} GB the "
                     "plan keeps in HBM: some HBM-tier contexts will be evicted and reloaded")
    if p.replicas * p.tp < p.gpus:
        found.append(f"{p.name}: {p.gpus - p.replicas * p.tp} of {p.gpus} GPUs per instance serve no replica "
                     "(the plan's tp and replicas)")
    return found

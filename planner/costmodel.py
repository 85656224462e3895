"""The analytical cost and delay model of MODEL.md §2, §4, §5 (cost coefficients) and §6: pure numpy, no solver.

`evaluate(...)` prices any list of options o = (context class k, offering g, tier t, HBM-cache state c),
given as index vectors. The formulation builds its option table with it, and a saved plan is re-priced with
it, so the two can never disagree. Tier index 0 is `recompute` (prefill from text; nothing stored).
State c = 1 means "offering g keeps an HBM cache" (the batch gets 1 - hbm_cache_fraction of the KV space);
c = -1 marks an option that is the same in both states (see plan.merge_cache_states).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .inputs.catalog import Catalog, ModelCard, Offering
from .inputs.profiles import Profile

RECOMPUTE = 0
PATH_NONE, PATH_NETWORK, PATH_BLOCK = 0, 1, 2
_REMOTE_PATH = {"block": PATH_BLOCK, "file": PATH_NETWORK, "object": PATH_NETWORK, "memory_service": PATH_NETWORK}


def prefill_flops(card: ModelCard, n, p):
    """F(n, p): FLOPs to prefill n new tokens after p cached ones (MODEL.md §4)."""
    n = np.asarray(n, dtype=float)
    return (2.0 * card.params_b * 1e9 * n
            + 4.0 * card.n_layers * card.n_heads * card.attn_head_dim * n * (np.asarray(p, dtype=float) + n / 2))


def tensor_parallel(card: ModelCard, gpus: int, hbm_gb: float) -> int:
    """tp_min: the smallest power of two <= gpus whose GPUs hold the weights within 80% of HBM; 0 if none."""
    tp = 1
    while tp <= gpus:
        if card.weight_bytes / tp <= 0.8 * hbm_gb * 1e9:
            return tp
        tp *= 2
    return 0


def tp_versions(card: ModelCard, gpus: int, hbm_gb: float) -> list[int]:
    """Every tensor-parallel size an instance may run (MODEL.md §4): powers of two from tp_min to gpus."""
    tp = tensor_parallel(card, gpus, hbm_gb)
    sizes = []
    while 0 < tp <= gpus:
        sizes.append(tp)
        tp *= 2
    return sizes


def _prefill_mfu(card: ModelCard, offering: Offering) -> float:
    cal = offering.calibration
    if cal is None:
        return offering.efficiency["prefill_mfu"]
    tp = tensor_parallel(cal.model, offering.gpus, offering.gpu.hbm_gb)
    if tp == 0:
        return offering.efficiency["prefill_mfu"]
    return float(prefill_flops(cal.model, cal.tokens, 0)) / (cal.seconds * tp * offering.gpu.tflops * 1e12)


def _or_nan(value: float | None) -> float:
    return np.nan if value is None else float(value)


@dataclass(frozen=True)
class Fleet:
    """Per-pool arrays (length G) for one model and one pricing. A pool is one offering run at one
    tensor-parallel size (MODEL.md §4): its own instance count and HBM-cache state; `offering` maps it back."""
    names: tuple[str, ...]     # pool labels, unique: the offering's name, with its tp where it has several
    offering: np.ndarray       # index of the catalog offering
    offering_names: tuple[str, ...]
    price: np.ndarray          # USD per instance-hour at the workload's pricing (nan: not sold that way)
    gpus: np.ndarray
    tp: np.ndarray             # GPUs per replica
    replicas: np.ndarray       # replicas per instance: floor(gpus / tp)
    kv_space: np.ndarray       # K_g: HBM bytes per replica after weights
    prefill_rate: np.ndarray   # FLOP/s of one replica at prefill_mfu (the roofline)
    step_bandwidth: np.ndarray  # bytes/s one replica reads during decode at decode_mbu (the roofline)
    profile: np.ndarray        # index into `profiles` of the measured profile that replaces the roofline, or -1
    profiles: tuple[Profile, ...]
    load_blocks_gpu: np.ndarray  # a cache load holds the replica's GPUs (serial pipelines)
    decode_batch: np.ndarray
    utilization_max: np.ndarray
    hbm_cache_fraction: np.ndarray
    host_memory_gb: np.ndarray
    local_nvme_gb: np.ndarray
    local_nvme_gbps: np.ndarray
    network_gbps: np.ndarray
    block_storage_gbps: np.ndarray
    pcie_gbps: np.ndarray
    max_instances: np.ndarray  # per pool: the offering's cap (inf where uncapped); it caps the sum of its pools
    unserved: tuple[tuple[str, str], ...]  # (offering, why) for offerings with no pool for this model
    # per-instance capacities (MODEL.md §5)
    gpu_capacity: np.ndarray   # utilization_max · replicas · tp  (GPU-seconds per second)
    hbm_cache_gb: np.ndarray   # replicas · hbm_cache_fraction · K_g / 1e9
    host_cache_gb: np.ndarray  # host_cache_fraction · host_memory_gb
    nvme_cache_gb: np.ndarray  # nvme_cache_fraction · local_nvme_gb
    network_cap_gbs: np.ndarray  # utilization_max · network_gbps / 8
    block_cap_gbs: np.ndarray    # utilization_max · block_storage_gbps / 8

    @property
    def serves(self) -> np.ndarray:
        return np.isfinite(self.price)

    def why_not(self, g: int, pricing: str) -> str:
        return "" if np.isfinite(self.price[g]) else f"no {pricing} price"

    def reasons(self, pricing: str) -> list[str]:
        """Why no pool serves: per offering, its reason."""
        found = {f"{name}: {why}" for name, why in self.unserved}
        found |= {f"{self.offering_names[g]}: {self.why_not(g, pricing)}" for g in np.flatnonzero(~self.serves)}
        return sorted(found)

    def subset(self, pools: np.ndarray) -> "Fleet":
        """The fleet of the given pools only (in that order)."""
        pools = np.asarray(pools, dtype=np.int64)
        fields = {}
        for name, value in self.__dict__.items():
            if isinstance(value, np.ndarray):
                fields[name] = value[pools]
            elif name in ("names", "offering_names"):
                fields[name] = tuple(value[g] for g in pools.tolist())
            else:
                fields[name] = value
        return Fleet(**fields)

    def smallest_tp(self) -> np.ndarray:
        """Each offering's pool at its smallest tensor-parallel size (the offering as it is without the choice)."""
        first = np.ones(len(self.offering), dtype=bool)
        first[1:] = self.offering[1:] != self.offering[:-1]
        return np.flatnonzero(first)

    def pool(self, offering: str, tp: int | None = None) -> int:
        """The pool of an offering at a tp (its smallest tp where None); KeyError if there is none."""
        for g, (name, size) in enumerate(zip(self.offering_names, self.tp.tolist())):
            if name == offering and (tp is None or size == tp):
                return g
        raise KeyError(offering if tp is None else f"{offering} at tp {tp}")


def build_fleet(card: ModelCard, catalog: Catalog, pricing: str) -> Fleet:
    offs = catalog.offerings
    pools = [(i, tp) for i, o in enumerate(offs) for tp in tp_versions(card, o.gpus, o.gpu.hbm_gb)]
    unserved = tuple((o.name, "the model's weights do not fit its GPUs") for o in offs
                     if not tp_versions(card, o.gpus, o.gpu.hbm_gb))
    index = np.array([i for i, _ in pools], dtype=np.int64)
    tp = np.array([t for _, t in pools], dtype=np.int64)
    several = {i for i in set(index.tolist()) if np.sum(index == i) > 1}
    names = tuple(offs[i].name + (f" tp{t}" if i in several else "") for i, t in pools)

    def per_pool(values: list) -> np.ndarray:
        return np.array(values, dtype=float)[index] if len(index) else np.zeros(0)

    gpus = np.array([o.gpus for o in offs], dtype=np.int64)[index] if len(index) else np.zeros(0, np.int64)
    replicas = gpus // np.maximum(tp, 1)
    hbm_gb = per_pool([o.gpu.hbm_gb for o in offs])
    kv_space = tp * hbm_gb * 1e9 - card.weight_bytes
    eff = {key: per_pool([o.efficiency[key] for o in offs]) for key in offs[0].efficiency}
    mfu = per_pool([_prefill_mfu(card, o) for o in offs])
    tflops = per_pool([o.gpu.tflops for o in offs])
    hbm_gbps = per_pool([o.gpu.hbm_gbps for o in offs])
    host = per_pool([_or_nan(o.host_memory_gb) for o in offs])
    nvme = per_pool([_or_nan(o.local_nvme_gb) for o in offs])
    network = per_pool([_or_nan(o.network_gbps) for o in offs])
    block = per_pool([_or_nan(o.block_storage_gbps) for o in offs])
    by_key = {p.key: j for j, p in enumerate(catalog.profiles)}
    profile = np.array([by_key.get((card.name, offs[i].gpu.name, t), -1) for i, t in pools], dtype=np.int64)
    return Fleet(
        names=names, offering=index, offering_names=tuple(offs[i].name for i in index.tolist()),
        price=per_pool([o.prices.get(pricing, np.nan) for o in offs]),
        gpus=gpus, tp=tp, replicas=replicas, kv_space=kv_space,
        prefill_rate=tp * tflops * 1e12 * mfu,
        step_bandwidth=tp * hbm_gbps * 1e9 * eff["decode_mbu"],
        profile=profile, profiles=catalog.profiles,
        load_blocks_gpu=eff["load_blocks_gpu"] > 0,
        decode_batch=eff["decode_batch"],
        utilization_max=eff["utilization_max"],
        hbm_cache_fraction=eff["hbm_cache_fraction"],
        host_memory_gb=host, local_nvme_gb=nvme,
        local_nvme_gbps=per_pool([_or_nan(o.local_nvme_gbps) for o in offs]),
        network_gbps=network, block_storage_gbps=block,
        pcie_gbps=per_pool([_or_nan(o.gpu.pcie_gbps) for o in offs]),
        max_instances=per_pool([np.inf if o.max_instances is None else o.max_instances for o in offs]),
        unserved=unserved,
        gpu_capacity=eff["utilization_max"] * replicas * tp,
        hbm_cache_gb=replicas * eff["hbm_cache_fraction"] * np.maximum(kv_space, 0) / 1e9,
        host_cache_gb=eff["host_cache_fraction"] * host,
        nvme_cache_gb=eff["nvme_cache_fraction"] * nvme,
        network_cap_gbs=eff["utilization_max"] * network / 8,
        block_cap_gbs=eff["utilization_max"] * block / 8,
    )


# --- prefill and decode times: the roofline, or a measured profile (MODEL.md §3.2, §4) ---------------------

def prefill_seconds(card: ModelCard, fleet: Fleet, g, tokens) -> tuple[np.ndarray, np.ndarray]:
    """T_g(L): seconds for one replica of pool g to prefill L tokens from scratch, and whether a profile was
    extrapolated past its longest measured length. n new tokens after p cached ones take T(p + n) - T(p)."""
    g = np.asarray(g, dtype=np.int64)
    tokens = np.asarray(tokens, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        seconds = prefill_flops(card, tokens, 0) / fleet.prefill_rate[g] if len(g) else np.zeros(0)
    beyond = np.zeros(len(g), dtype=bool)
    for j in np.unique(fleet.profile[g]) if len(g) else ():
        if j < 0:
            continue
        prof = fleet.profiles[j]
        on = fleet.profile[g] == j
        xs = np.array((0,) + prof.prefill_tokens, dtype=float)
        ys = np.array((0.0,) + prof.prefill_seconds)
        L = tokens[on]
        past = L > xs[-1]
        # past the longest measured length: the roofline's shape, scaled to the last point
        scaled = ys[-1] * prefill_flops(card, L, 0) / float(prefill_flops(card, xs[-1], 0))
        seconds[on] = np.where(past, scaled, np.interp(L, xs, ys))
        beyond[on] = past
    return seconds, beyond


def step_seconds(card: ModelCard, fleet: Fleet, g, batch, kv_tokens) -> tuple[np.ndarray, np.ndarray]:
    """t_step: seconds of one decode step of a batch over kv_tokens each, and whether a profile was extrapolated
    past its measured batches. Roofline: (W_read + b·s·kv) / (tp · hbm_gbps · decode_mbu)."""
    g = np.asarray(g, dtype=np.int64)
    batch = np.asarray(batch, dtype=float)
    kv = np.asarray(kv_tokens, dtype=float)
    s = card.kv_bytes_per_token
    read = card.weight_read_bytes + batch * s * kv
    with np.errstate(divide="ignore", invalid="ignore"):
        seconds = read / fleet.step_bandwidth[g] if len(g) else np.zeros(0)
    beyond = np.zeros(len(g), dtype=bool)
    for j in np.unique(fleet.profile[g]) if len(g) else ():
        if j < 0 or not fleet.profiles[j].decode_batches:
            continue
        prof = fleet.profiles[j]
        on = fleet.profile[g] == j
        bs = np.array(prof.decode_batches, dtype=float)
        ts = np.array(prof.decode_seconds)
        b = batch[on]
        ref = lambda x: card.weight_read_bytes + x * s * prof.decode_kv_tokens  # noqa: E731
        low, high = b < bs[0], b > bs[-1]
        measured = np.where(low, ts[0] * ref(b) / ref(bs[0]),
                            np.where(high, ts[-1] * ref(b) / ref(bs[-1]), np.interp(b, bs, ts)))
        seconds[on] = measured * read[on] / ref(b)   # scaled by the KV bytes read at this KV length
        beyond[on] = low | high
    return seconds, beyond


@dataclass(frozen=True)
class Tiers:
    """Per-tier arrays (length T + 1); index 0 is recompute."""
    names: tuple[str, ...]
    kinds: tuple[str, ...]
    price_gb_month: np.ndarray
    read_request_price: np.ndarray
    write_request_price: np.ndarray
    retrieval_per_gb: np.ndarray
    transfer_per_gb: np.ndarray
    first_byte_latency_s: np.ndarray
    read_gbps: np.ndarray       # inf where the path alone limits
    object_tokens: np.ndarray   # 0: one object per context
    overlap_load: np.ndarray
    node_gb: np.ndarray         # nan: not node-priced
    node_price_per_hour: np.ndarray
    path: np.ndarray            # PATH_* of remote tiers

    def index(self, name: str) -> int:
        return self.names.index(name)


def build_tiers(catalog: Catalog) -> Tiers:
    tiers = catalog.tiers

    def column(attr: str, recompute: float = 0.0) -> np.ndarray:
        return np.array([recompute] + [_or_nan(getattr(t, attr)) for t in tiers], dtype=float)

    return Tiers(
        names=("recompute",) + tuple(t.name for t in tiers),
        kinds=("recompute",) + tuple(t.kind for t in tiers),
        price_gb_month=column("price_gb_month"),
        read_request_price=column("read_request_price"),
        write_request_price=column("write_request_price"),
        retrieval_per_gb=column("retrieval_per_gb"),
        transfer_per_gb=column("transfer_per_gb"),
        first_byte_latency_s=column("first_byte_latency_s"),
        read_gbps=np.nan_to_num(column("read_gbps", np.inf), nan=np.inf),
        object_tokens=np.nan_to_num(column("object_tokens"), nan=0.0),
        overlap_load=np.array([False] + [t.overlap_load for t in tiers]),
        node_gb=column("node_gb", np.nan),
        node_price_per_hour=column("node_price_per_hour", np.nan),
        path=np.array([PATH_NONE] + [_REMOTE_PATH.get(t.kind, PATH_NONE) for t in tiers]),
    )


@dataclass(frozen=True)
class Demand:
    """Per-class arrays (length K): contexts identical in every parameter form one class of `count`."""
    tokens: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    reuses_per_month: np.ndarray
    writes_per_month: np.ndarray
    ttft_slo_s: np.ndarray
    tpot_slo_s: np.ndarray   # inf: no TPOT SLO
    count: np.ndarray


@dataclass(frozen=True)
class Settings:
    mode: str                # provisioned | per_use
    hours_per_month: float
    peak_to_mean: float
    hbm_cache_possible: bool  # provisioned and the catalog lists an hbm tier


@dataclass(frozen=True)
class Options:
    """One entry per option o = (k, g, t, c). Money is USD per context per month."""
    k: np.ndarray
    g: np.ndarray
    t: np.ndarray
    c: np.ndarray
    ttft_s: np.ndarray
    tpot_s: np.ndarray
    load_s: np.ndarray
    batch: np.ndarray         # decode batch b
    available: np.ndarray     # structurally possible (fits, reachable, mode allows), SLOs aside
    meets_slo: np.ndarray
    storage_usd: np.ndarray
    network_usd: np.ndarray
    requests_usd: np.ndarray
    compute_usd: np.ndarray   # per_use mode only (GPU-seconds billed); 0 when provisioned
    gpu_load: np.ndarray      # GPU-seconds per second at peak (provisioned capacity rows)
    path_gbs: np.ndarray      # GB/s read at peak over the instance's network or block path
    stored_gb: np.ndarray     # KV size kept on the option's tier (0 for recompute)
    extrapolated: np.ndarray  # a measured profile was extrapolated past its measured lengths or batches

    @property
    def allowed(self) -> np.ndarray:
        return self.available & self.meets_slo

    @property
    def direct_usd(self) -> np.ndarray:
        return self.storage_usd + self.network_usd + self.requests_usd + self.compute_usd

    def take(self, mask) -> Options:
        return Options(**{name: value[mask] for name, value in self.__dict__.items()})


def evaluate(card: ModelCard, fleet: Fleet, tiers: Tiers, demand: Demand, settings: Settings,
             k, g, t, c) -> Options:
    """Delay, feasibility, cost and resource use of each option (k[i], g[i], t[i], c[i])."""
    k, g, t, c = (np.asarray(a, dtype=np.int64) for a in (k, g, t, c))
    s = card.kv_bytes_per_token
    L = demand.tokens[k].astype(float)
    P = demand.prompt_tokens[k].astype(float)
    O = demand.output_tokens[k].astype(float)
    f = demand.reuses_per_month[k]
    w = demand.writes_per_month[k]
    H = settings.hours_per_month
    stored = t != RECOMPUTE
    kind = np.asarray(tiers.kinds, dtype=object)[t]
    size_gb = s * L / 1e9

    # Prefill (§4): recompute everything, or only the prompt after the loaded cache; and the cache build.
    # T(p + n) - T(p) is the roofline's F(n, p) / rate, or the measured profile's difference (§3.2).
    tp = fleet.tp[g].astype(float)
    serves = fleet.serves[g]
    t_context, beyond_context = prefill_seconds(card, fleet, g, L)
    t_full, beyond_full = prefill_seconds(card, fleet, g, L + P)
    t_prefill = np.where(stored, t_full - t_context, t_full)
    t_build = np.where(stored, t_context, 0.0)

    # Decode (§4): the batch that fits the KV space left to it, its step time and GPU-seconds per request.
    batch_share = np.where(c == 1, 1.0 - fleet.hbm_cache_fraction[g], 1.0)
    space = batch_share * fleet.kv_space[g]
    with np.errstate(divide="ignore", invalid="ignore"):
        batch = np.minimum(fleet.decode_batch[g], np.floor(np.maximum(space, 0) / (s * (L + P + O))))
        t_step, beyond_batch = step_seconds(card, fleet, g, batch, L + P)
        decode_gpu_s = np.where(batch >= 1, O * tp * t_step / np.maximum(batch, 1), np.inf)

    # Loading a stored cache (§4): first byte, then size over the narrower of tier and path into the instance.
    path_gbs = np.select(
        [kind == "host_memory", kind == "local_nvme", tiers.path[t] == PATH_BLOCK, tiers.path[t] == PATH_NETWORK],
        [fleet.pcie_gbps[g] * tp, fleet.local_nvme_gbps[g], fleet.block_storage_gbps[g] / 8,
         fleet.network_gbps[g] / 8],
        default=np.inf)
    bandwidth = np.minimum(tiers.read_gbps[t], path_gbs)
    with np.errstate(divide="ignore", invalid="ignore"):
        load_s = np.where(stored & (kind != "hbm"), tiers.first_byte_latency_s[t] + size_gb / bandwidth, 0.0)
    ttft = np.where(tiers.overlap_load[t], np.maximum(load_s, t_prefill), load_s + t_prefill)
    tpot = t_step
    # A serial pipeline holds the replica's GPUs while a cache streams in (load_blocks_gpu, §4).
    held = np.where(fleet.load_blocks_gpu[g] & stored, tp * np.nan_to_num(load_s, posinf=np.inf), 0.0)
    busy = tp * t_prefill + decode_gpu_s + held

    # Where an option can exist at all (§4, §5, §6).
    provisioned = settings.mode == "provisioned"
    attached = np.isin(kind, ("hbm", "host_memory", "local_nvme"))
    fits = np.select(
        [kind == "hbm", kind == "host_memory", kind == "local_nvme"],
        [size_gb * fleet.replicas[g] <= fleet.hbm_cache_gb[g],  # one replica's share holds the whole context
         size_gb <= np.nan_to_num(fleet.host_cache_gb[g]), size_gb <= np.nan_to_num(fleet.nvme_cache_gb[g])],
        default=True)
    available = (serves & (batch >= 1) & fits & ~np.isnan(bandwidth) & (bandwidth > 0)
                 & ((c == 0) | settings.hbm_cache_possible)
                 & ((kind != "hbm") | (c == 1))
                 & (~attached | provisioned))
    meets_slo = (ttft <= demand.ttft_slo_s[k] * (1 + 1e-12)) & (tpot <= demand.tpot_slo_s[k] * (1 + 1e-12))

    # Money (§5 objective coefficients, §6 per-use compute).
    objects = np.where(tiers.object_tokens[t] > 0, np.ceil(L / np.maximum(tiers.object_tokens[t], 1)), 1.0)
    zero = np.zeros(len(k))
    storage_usd = np.where(stored, size_gb * tiers.price_gb_month[t] * H / 730.0, zero)
    requests_usd = np.where(stored, objects * (f * tiers.read_request_price[t] + w * tiers.write_request_price[t]),
                            zero)
    network_usd = np.where(stored, size_gb * (f * (tiers.retrieval_per_gb[t] + tiers.transfer_per_gb[t])
                                              + w * tiers.transfer_per_gb[t]), zero)
    gpu_seconds_month = f * busy + w * tp * t_build
    if provisioned:
        compute_usd = zero
    else:
        compute_usd = np.where(serves, fleet.price[g] / fleet.gpus[g] * gpu_seconds_month / 3600.0, np.inf)
    peak = settings.peak_to_mean / (H * 3600.0)
    gpu_load = f * peak * busy + w / (H * 3600.0) * tp * t_build
    remote = tiers.path[t] != PATH_NONE
    return Options(
        k=k, g=g, t=t, c=c, ttft_s=ttft, tpot_s=tpot, load_s=load_s, batch=batch,
        available=available, meets_slo=meets_slo,
        storage_usd=storage_usd, network_usd=network_usd, requests_usd=requests_usd, compute_usd=compute_usd,
        gpu_load=gpu_load,
        path_gbs=np.where(remote, f * peak * size_gb, 0.0),
        stored_gb=np.where(stored, size_gb, 0.0),
        extrapolated=beyond_full | (stored & beyond_context) | beyond_batch,
    )


def grid(n_classes: int, n_offerings: int, n_tiers: int, states: int = 2):
    """Index vectors of every (k, g, t, c) combination, in a fixed order."""
    k, g, t, c = np.meshgrid(np.arange(n_classes), np.arange(n_offerings), np.arange(n_tiers), np.arange(states),
                             indexing="ij")
    return k.ravel(), g.ravel(), t.ravel(), c.ravel()

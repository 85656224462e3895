"""Planning many contexts (issue #6): a per-context plan for up to millions of contexts, with a proven bound.

The exact program (formulation.py) has one variable per context class and option; past a few thousand classes
building and branching it takes minutes. This engine plans the same program (MODEL.md §5, §6) in steps:

1. Buckets and prices. Classes are grouped into at most MAX_BUCKETS buckets of similar ones (length, reuses,
   prompt, output within a few per cent; SLOs exact where few), each represented by its count-weighted means.
   The LP relaxation over the buckets, with each offering g split into a pool of instances that keep an HBM
   cache (c = 1) and a pool that do not (c = 0), is solved by column generation; its row duals price every
   capacity row: π_pr per unit of resource r (GPU-seconds/s, HBM/host/NVMe cache GB, network/block GB/s) of
   pool p = (g, c), π_t per GB of a node-priced tier.
2. Fleets. Candidate integer fleets come from rounding the LP, from Kelley's cutting planes on a master over
   the integer fleet (cuts from the bucket LP at each fleet tried), and from single pools that serve everything
   alone (more of them, cheaper than the best fleet, where the best fleet is far above step 3's bound after
   its cuts at the master's fleets). Each is scored by the bucket LP with that fleet (extra instances allowed
   at twice the price, then counted as bought whole); the best is planned, and (up to PLANNED_FLEETS_UP_TO
   classes) the next best while it may beat the plans in hand. A fleet that falls short (its LP needs less
   than one instance more, or whole contexts do not fit it once planned) adds candidates: itself plus one
   instance of a smaller pool.
3. Bound. For any prices π >= 0 and any fleet n, placing the contexts costs at least
       L(π) − Σ_pr π_pr · cap_pr · n_p,   L(π) = Σ_i min_o (c_io + π · u_io) + min_j (background option j)
   (Lagrangian relaxation of the capacity rows). A master MIP over integer n with these cuts, θ >= 0, and
   covers (every class needs an instance of some pool that can serve it) has a minimum no plan can beat:
   that is the lower bound. L is evaluated per context, exactly, in one pass over every option (`scan`):
   buckets decide only how good the prices are, never whether the bound holds. Splitting pools by HBM state,
   dropping the linking rows and relaxing integrality only relax further. Where passes are cheap (few
   contexts), more cuts are added at the master's own fleets (Kelley's method).
   Where that leaves a gap, a branch-and-bound over each offering's instances (on a coarse LP over
   TREE_BUCKETS buckets) splits the fleets into boxes, removing the fractions of large instances the LP
   relaxation spreads and no plan can buy; the lowest boxes' prices (the lowest two's from the finer LP) are
   checked exactly in the plan's pass (L over the pools each box may open), and the bound is the least over
   the boxes of the master over the fleets in each. Every fleet lies in one box, so it is still a bound.
   The masters hold only fleets that cost less than the plan in hand (no cheaper plan buys more), so a bound
   over them, or the plan's own cost, bounds every plan.
   Last, the prices are fitted to every context at the fleet that attains the bound (`ascend`): the buckets'
   prices are their mean contexts', each taking one option for all the bucket's contexts, so L at them falls
   short of the LP over every context. An ascent over the prices of that fleet's pools alone, each step a pass
   over the contexts on those pools, climbs to that LP; its cut holds for every fleet on those pools (lifted
   for fleets that open others). While the bound rises (and the work allows), again at the fleet that then
   attains it.
4. Plan. At each planned fleet the bucket LP is re-solved with the columns it uses priced on their buckets' own
   contexts (each held to the share of its bucket that may take it), so its loads are exact; each context
   takes its bucket's choice (split buckets split by count). The least decided contexts (those without a
   choice, those on rows the choices overload, those closest to a tie) are then fitted to the fleet by an LP
   over each one's best few options at the prices. While that LP's own duals show the contexts held costing well
   over their cheapest options, those furthest off move in another LP. Its basic solution splits few contexts, and
   a MIP over those, the closest to a tie and the largest on the rows the LP fills decides them with the integer
   fleet, from the LP's choices (so it always has a plan); where whole contexts do not fit the fleet that way, once
   more with more of them moved. Where the fleet does not fit them, that MIP starts from the bucket's choices. The
   cheapest plan wins.
5. The plan is priced by costmodel.evaluate like every other plan; its gap is measured against step 3's bound.

Per-context costs are computed factored (per class: one offering's GPU time and delays per tier from a few
vectors), from the same formulas as costmodel.evaluate; tests check the two agree option for option.
Work limits are counts (rounds, branch-and-bound nodes), not seconds, so that identical inputs give identical
plans; --time-limit still caps the whole run.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..costmodel import (PATH_BLOCK, PATH_NETWORK, RECOMPUTE, Demand, Fleet, Options, Settings, Tiers,
                         prefill_flops)
from ..inputs.catalog import ModelCard

# Resources of a pool, in the order of π's columns.
GPU, HBM, HOST, NVME, NETWORK, BLOCK = range(6)
NONE = -1
MAX_BUCKETS = 1000      # buckets of the pricing LP
FEWER_BUCKETS = 500     # up to FEWER_BUCKETS_UP_TO classes: there passes over the contexts are quick and carry the
FEWER_BUCKETS_UP_TO = 12_000  # bound (10,000 bench contexts: the same plans on aws, gcp, azure and lambda, aws 3.8 ->
                        # 2.4 s; at 50,000, 25% dearer on gcp)
FIT_CONTEXTS = 20000    # contexts the LP at the planned fleet may move (those least decided)
FIT_ALL_UP_TO = 60000   # where those held leave no room, all are fitted, up to this many (50,000 bench contexts:
                        # $5,647.93 on one p5.4xlarge, where the held left none and the plan bought another)
FREE_CONTEXTS = 1000    # contexts nearest a tie the final MIP moves (and where the planned fleet does not fit)
FREE_RETRY = 8000       # and once more, where whole contexts did not fit the planned fleet
LARGEST_CONTEXTS = 200  # and the largest on the rows the LP fills, besides
CANDIDATES = 6          # options per free context in the final MIP, at least
MIP_COLUMNS = 60000     # options of free contexts in the final MIP, at most
MAX_ROUNDS = 10         # rounds of each search (over buckets; over contexts), at most
KELLEY_WORK = 500_000   # classes times rounds, at most: fewer rounds for more classes, none from 500,000
ALONE = 3               # fleets of one pool alone scored by the LP (the cheapest by a screen)
MORE_ALONE_GAP = 0.05   # as many more of them where the best fleet by the LP is this far above the bound
COMPLEMENTS = 3         # fleets of one that falls short, plus an instance of a smaller pool
PLANNED_FLEETS = 3      # fleets planned in full (the best by the LP, while they may beat the plan), where at most
PLANNED_FLEETS_UP_TO = 200_000  # this many classes (each is a pass over every context and a final MIP)
PLAN_MARGIN = 0.05      # a fleet is planned while its LP is under the plan in hand by this much more (the final
                        # MIP also sizes the fleet: 40 chatbot contexts, fleet's LP $11,411.36, plan $11,309.16)
TREE_BUCKETS = 150      # buckets of the LP that branches over fleets for the bound (its prices are checked exactly)
TREE_NODES = 40         # LPs of that branch-and-bound, at most
TREE_CHECKS = 12        # leaves checked by the pass over every context (the lowest first), at most
TREE_WORK = 2_000_000   # classes times leaves checked, at most (and no search where two cannot be)
TREE_FINER = 2          # the lowest leaves checked with prices from the LP over MAX_BUCKETS buckets
TREE_GAP = 0.01         # the search runs where the cuts' bound is this far below the best fleet by the LP, and
                        # the relaxation spends at least this share on instances dearer than the gap
REPRICE_ROUNDS = 2      # LPs at the planned fleet re-priced by the last one's duals, at most: while the classes off
REPRICE_OFF = 0.003     # their cheapest options cost this share more (of the plan: what it may still gain),
REPRICE_GAIN = 0.001    # and the last LP gained at least this share
ASCENT_EVALS = 45       # exact passes over the contexts of one ascent of the prices at the bound's fleet, at most
ASCENT_WORK = 120_000_000  # classes times pools times passes of those ascents, at most
ASCENT_STARTS = 4       # prices an ascent may start from (those of the cuts highest at its fleet)
PLACE_NODES = 200       # branch-and-bound nodes of the final MIP (a work limit, not a time limit: plans repeat)


@dataclass(frozen=True)
class Inputs:
    card: ModelCard
    fleet: Fleet
    tiers: Tiers
    settings: Settings


def tier_resource(tiers: Tiers) -> np.ndarray:
    """The pool resource each tier's option uses besides GPU time (NONE for recompute). Node-priced tiers also
    use their nodes' GB, priced per tier."""
    kinds = np.asarray(tiers.kinds, dtype=object)
    return np.select([kinds == "hbm", kinds == "host_memory", kinds == "local_nvme",
                      tiers.path == PATH_NETWORK, tiers.path == PATH_BLOCK],
                     [HBM, HOST, NVME, NETWORK, BLOCK], default=NONE)


def capacities(fleet: Fleet) -> np.ndarray:
    """cap[g, c, r]: resource r per instance of offering g in HBM state c (the cache exists only with c = 1)."""
    G = len(fleet.names)
    cap = np.zeros((G, 2, 6))
    for c in (0, 1):
        cap[:, c, GPU] = fleet.gpu_capacity
        cap[:, c, HOST] = np.nan_to_num(fleet.host_cache_gb)
        cap[:, c, NVME] = np.nan_to_num(fleet.nvme_cache_gb)
        cap[:, c, NETWORK] = np.nan_to_num(fleet.network_cap_gbs)
        cap[:, c, BLOCK] = np.nan_to_num(fleet.block_cap_gbs)
    cap[:, 1, HBM] = fleet.hbm_cache_gb
    return cap


class Factored:
    """Every option's cost, load and verdict for a set of context classes, one offering at a time.

    Per class and tier, whatever the pool: direct cost (storage, network, requests), the amount used on the
    tier's row (stored GB, or peak GB/s over the path), GB on a node-priced tier. Per offering: which tiers are
    within TTFT and fit; per HBM state: the decode batch's verdict and the GPU load. Same formulas and order of
    operations as costmodel.evaluate (tests check them option for option).
    """

    def __init__(self, inputs: Inputs, demand: Demand):
        self.inputs, self.demand = inputs, demand
        card, tiers, st = inputs.card, inputs.tiers, inputs.settings
        s = card.kv_bytes_per_token
        L = demand.tokens.astype(float)
        P = demand.prompt_tokens.astype(float)
        O = demand.output_tokens.astype(float)
        f, w = demand.reuses_per_month, demand.writes_per_month
        H = st.hours_per_month
        self.size_gb = s * L / 1e9
        self.flops_recompute = prefill_flops(card, L + P, 0)
        self.flops_stored = prefill_flops(card, P, L)
        self.flops_build = prefill_flops(card, L, 0)
        self.kv_per_sequence = s * (L + P + O)
        self.kv_read = s * (L + P)
        self.O, self.f, self.w = O, f, w
        self.peak = st.peak_to_mean / (H * 3600.0)
        self.build_rate = w / (H * 3600.0)

        t = np.arange(len(tiers.names))
        self.stored = t != RECOMPUTE
        self.kinds = np.asarray(tiers.kinds, dtype=object)
        objects = np.where(tiers.object_tokens > 0, np.ceil(L[:, None] / np.maximum(tiers.object_tokens, 1)), 1.0)
        size = self.size_gb[:, None]
        storage = np.where(self.stored, size * tiers.price_gb_month * H / 730.0, 0.0)
        requests = np.where(self.stored, objects * (f[:, None] * tiers.read_request_price
                                                    + w[:, None] * tiers.write_request_price), 0.0)
        network = np.where(self.stored, size * (f[:, None] * (tiers.retrieval_per_gb + tiers.transfer_per_gb)
                                                + w[:, None] * tiers.transfer_per_gb), 0.0)
        # (K, T) arrays column-major: the cheapest tier of each class is a minimum across a few long columns,
        # three times as fast as across many short rows
        self.direct = np.asfortranarray(storage + network + requests)
        self.resource = tier_resource(tiers)
        remote = tiers.path != 0
        self.use = np.asfortranarray(np.where(remote, f[:, None] * self.peak * size,
                                              np.where(self.stored, size, 0.0)))
        self.node_gb = np.asfortranarray(np.where(np.isfinite(tiers.node_gb) & self.stored, size, 0.0))
        self._within_ttft: dict = {}  # (tier, bandwidth, prefill rate) -> TTFT within SLO, per class

    def offering(self, g: int) -> OnOffering | None:
        """The options of offering g, or None where it cannot serve the model."""
        inp, d = self.inputs, self.demand
        F, tiers, st, card = inp.fleet, inp.tiers, inp.settings, inp.card
        if not F.serves[g]:
            return None
        kinds, stored = self.kinds, self.stored
        tp = float(F.tp[g])
        rate = F.prefill_rate[g]
        t_rec = self.flops_recompute / rate
        t_sto = self.flops_stored / rate
        t_build = self.flops_build / rate

        path = np.select([kinds == "host_memory", kinds == "local_nvme", tiers.path == PATH_BLOCK,
                          tiers.path == PATH_NETWORK],
                         [F.pcie_gbps[g] * tp, F.local_nvme_gbps[g], F.block_storage_gbps[g] / 8,
                          F.network_gbps[g] / 8], default=np.inf)
        bandwidth = np.minimum(tiers.read_gbps, path)                          # (T,)
        attached = np.isin(kinds, ("hbm", "host_memory", "local_nvme"))
        reachable = ~np.isnan(bandwidth) & (bandwidth > 0) & (~attached | (st.mode == "provisioned"))
        capacity = {"hbm": F.hbm_cache_gb[g], "host_memory": np.nan_to_num(F.host_cache_gb[g]),
                    "local_nvme": np.nan_to_num(F.nvme_cache_gb[g])}
        slo = d.ttft_slo_s * (1 + 1e-12)
        tiers_ok = np.zeros((len(self.size_gb), len(kinds)), bool, order="F")
        for t in np.flatnonzero(reachable):  # column by column, each computed once per delay it depends on
            loads = stored[t] and kinds[t] != "hbm"
            key = (t, float(bandwidth[t]) if loads else None, rate)
            if key not in self._within_ttft:
                t_prefill = t_sto if stored[t] else t_rec
                with np.errstate(divide="ignore", invalid="ignore"):
                    load_s = tiers.first_byte_latency_s[t] + self.size_gb / bandwidth[t] if loads else 0.0
                ttft = np.maximum(load_s, t_prefill) if tiers.overlap_load[t] else load_s + t_prefill
                self._within_ttft[key] = ttft <= slo
            ok = self._within_ttft[key]
            if kinds[t] in capacity:
                size = self.size_gb * F.replicas[g] if kinds[t] == "hbm" else self.size_gb
                ok = ok & (size <= capacity[kinds[t]])
            tiers_ok[:, t] = ok

        states = {}
        for c in (0, 1):
            if c == 1 and not st.hbm_cache_possible:
                continue
            batch_share = (1.0 - F.hbm_cache_fraction[g]) if c == 1 else 1.0
            space = batch_share * F.kv_space[g]
            with np.errstate(divide="ignore", invalid="ignore"):
                batch = np.minimum(F.decode_batch[g], np.floor(max(space, 0) / self.kv_per_sequence))
                t_step = (card.weight_read_bytes + batch * self.kv_read) / F.step_bandwidth[g]
                decode = np.where(batch >= 1, self.O * tp * t_step / np.maximum(batch, 1), np.inf)
            busy_rec = tp * t_rec + decode
            busy_sto = tp * t_sto + decode
            ok = (batch >= 1) & (t_step <= d.tpot_slo_s * (1 + 1e-12))
            load = (self.f * self.peak * busy_rec, self.f * self.peak * busy_sto + self.build_rate * tp * t_build)
            compute = None
            if st.mode != "provisioned":
                price = F.price[g] / F.gpus[g]
                compute = (price * (self.f * busy_rec) / 3600.0,
                           price * (self.f * busy_sto + self.w * tp * t_build) / 3600.0)
            states[c] = (ok, load, compute)
        return OnOffering(g, tiers_ok, kinds == "hbm", states)


@dataclass(frozen=True)
class OnOffering:
    """One offering's options for every class: tiers_ok (K, T) and, per HBM state c, (ok (K,), GPU load of
    (recompute, stored) options, per-use compute USD of them or None)."""
    g: int
    tiers_ok: np.ndarray
    hbm_tier: np.ndarray
    states: dict

    def feasible(self, c: int) -> np.ndarray:
        ok = self.states[c][0]
        tiers_ok = self.tiers_ok if c == 1 else self.tiers_ok & ~self.hbm_tier
        return tiers_ok & ok[:, None]

    def matrix(self, pair: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """A (recompute, stored) pair of per-class values as a (K, T) matrix."""
        recompute, stored = pair
        out = np.repeat(stored[:, None], len(self.hbm_tier), axis=1)
        out[:, RECOMPUTE] = recompute
        return out


@dataclass(frozen=True)
class PoolTerms:
    """What a pool's reduced costs take besides the prices (the same at every price): per option 0 where
    allowed and inf where not, and the GPU load and per-use compute USD of recompute and stored options (0
    where no decode batch fits, those options being blocked)."""
    g: int
    c: int
    blocked: np.ndarray            # (K, T)
    load: tuple[np.ndarray, np.ndarray]
    compute: tuple[np.ndarray, np.ndarray] | None


def pool_terms(on: OnOffering, c: int, allowed: np.ndarray | None) -> PoolTerms:
    ok, load, compute = on.states[c]
    feasible = on.feasible(c)
    if allowed is not None:
        feasible &= allowed
    safe = tuple(np.where(ok, part, 0.0) for part in load)
    return PoolTerms(on.g, c, np.where(feasible, 0.0, np.inf), safe,
                     None if compute is None else tuple(np.where(ok, part, 0.0) for part in compute))


def reduced_costs(fac: Factored, terms: PoolTerms, prices: Prices, base: np.ndarray) -> np.ndarray:
    """Each option's cost on pool (g, c) with its rows priced: inf where not allowed. `base` is fac.direct plus
    the node-priced GB at their price (the same for every pool)."""
    pi = prices.pool[terms.g, terms.c]
    tier_price = np.where(fac.resource >= 0, pi[np.maximum(fac.resource, 0)], 0.0)
    rc = fac.use * tier_price
    rc += base
    rc[:, RECOMPUTE] += pi[GPU] * terms.load[0]
    rc[:, 1:] += (pi[GPU] * terms.load[1])[:, None]
    if terms.compute is not None:
        rc[:, RECOMPUTE] += terms.compute[0]
        rc[:, 1:] += terms.compute[1][:, None]
    rc += terms.blocked
    return rc


@dataclass(frozen=True)
class Prices:
    """Prices of the capacity rows (all >= 0): pool[g, c, r] per unit of resource r, node[t] per GB."""
    pool: np.ndarray
    node: np.ndarray

    @staticmethod
    def zero(G: int, T: int) -> Prices:
        return Prices(np.zeros((G, 2, 6)), np.zeros(T))

    def worth(self, fleet: Fleet, tiers: Tiers) -> tuple[np.ndarray, np.ndarray]:
        """What one instance of each pool (G, 2) and one node of each tier (T,) is worth at these prices."""
        return (self.pool * capacities(fleet)).sum(axis=2), self.node * np.nan_to_num(tiers.node_gb)


# --- linear programs handed to HiGHS as arrays ----------------------------------------------------------------

class _Program:
    """Columns, rows and coefficients collected as numpy blocks, then handed to HiGHS column-wise."""

    def __init__(self, n_rows: int):
        self.n_rows = n_rows
        self.row_lower = np.full(n_rows, -np.inf)
        self.row_upper = np.full(n_rows, np.inf)
        self.cost, self.lower, self.upper, self.integer = [], [], [], []
        self.entries: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.n_cols = 0

    def columns(self, cost, lower, upper, integer: bool = False) -> np.ndarray:
        cost = np.asarray(cost, dtype=float)
        ids = np.arange(self.n_cols, self.n_cols + len(cost))
        self.cost.append(cost)
        self.lower.append(np.broadcast_to(np.asarray(lower, dtype=float), cost.shape))
        self.upper.append(np.broadcast_to(np.asarray(upper, dtype=float), cost.shape))
        self.integer.append(np.full(len(cost), integer))
        self.n_cols += len(cost)
        return ids

    def coefficients(self, rows, cols, values) -> None:
        rows, cols, values = np.broadcast_arrays(np.asarray(rows, np.int64), np.asarray(cols, np.int64),
                                                 np.asarray(values, dtype=float))
        keep = values != 0
        self.entries.append((rows[keep].ravel(), cols[keep].ravel(), values[keep].ravel()))

    def highs(self, *, offset: float = 0.0, gap: float = 1e-6, time_limit: float | None = None,
              relax: bool = False):
        """A HiGHS instance holding this program (quiet, seeded, tight tolerances; `relax`: without
        integrality)."""
        import highspy

        from .highs import HIGHS_OPTIONS, silence_highs_banner as _silence_highs_banner

        _silence_highs_banner()
        rows = np.concatenate([e[0] for e in self.entries]) if self.entries else np.zeros(0, np.int64)
        cols = np.concatenate([e[1] for e in self.entries]) if self.entries else np.zeros(0, np.int64)
        vals = np.concatenate([e[2] for e in self.entries]) if self.entries else np.zeros(0)
        order = np.lexsort((rows, cols))
        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = self.n_cols, self.n_rows
        lp.col_cost_ = np.concatenate(self.cost)
        lp.col_lower_ = np.concatenate(self.lower)
        lp.col_upper_ = np.concatenate(self.upper)
        lp.row_lower_, lp.row_upper_ = self.row_lower, self.row_upper
        lp.offset_ = offset
        matrix = lp.a_matrix_
        matrix.format_ = highspy.MatrixFormat.kColwise
        matrix.num_col_, matrix.num_row_ = self.n_cols, self.n_rows
        matrix.start_ = np.searchsorted(cols[order], np.arange(self.n_cols + 1)).astype(np.int32)
        matrix.index_ = rows[order].astype(np.int32)
        matrix.value_ = vals[order]
        integer = np.concatenate(self.integer) & (not relax)
        if integer.any():
            lp.integrality_ = [highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous
                               for i in integer]
        h = highspy.Highs()
        for option, value in (("output_flag", False), ("mip_rel_gap", gap), ("mip_abs_gap", 1e-9),
                              *HIGHS_OPTIONS.items()):
            h.setOptionValue(option, value)
        if time_limit is not None:
            h.setOptionValue("time_limit", float(max(time_limit, 1.0)))
        h.passModel(lp)
        return h

    def solve(self, *, offset: float = 0.0, gap: float = 1e-6, time_limit: float | None = None,
              start: np.ndarray | None = None, max_nodes: int | None = None, relax: bool = False):
        """(status, column values, row duals, objective, dual bound); status: optimal | feasible | infeasible |
        not_solved. `start`: a first solution to improve on; `relax`: the LP relaxation."""
        import highspy

        h = self.highs(offset=offset, gap=gap, time_limit=time_limit, relax=relax)
        if max_nodes is not None:  # a placement: also without presolve's dual fixing (rule 17), which in HiGHS
            # 1.16 looped forever, time limit or not, placing chatbot-prompts on the azure catalog (40 contexts;
            # 0.05 s without it)
            h.setOptionValue("mip_max_nodes", int(max_nodes))
            h.setOptionValue("presolve_rule_off", 1 << 17)
        if start is not None:
            solution = highspy.HighsSolution()
            solution.col_value = list(start)
            solution.value_valid = True
            h.setSolution(solution)
        h.run()
        status = h.getModelStatus()
        info = h.getInfo()
        S = highspy.HighsModelStatus
        if status in (S.kInfeasible, S.kUnboundedOrInfeasible):
            return "infeasible", None, None, None, None
        if info.primal_solution_status != 2:
            return "not_solved", None, None, None, None
        solution = h.getSolution()
        mip = bool(np.concatenate(self.integer).any()) and not relax
        objective = info.objective_function_value
        return ("optimal" if status == S.kOptimal else "feasible", np.array(solution.col_value),
                None if mip else np.array(solution.row_dual), objective, info.mip_dual_bound if mip else objective)


# --- buckets of similar contexts, for the prices ---------------------------------------------------------------

def _log_bins(values: np.ndarray, width: float) -> np.ndarray:
    return np.floor(np.log1p(np.maximum(values, 0.0)) / np.log1p(width)).astype(np.int64)


def buckets(demand: Demand, limit: int | None = None) -> tuple[Demand, np.ndarray]:
    """At most `limit` (MAX_BUCKETS; FEWER_BUCKETS for fewer classes) buckets of similar classes (coarser bins
    until they fit), each represented by its count-weighted means (tokens rounded; the tightest SLOs in it);
    and each class's bucket."""
    K = len(demand.count)
    limit = (FEWER_BUCKETS if K <= FEWER_BUCKETS_UP_TO else MAX_BUCKETS) if limit is None else limit
    slo_codes = []
    for slo in (demand.ttft_slo_s, demand.tpot_slo_s):
        values, code = np.unique(slo, return_inverse=True)
        slo_codes.append(code if len(values) <= 16 else _log_bins(np.where(np.isfinite(slo), slo, 1e9), 0.1))
    width = 0.05
    while True:
        key = np.column_stack([_log_bins(demand.tokens, width), _log_bins(demand.reuses_per_month, 2 * width),
                               _log_bins(demand.prompt_tokens, 4 * width), _log_bins(demand.output_tokens, 4 * width),
                               _log_bins(demand.writes_per_month, 4 * width), *slo_codes])
        key = key - key.min(axis=0) if K else key
        flat = np.ravel_multi_index(key.T, key.max(axis=0) + 1) if K else np.zeros(0, np.int64)  # small ints
        of_class = pd.factorize(flat, sort=True)[0].astype(np.int64)    # np.unique's inverse, hashed: faster
        B = int(of_class.max()) + 1 if K else 0
        if B <= limit:
            break
        width *= 1.5
    count = np.bincount(of_class, demand.count, B)

    def mean(v):
        return np.bincount(of_class, demand.count * v, B) / count

    def tightest(v):
        out = np.full(B, np.inf)
        np.minimum.at(out, of_class, v)
        return out

    rep = Demand(tokens=np.maximum(np.round(mean(demand.tokens)), 1).astype(np.int64),
                 prompt_tokens=np.round(mean(demand.prompt_tokens)).astype(np.int64),
                 output_tokens=np.round(mean(demand.output_tokens)).astype(np.int64),
                 reuses_per_month=mean(demand.reuses_per_month), writes_per_month=mean(demand.writes_per_month),
                 ttft_slo_s=tightest(demand.ttft_slo_s), tpot_slo_s=tightest(demand.tpot_slo_s),
                 count=count.astype(np.int64))
    return rep, of_class


def _tier_groups(inputs: Inputs) -> list[np.ndarray]:
    """Tiers that use the same rows (same pool resource, same node-priced tier) and GPU load (recompute apart):
    within a pool, only the cheapest feasible one of a group is ever worth choosing, whatever the prices."""
    res = tier_resource(inputs.tiers)
    node = np.isfinite(inputs.tiers.node_gb)
    keys = [(int(r), t if node[t] else -1, t == RECOMPUTE) for t, r in enumerate(res)]
    return [np.array([t for t, k in enumerate(keys) if k == key]) for key in dict.fromkeys(keys)]


# --- step 1: prices from the LP over buckets (column generation) ----------------------------------------------

@dataclass(frozen=True)
class LPSolution:
    prices: Prices
    pools: np.ndarray          # instances per pool (G, 2)
    objective: float
    estimate: float            # the fleet's cost with any extra instances bought whole, plus placement
    shares: np.ndarray         # per tabulated column: its value in the LP (0 where not in it)


class BucketLP:
    """The LP relaxation over buckets with split pools, by column generation: every undominated option of
    every bucket is tabulated once; the LP holds those whose reduced cost was ever negative."""

    def __init__(self, inputs: Inputs, rep: Demand, background: Demand, states: tuple[int, ...],
                 allowed: np.ndarray | None):
        self.inputs, self.rep, self.states = inputs, rep, states
        self._args = (inputs, rep, background, states, allowed)
        F, B = inputs.fleet, len(rep.count)
        fac = Factored(inputs, rep)
        groups = _tier_groups(inputs)
        table = []
        rows = np.arange(B)
        for g in range(len(F.names)):
            on = fac.offering(g)
            if on is None:
                continue
            for c in states:
                ok, load, compute = on.states[c]
                feasible = on.feasible(c) if allowed is None else on.feasible(c) & allowed
                plain = fac.direct if compute is None else fac.direct + on.matrix(compute)
                masked = np.where(feasible, plain, np.inf)
                gpu = on.matrix(load)
                for group in groups:  # within a group of tiers on one pool only the cheapest is worth having
                    pick = group[np.argmin(masked[:, group], axis=1)]
                    b = rows[np.isfinite(masked[rows, pick])]
                    t = pick[b]
                    table.append((b, np.full(len(b), g), np.full(len(b), c), t, plain[b, t], gpu[b, t],
                                  fac.resource[t], fac.use[b, t], fac.node_gb[b, t]))
        self.b, self.g, self.c, self.t, self.cost, self.gpu, self.r, self.use, self.node = (
            np.concatenate(parts) for parts in zip(*table))
        self.bg = []  # background options: (g, c, cost, gpu load)
        if len(background.count):
            bfac = Factored(inputs, background)
            for g in range(len(F.names)):
                on = bfac.offering(g)
                for c in states if on is not None else ():
                    if on.feasible(c)[0, RECOMPUTE]:
                        ok, load, compute = on.states[c]
                        self.bg.append((g, c, 0.0 if compute is None else float(compute[0][0]), float(load[0][0])))
        self.active = np.zeros(len(self.b), bool)
        self.col_of = np.full(len(self.b), -1, np.int64)
        self.is_exact = np.zeros(len(self.b), bool)
        self.group = np.zeros(len(inputs.tiers.names), np.int64)
        for j, group in enumerate(groups):
            self.group[group] = j
        self.highs = None
        import highspy
        self._optimal = highspy.HighsModelStatus.kOptimal

    def twin(self, initial: Prices) -> BucketLP:
        """The same LP with the same columns, apart (what it solves then leaves this one's columns as they
        were)."""
        other = BucketLP(*self._args)
        other._start(initial)
        other._add(np.flatnonzero(self.active & ~other.active))
        return other

    def reduced(self, prices: Prices) -> np.ndarray:
        """Per tabulated column: cost per context at the prices (resource rows priced)."""
        pi = prices.pool[self.g, self.c]
        return (self.cost + pi[:, GPU] * self.gpu
                + np.where(self.r >= 0, pi[np.arange(len(self.r)), np.maximum(self.r, 0)], 0.0) * self.use
                + prices.node[self.t] * self.node)

    def exact(self, fleet: np.ndarray, prices: Prices, demand: Demand, of_class: np.ndarray,
              allowed: np.ndarray | None, rounds: int = 4) -> LPSolution | None:
        """The LP at `fleet` with the columns it uses priced on their bucket's own classes (each class on its
        cheapest allowed tier of the column's group; the column's cost, load and use their count-weighted
        means) instead of on the bucket's representative, until every column used is exact."""
        from ..costmodel import evaluate

        inp = self.inputs
        order = np.argsort(of_class, kind="stable")
        bounds = np.searchsorted(of_class[order], np.arange(len(self.rep.count) + 1))
        groups = _tier_groups(inp)
        solution = self.solve(fleet, prices)
        for _ in range(rounds):
            if solution is None:
                return None
            todo = np.flatnonzero((solution.shares > 1e-9) & ~self.is_exact)
            if len(todo) == 0:
                break
            members = [order[bounds[b]:bounds[b + 1]] for b in self.b[todo]]
            tiers = [groups[self.group[t]] for t in self.t[todo]]
            col = np.concatenate([np.full(len(m) * len(ts), j) for j, (m, ts) in enumerate(zip(members, tiers))])
            k = np.concatenate([np.repeat(m, len(ts)) for m, ts in zip(members, tiers)])
            t = np.concatenate([np.tile(ts, len(m)) for m, ts in zip(members, tiers)])
            o = evaluate(inp.card, inp.fleet, inp.tiers, demand, inp.settings, k, self.g[todo][col], t,
                         self.c[todo][col])
            ok = o.allowed if allowed is None else o.allowed & allowed[k, t]
            cost = np.where(ok, o.direct_usd, np.inf)
            # each class's cheapest tier of the group: sort by (column, class, cost) and keep the first
            pick = np.lexsort((cost, k, col))
            first = pick[np.r_[True, (col[pick][1:] != col[pick][:-1]) | (k[pick][1:] != k[pick][:-1])]]
            first = first[np.isfinite(cost[first])]
            weight = demand.count[k[first]].astype(float)
            _, use = _uses(inp, o.take(first))
            node = np.where(np.isfinite(inp.tiers.node_gb[t[first]]), o.stored_gb[first], 0.0)
            total = np.bincount(col[first], weight, len(todo))
            with np.errstate(invalid="ignore", divide="ignore"):
                means = [np.bincount(col[first], weight * v, len(todo)) / total
                         for v in (cost[first], o.gpu_load[first], use, node)]
            self._update(todo, *means, usable=total / self.rep.count[self.b[todo]])
            solution = self.solve(fleet, prices)
        return solution

    def _update(self, idx, cost, gpu, use, node, usable) -> None:
        """New per-context coefficients for columns already in the LP, each held to the share of its bucket's
        contexts that may take it (`usable`)."""
        provisioned = self.inputs.settings.mode == "provisioned"
        self.is_exact[idx] = True
        n_b = self.rep.count[self.b[idx]].astype(float)
        for j, i in enumerate(idx):
            col = int(self.col_of[i])
            self.highs.changeColBounds(col, 0.0, float(min(usable[j], 1.0)))
            if not usable[j]:
                continue
            self.cost[i], self.gpu[i], self.use[i], self.node[i] = cost[j], gpu[j], use[j], node[j]
            self.highs.changeColCost(col, float(n_b[j] * cost[j]))
            if provisioned:
                first = self.cap_row + (self.g[i] * 2 + self.c[i]) * 6
                self.highs.changeCoeff(int(first + GPU), col, float(n_b[j] * gpu[j]))
                if self.r[i] >= 0:
                    self.highs.changeCoeff(int(first + self.r[i]), col, float(n_b[j] * use[j]))
            if node[j] > 0:
                self.highs.changeCoeff(int(self.node_row + self.t[i]), col, float(n_b[j] * node[j]))

    def alone(self, rounds: int = 12) -> list[np.ndarray]:
        """The fleets of a single pool that alone serves every bucket (and the background), cheapest first,
        screened without the LP: each bucket on its cheapest option with the pool's resources priced at shares
        of the instance's price, then as many whole instances as the busiest resource needs; the best of a few
        rounds. The shares start equal over the pool's resources and move halfway, each round, to how much of
        each the last round needed (starting from GPU time alone, a pool with an HBM cache put every context in
        it for free and screened ten times too dear: 10,000 bench contexts fit one g6e.4xlarge that way). Each
        fleet has the instances its busiest resource fills whole: the LP that scores it adds what it lacks.
        Rounding the LP misses these fleets where the LP spreads small fractions over large instances (at
        50,000 bench contexts it used 8% of a p5en.48xlarge, where one g6e.12xlarge serves them all)."""
        F, st = self.inputs.fleet, self.inputs.settings
        G, B = len(F.names), len(self.rep.count)
        cap = capacities(F)
        price = np.nan_to_num(F.price) * st.hours_per_month
        counts = self.rep.count.astype(float)
        needed = np.flatnonzero(np.bincount(self.b, minlength=B) > 0)
        pool = self.g * 2 + self.c
        found = []
        for p in np.unique(pool):
            g, c = divmod(int(p), 2)
            background = [load for bg_g, bg_c, _, load in self.bg if (bg_g, bg_c) == (g, c)]
            if self.bg and not background:
                continue
            on = np.flatnonzero(pool == p)
            amount = np.zeros((len(on), 6))
            amount[:, GPU] = self.gpu[on]
            r = self.r[on]
            amount[r >= 0, r[r >= 0]] = self.use[on][r >= 0]
            share = (cap[g, c] > 0) / max(int((cap[g, c] > 0).sum()), 1)
            best = None
            for _ in range(rounds):
                with np.errstate(divide="ignore", invalid="ignore"):
                    unit = np.where(cap[g, c] > 0, price[g] * share / cap[g, c], 0.0)
                rc = self.cost[on] + amount @ unit
                order = np.lexsort((rc, self.b[on]))
                first = order[np.r_[True, self.b[on][order][1:] != self.b[on][order][:-1]]]
                if not np.array_equal(self.b[on][first], needed):
                    break  # some bucket has no option on this pool
                use = counts[self.b[on][first]] @ amount[first]
                use[GPU] += min(background, default=0.0)
                with np.errstate(divide="ignore", invalid="ignore"):
                    need = np.nan_to_num(np.where(use > 0, use / cap[g, c], 0.0), nan=np.inf, posinf=np.inf)
                n = max(float(np.ceil(need.max() * (1 + 1e-9))), 1.0)
                estimate = price[g] * n + float(np.dot(counts[self.b[on][first]], self.cost[on][first]))
                if np.isfinite(n) and n <= F.max_instances[g] and (best is None or estimate < best[0]):
                    best = (estimate, max(float(np.floor(need.max())), 1.0))
                if not np.isfinite(need).all() or need.sum() <= 0:
                    break
                share = (share + need / need.sum()) / 2
            if best is not None:
                fleet = np.zeros((G, 2))
                fleet[g, c] = best[1]
                found.append((best[0], int(p), fleet))
        return [fleet for _, _, fleet in sorted(found, key=lambda item: item[:2])]

    def cut(self, prices: Prices, open_pools: np.ndarray | None = None) -> float:
        """The buckets' Lagrangian at `prices` (over the open pools alone, if given): a cut for the master
        over the buckets, which proposes fleets (not a bound: buckets only approximate their contexts)."""
        on = np.ones(len(self.b), bool) if open_pools is None else open_pools.ravel()[self.g * 2 + self.c]
        best = np.full(len(self.rep.count), np.inf)
        np.minimum.at(best, self.b[on], self.reduced(prices)[on])
        has = np.bincount(self.b, minlength=len(self.rep.count)) > 0
        value = float(np.dot(self.rep.count[has], best[has]))
        if self.bg:
            bg = [cost + prices.pool[g, c, GPU] * load for g, c, cost, load in self.bg
                  if open_pools is None or open_pools[g, c]]
            value += min(bg, default=np.inf)
        return value

    def covers(self) -> np.ndarray:
        """The distinct sets of pools that can serve a bucket."""
        reach = np.zeros((len(self.rep.count), len(self.inputs.fleet.names) * 2), bool)
        reach[self.b, self.g * 2 + self.c] = True
        return np.unique(reach[reach.any(axis=1)], axis=0)

    def designated(self, shares: np.ndarray, of_class: np.ndarray, count: np.ndarray) -> np.ndarray:
        """Per class: the (pool, group of tiers) the LP gives its bucket, coded pool * groups + group. A bucket
        the LP splits is split over its classes in the same proportions (by count, in class order)."""
        used = np.flatnonzero(shares > 1e-9)
        if len(used) == 0:  # (the LP places nothing: a workload whose contexts cost nothing anywhere)
            return np.full(len(of_class), -1, np.int64)
        used = used[np.lexsort((-shares[used], self.b[used]))]          # by bucket, largest share first
        code = (self.g[used] * 2 + self.c[used]) * (self.group.max() + 1) + self.group[self.t[used]]
        total = np.bincount(self.b[used], shares[used], len(self.rep.count))
        cum = np.cumsum(shares[used])
        start = np.r_[0.0, cum[:-1]] - np.r_[0.0, cum][np.searchsorted(self.b[used], self.b[used])]
        ends = (start + shares[used]) / np.maximum(total[self.b[used]], 1e-12)   # cumulative share in bucket
        order = np.lexsort((np.arange(len(of_class)), of_class))
        position = np.cumsum(count[order]) - count[order] / 2.0               # midpoint of each class
        bucket_total = np.bincount(of_class, count, len(self.rep.count))
        before = np.r_[0.0, np.cumsum(bucket_total)[:-1]]
        fraction = np.empty(len(of_class))
        fraction[order] = (position - before[of_class[order]]) / np.maximum(bucket_total[of_class[order]], 1)
        # the first column of the class's bucket whose cumulative share reaches the class's position
        key = self.b[used] + np.minimum(ends, 1.0)
        pick = np.searchsorted(key, of_class + np.minimum(fraction, 1.0 - 1e-12))
        pick = np.minimum(pick, len(used) - 1)
        out = np.where(self.b[used][pick] == of_class, code[pick], -1)
        return out

    def solve(self, fleet: np.ndarray | None, initial: Prices, rounds: int = 60) -> LPSolution:
        """Prices (the LP's row duals), instances per pool (G, 2), and the LP's optimum. With `fleet` (G, 2)
        the pools have those instances, and more at twice the price: on the open pools alone where that serves
        every bucket, else on every pool."""
        G2 = len(self.inputs.fleet.names) * 2
        if fleet is None:
            return self._solve(np.zeros(G2), np.full(G2, np.inf), np.zeros(G2, bool), initial, rounds)
        result = self._solve(fleet.ravel(), fleet.ravel(), fleet.ravel() > 0, initial, rounds, fleet=fleet)
        if result is not None:
            return result
        return self._solve(fleet.ravel(), fleet.ravel(), np.ones(G2, bool), initial, rounds, fleet=fleet)

    def box(self, lower: np.ndarray, upper: np.ndarray, initial: Prices, rounds: int = 60) -> LPSolution | None:
        """The LP relaxation with each offering's instances (both HBM states together) between `lower` and
        `upper` (G,), no extras: a node of the branch-and-bound over fleets. None where it has no solution."""
        G2 = lower.size * 2
        return self._solve(np.zeros(G2), np.repeat(np.where(upper > 0, np.inf, 0.0), 2), np.zeros(G2, bool),
                           initial, rounds, instances=(lower, upper))

    def _solve(self, own_lower, own_upper, extra_open, initial, rounds, fleet=None, instances=None):
        if self.highs is None:
            self._start(initial)
        F = self.inputs.fleet
        G = len(F.names)
        own, extra = self.pool_cols
        self._bounds(own, own_lower, own_upper)
        self._bounds(extra, np.zeros(G * 2), np.where(extra_open, np.inf, 0.0))
        lower, upper = instances if instances is not None else (np.full(G, -np.inf), F.max_instances)
        self.highs.changeRowsBounds(G, (self.instance_row + np.arange(G)).astype(np.int32),
                                    np.asarray(lower, float), np.asarray(upper, float))
        opened = (own_upper > 0) | extra_open
        if not opened.all():  # buckets with no option on the pools that may open get all of theirs there
            on_open = opened[self.g * 2 + self.c]
            covered = np.zeros(len(self.rep.count), bool)
            covered[self.b[self.active & on_open]] = True
            self._add(np.flatnonzero(~self.active & on_open & ~covered[self.b]))
        counts = self.rep.count.astype(float)
        B = len(counts)
        for round_ in range(rounds):
            self.highs.run()
            if self.highs.getModelStatus() != self._optimal:
                return None
            solution = self.highs.getSolution()
            duals = np.array(solution.row_dual)
            x = np.array(solution.col_value)
            objective = self.highs.getInfo().objective_function_value
            prices = Prices(np.maximum(-duals[self.cap_row:self.instance_row].reshape(G, 2, 6), 0.0),
                            np.maximum(-duals[self.node_row:], 0.0))
            rc = self.reduced(prices) * counts[self.b] - duals[:B][self.b]
            entering = ~self.active & (rc < -1e-9 * max(abs(objective), 1.0) / max(B, 1))
            if not entering.any() or round_ == rounds - 1:  # a last round's duals are still valid prices
                break
            idx = np.flatnonzero(entering)
            idx = idx[np.lexsort((rc[idx], self.b[idx]))]
            rank = np.arange(len(idx)) - np.searchsorted(self.b[idx], self.b[idx])
            self._add(idx[rank < 3])  # up to three most negative columns per bucket
        F, st = self.inputs.fleet, self.inputs.settings
        extras = x[extra].reshape(G, 2)
        pools = x[own].reshape(G, 2) + extras
        price = np.nan_to_num(F.price)[:, None] * st.hours_per_month
        # what the fleet would cost with the extras bought whole at the normal price
        if fleet is None:  # every pool rounded up
            estimate = float(objective + np.sum(price * (np.ceil(pools - 1e-9) - pools)))
        else:  # the extras bought whole at the normal price
            estimate = float(objective - np.sum(2 * price * extras) + np.sum(price * np.ceil(extras - 1e-9)))
        shares = np.zeros(len(self.b))
        on = self.col_of >= 0
        shares[on] = x[self.col_of[on]]
        return LPSolution(prices, pools, float(objective), estimate, shares)

    def _bounds(self, cols: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> None:
        self.highs.changeColsBounds(len(cols), cols.astype(np.int32), lower, upper)

    def _base(self) -> tuple[_Program, np.ndarray, np.ndarray]:
        """The LP's rows and its fleet, node and background columns (no bucket options yet). Pool columns:
        `own` instances (cost price·H) and `extra` instances (twice that), both held at 0 until solve()."""
        F, tiers, st = self.inputs.fleet, self.inputs.tiers, self.inputs.settings
        G, T, B = len(F.names), len(tiers.names), len(self.rep.count)
        provisioned = st.mode == "provisioned"
        self.cap_row = B + 1
        self.instance_row = self.cap_row + G * 12
        self.node_row = self.instance_row + G
        prog = _Program(self.node_row + T)
        # a bucket whose representative has no option (its classes may still have some) is left out
        prog.row_lower[:B] = prog.row_upper[:B] = np.bincount(self.b, minlength=B) > 0
        if self.bg:
            prog.row_lower[B] = prog.row_upper[B] = 1.0
        prog.row_upper[self.cap_row:] = 0.0
        prog.row_upper[self.instance_row:self.node_row] = F.max_instances
        cap = capacities(F)
        price = np.nan_to_num(F.price) * st.hours_per_month
        pools = [(g, c) for g in range(G) for c in (0, 1)]
        own = prog.columns([price[g] for g, _ in pools], 0.0, 0.0)
        extra = prog.columns([2 * price[g] for g, _ in pools], 0.0, 0.0)
        if provisioned:
            for cols in (own, extra):
                for (g, c), col in zip(pools, cols):
                    if F.serves[g] and c in self.states:
                        prog.coefficients(self.cap_row + (g * 2 + c) * 6 + np.arange(6), col, -cap[g, c])
                        prog.coefficients(self.instance_row + g, col, 1.0)
        for nt in np.flatnonzero(np.isfinite(tiers.node_gb)):
            col = prog.columns([tiers.node_price_per_hour[nt] * st.hours_per_month], 0.0, np.inf)
            prog.coefficients(self.node_row + nt, col, -tiers.node_gb[nt])
        for bg_g, bg_c, cost, load in self.bg:
            col = prog.columns([cost], 0.0, 1.0)
            prog.coefficients(B, col, 1.0)
            if provisioned:
                prog.coefficients(self.cap_row + (bg_g * 2 + bg_c) * 6 + GPU, col, load)
        return prog, own, extra

    def _start(self, initial: Prices) -> None:
        """The LP in HiGHS, with each bucket's three cheapest options at the initial prices."""
        prog, own, extra = self._base()
        self.pool_cols = (own, extra)
        self.highs = prog.highs()
        counts = self.rep.count.astype(float)
        rc = self.reduced(initial) * counts[self.b]
        order = np.lexsort((rc, self.b))
        rank = np.arange(len(order)) - np.searchsorted(self.b[order], self.b[order])
        self._add(order[rank < 3])

    def _entries(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Tabulated columns as (cost, rows (n, k), values (n, k), kept (n, k)): their coefficients."""
        provisioned = self.inputs.settings.mode == "provisioned"
        n_b = self.rep.count[self.b[idx]].astype(float)
        rows, values = [self.b[idx]], [np.ones(len(idx))]
        if provisioned:
            first = self.cap_row + (self.g[idx] * 2 + self.c[idx]) * 6
            rows.append(first + GPU)
            values.append(n_b * self.gpu[idx])
            r = self.r[idx]
            rows.append(np.where(r >= 0, first + np.maximum(r, 0), -1))
            values.append(np.where(r >= 0, n_b * self.use[idx], 0.0))
        rows.append(np.where(self.node[idx] > 0, self.node_row + self.t[idx], -1))
        values.append(n_b * self.node[idx])
        rows, values = np.column_stack(rows), np.column_stack(values)
        return n_b * self.cost[idx], rows, values, (rows >= 0) & (values != 0)

    def _add(self, idx: np.ndarray) -> None:
        """Add tabulated columns to the LP."""
        idx = np.sort(idx)
        self.active[idx] = True
        self.col_of[idx] = self.highs.getNumCol() + np.arange(len(idx))
        cost, rows, values, keep = self._entries(idx)
        counts = keep.sum(axis=1)
        starts = np.r_[0, np.cumsum(counts)[:-1]].astype(np.int32)
        self.highs.addCols(len(idx), cost, np.zeros(len(idx)), np.ones(len(idx)),
                           int(counts.sum()), starts, rows[keep].astype(np.int32), values[keep])


def bucket_lp(inputs: Inputs, demand: Demand, background: Demand, states: tuple[int, ...],
              allowed: np.ndarray | None, limit: int | None = None) -> tuple[BucketLP, np.ndarray, Prices]:
    """The LP over at most `limit` (MAX_BUCKETS) buckets of `demand`, each class's bucket, and first prices for its
    column generation (each GPU-second at its instance's price)."""
    F, st = inputs.fleet, inputs.settings
    rep, of_class = buckets(demand, limit)
    bucket_allowed = None
    if allowed is not None:  # a bucket may use a tier only where all its classes may
        bucket_allowed = np.ones((len(rep.count), allowed.shape[1]), bool)
        np.logical_and.at(bucket_allowed, of_class, allowed)
    initial = Prices.zero(len(F.names), len(inputs.tiers.names))
    with np.errstate(divide="ignore", invalid="ignore"):
        initial.pool[:, :, GPU] = np.nan_to_num(F.price * st.hours_per_month / F.gpu_capacity)[:, None]
    return BucketLP(inputs, rep, background, states, bucket_allowed), of_class, initial


# --- step 2: the bound (Lagrangian cuts and a master over the fleet) -----------------------------------------------

@dataclass(frozen=True)
class Scan:
    value: float               # Σ_i min_o (c_io + π·u_io) + the background's: the cut's constant
    open_value: float          # the same over the open pools alone (inf where they cannot serve everything)
    best_id: np.ndarray        # per class: its cheapest option over every pool (-1: none allowed)
    cand_rc: np.ndarray        # (K, CANDIDATES): cheapest options on the plan's pools, ascending
    cand_id: np.ndarray        # their codes (g * 2 + c) * T + t, -1 where none
    designated: np.ndarray     # per class: its bucket's choice in the LP, on this class (-1: none or not allowed)
    open: np.ndarray           # (G, 2) the pools open_value is over
    also: list                 # the Lagrangian value at each of the other prices asked for
    background_ids: np.ndarray  # background options on the plan's pools: codes
    covers: np.ndarray         # (patterns, G * 2) bool: the distinct sets of pools that can serve a class


def scan(inputs: Inputs, demand: Demand, background: Demand, prices: Prices, states: tuple[int, ...],
         pools: np.ndarray, allowed: np.ndarray | None, keep: int | None = None,
         open_pools: np.ndarray | None = None, designated: np.ndarray | None = None,
         also: tuple[tuple[Prices, np.ndarray | None], ...] = (), fac: Factored | None = None) -> Scan:
    """One pass over every class and option at `prices`: the Lagrangian value (over every pool), and the
    `keep` cheapest options of each class on the pools the plan may use (`pools`: (G, 2) bool); and the
    Lagrangian value at each of `also`'s (prices, pools) (see `lagrangians`)."""
    F, T = inputs.fleet, len(inputs.tiers.names)
    K = len(demand.count)
    fac = Factored(inputs, demand) if fac is None else fac  # (the caller's, where it scans the same classes again)
    groups = _tier_groups(inputs)
    if keep is None:  # as many options per class as the final MIP can take for its free classes
        keep = max(CANDIDATES, MIP_COLUMNS // max(min(K, FREE_CONTEXTS), 1))
    keep = max(2, min(keep, int(pools.sum()) * len(groups)))
    base = fac.direct + fac.node_gb * prices.node
    open_pools = np.zeros((len(F.names), 2), bool) if open_pools is None else open_pools
    designated_id = np.full(K, -1, np.int64)
    beside = ThreadPoolExecutor(1)  # the other prices' values on a second core (numpy releases the GIL)
    others = beside.submit(lagrangians, inputs, demand, background, also, states, allowed, fac)
    best, best_id, open_best = np.full(K, np.inf), np.full(K, -1, np.int64), np.full(K, np.inf)
    cand_rc, cand_id = np.full((K, keep), np.inf), np.full((K, keep), -1, np.int64)
    reach = np.zeros((K, len(F.names) * 2), bool)
    for g in range(len(F.names)):
        on = fac.offering(g)
        if on is None:
            continue
        for c in states:
            rc = reduced_costs(fac, pool_terms(on, c, allowed), prices, base)
            code = (g * 2 + c) * T
            low = rc.min(axis=1)
            reach[:, g * 2 + c] = np.isfinite(low)
            if open_pools[g, c]:
                np.minimum(open_best, low, out=open_best)
            better = np.flatnonzero(low < best)  # (fewer with every pool: their argmin only)
            best[better], best_id[better] = low[better], code + rc[better].argmin(axis=1)
            if not pools[g, c]:
                continue
            pick = _group_best(rc, groups)
            if designated is not None:
                mine = np.flatnonzero(designated // len(groups) == g * 2 + c)
                chosen = pick[mine, designated[mine] % len(groups)]
                ok = np.isfinite(rc[mine, chosen])
                designated_id[mine[ok]] = code + chosen[ok]
            cand_rc, cand_id = _merge(cand_rc, cand_id, rc, pick, code)
    cand_rc, cand_id = _ascending(cand_rc, cand_id)
    best_id[~np.isfinite(best)] = -1

    value = float(np.dot(demand.count, best))
    open_value = float(np.dot(demand.count, open_best)) if open_pools.any() else np.inf
    bg_ids = np.zeros(0, np.int64)
    if len(background.count):
        bfac = Factored(inputs, background)
        bbase = bfac.direct + bfac.node_gb * prices.node
        costs, ids, open_costs = [np.inf], [], [np.inf]
        bg_reach = np.zeros((1, len(F.names) * 2), bool)
        for g in range(len(F.names)):
            on = bfac.offering(g)
            for c in states if on is not None else ():
                rc = reduced_costs(bfac, pool_terms(on, c, None), prices, bbase)[0, RECOMPUTE]
                if np.isfinite(rc):
                    costs.append(rc)
                    bg_reach[0, g * 2 + c] = True
                    if open_pools[g, c]:
                        open_costs.append(rc)
                    if pools[g, c]:
                        ids.append((g * 2 + c) * T + RECOMPUTE)
        value += min(costs)
        open_value += min(open_costs)
        bg_ids = np.array(ids, np.int64)
        reach = np.vstack([reach, bg_reach])
    reach = reach[reach.any(axis=1)]
    packed = np.ascontiguousarray(np.packbits(reach, axis=1))
    _, first = np.unique(packed.view(np.dtype((np.void, packed.shape[1]))).ravel(), return_index=True)
    covers = reach[np.sort(first)]
    also_values = others.result()
    beside.shutdown()
    return Scan(value, open_value, best_id, cand_rc, cand_id, designated_id, open_pools, also_values, bg_ids,
                covers)


def _group_best(rc: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    """Per class, a pool's cheapest tier of each group of tiers (e.g. recompute, host memory, object storage):
    within a group on one pool only the cheapest is worth having."""
    return np.column_stack([group[rc[:, group].argmin(axis=1)] for group in groups])


def _merge(cand_rc: np.ndarray, cand_id: np.ndarray, rc: np.ndarray, pick: np.ndarray,
           code: int) -> tuple[np.ndarray, np.ndarray]:
    """The candidates (K, keep) merged with a pool's picks (its reduced costs `rc`, option codes code + tier):
    the `keep` cheapest of both, unordered."""
    keep = cand_rc.shape[1]
    merged_rc = np.column_stack([cand_rc, np.take_along_axis(rc, pick, axis=1)])
    merged_id = np.column_stack([cand_id, code + pick])
    top = np.argpartition(merged_rc, keep - 1, axis=1)[:, :keep]
    return np.take_along_axis(merged_rc, top, axis=1), np.take_along_axis(merged_id, top, axis=1)


def _ascending(cand_rc: np.ndarray, cand_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Candidates cheapest first (ties by code), -1 where none."""
    order = np.lexsort((cand_id, cand_rc), axis=1)
    cand_rc, cand_id = np.take_along_axis(cand_rc, order, axis=1), np.take_along_axis(cand_id, order, axis=1)
    cand_id[~np.isfinite(cand_rc)] = -1
    return cand_rc, cand_id


def _repriced(fac: Factored, ons: dict, hbm_state: np.ndarray, prices: Prices, chosen: np.ndarray, T: int,
              keep: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """At `prices`, over the planned offerings (`ons`: offering -> its options, each in its HBM state): each
    class's excess over its cheapest option where it is on `chosen` (per context; inf off those pools), and
    its `keep` cheapest options (reduced costs, codes; ascending)."""
    K = len(chosen)
    g_k, _, t_k = decode(chosen, T)
    current = np.full(K, np.inf)
    groups = _tier_groups(fac.inputs)
    cand_rc, cand_id = [], []  # the planned pools are few: every pick, then the `keep` cheapest at once
    base = fac.direct + fac.node_gb * prices.node
    for g, on in ons.items():
        c = int(hbm_state[g])
        rc = reduced_costs(fac, pool_terms(on, c, allowed), prices, base)
        mine = np.flatnonzero(g_k == g)
        current[mine] = rc[mine, t_k[mine]]
        pick = _group_best(rc, groups)
        cand_rc.append(np.take_along_axis(rc, pick, axis=1))
        cand_id.append((g * 2 + c) * T + pick)
    cand_rc, cand_id = np.column_stack(cand_rc), np.column_stack(cand_id)
    if cand_rc.shape[1] > keep:
        top = np.argpartition(cand_rc, keep - 1, axis=1)[:, :keep]
        cand_rc, cand_id = np.take_along_axis(cand_rc, top, axis=1), np.take_along_axis(cand_id, top, axis=1)
    short = keep - cand_rc.shape[1]
    cand_rc = np.pad(cand_rc, ((0, 0), (0, max(short, 0))), constant_values=np.inf)
    cand_id = np.pad(cand_id, ((0, 0), (0, max(short, 0))), constant_values=-1)
    cand_rc, cand_id = _ascending(cand_rc, cand_id)
    with np.errstate(invalid="ignore"):
        return current - cand_rc[:, 0], cand_rc, cand_id


def lagrangians(inputs: Inputs, demand: Demand, background: Demand,
                vectors: tuple[tuple[Prices, np.ndarray | None], ...], states: tuple[int, ...],
                allowed: np.ndarray | None, fac: Factored | None = None) -> list[float]:
    """L(π) = Σ_i min_o (c_io + π·u_io) + the background's cheapest option, for each (π, pools): over the
    pools (G, 2) bool given (None: every pool)."""
    if not vectors:
        return []
    F = inputs.fleet
    fac = Factored(inputs, demand) if fac is None else fac
    best = [np.full(len(demand.count), np.inf) for _ in vectors]
    bases = [fac.direct + fac.node_gb * prices.node for prices, _ in vectors]
    for g in range(len(F.names)):
        on = fac.offering(g)
        for c in states if on is not None else ():
            terms = pool_terms(on, c, allowed)  # once for every price
            for j, (prices, pools) in enumerate(vectors):
                if pools is None or pools[g, c]:
                    np.minimum(best[j], reduced_costs(fac, terms, prices, bases[j]).min(axis=1), out=best[j])
    values = [float(np.dot(demand.count, b)) for b in best]
    if len(background.count):
        bfac = Factored(inputs, background)
        for j, (prices, pools) in enumerate(vectors):
            base = bfac.direct + bfac.node_gb * prices.node
            values[j] += min([np.inf] + [
                reduced_costs(bfac, pool_terms(on, c, None), prices, base)[0, RECOMPUTE]
                for on in filter(None, (bfac.offering(g) for g in range(len(F.names)))) for c in states
                if pools is None or pools[on.g, c]])
    return values


@dataclass(frozen=True)
class Cut:
    """θ >= value − worth·n − node_worth·m: for a fixed fleet the placement costs at least the Lagrangian at
    any prices. With `open` (G * 2 bool), the value was taken over those pools alone, so the cut holds only for
    fleets that open no other pool (it is lifted by `value` per other pool opened)."""
    value: float
    worth: np.ndarray
    node_worth: np.ndarray
    open: np.ndarray | None = None
    prices: Prices | None = None   # (where an ascent may start from them)

    @staticmethod
    def at(value: float, prices: Prices, inputs: Inputs, open_pools: np.ndarray | None = None) -> Cut:
        """The cut of a Lagrangian value taken at `prices` (over `open_pools` (G, 2) alone, where given)."""
        return Cut(value, *prices.worth(inputs.fleet, inputs.tiers),
                   None if open_pools is None else open_pools.ravel(), prices)


def master(inputs: Inputs, cuts: list[Cut], covers: np.ndarray, states: tuple[int, ...],
           time_limit: float | None, box: tuple[np.ndarray, np.ndarray] | None = None, cap: float = np.inf
           ) -> tuple[float, np.ndarray, np.ndarray]:
    """min Σ price·H·n + Σ node price·H·m + θ over integer pools n (G, 2) and nodes m, with θ >= 0, the cuts,
    and Σ_{p in S} n_p >= 1 for every set S of pools that alone can serve some class (a class is served by an
    instance). Every plan satisfies all of these, so the minimum is a lower bound on every plan. Returns the
    bound and the (n, m) that attains it. With `box` (lower, upper per offering), over the fleets in it alone
    (inf where none of them meets the covers). With `cap` (a plan's cost), over the fleets that cost less
    (inf where none meets the rest): no plan that beats the one in hand buys more, so the least of `cap` and
    this bound is a bound on every plan (and the cuts' prices need not keep every fleet's bound finite)."""
    F, tiers, st = inputs.fleet, inputs.tiers, inputs.settings
    G, T = len(F.names), len(tiers.names)
    serving = [(g, c) for g in np.flatnonzero(F.serves) for c in states] if st.mode == "provisioned" else []
    code = np.array([g * 2 + c for g, c in serving], np.int64)
    node_t = np.flatnonzero(np.isfinite(tiers.node_gb))
    covers = list(covers) if serving else []
    finite = [cut for cut in cuts if np.isfinite(cut.value)]
    for cut in cuts:  # no plan on these pools alone: open another
        if not np.isfinite(cut.value) and cut.open is not None:
            covers.append(~cut.open)
    lifted = any(cut.open is not None for cut in finite) and len(serving) > 0
    n_cuts, n_covers, n_links = len(finite), len(covers), (2 * len(serving) if lifted else 0)
    prog = _Program(n_cuts + G + n_covers + n_links + 1)
    prog.row_upper[-1] = cap
    prog.row_lower[:n_cuts] = [cut.value for cut in finite]
    prog.row_upper[n_cuts:n_cuts + G] = F.max_instances
    if box is not None:
        prog.row_lower[n_cuts:n_cuts + G] = box[0]
        prog.row_upper[n_cuts:n_cuts + G] = np.minimum(F.max_instances, box[1])
    prog.row_lower[n_cuts + G:n_cuts + G + n_covers] = 1.0
    prog.row_upper[n_cuts + G + n_covers:-1] = 0.0
    theta = prog.columns([1.0], 0.0, np.inf)
    prog.coefficients(np.arange(n_cuts), theta, 1.0)
    upper = np.array([F.max_instances[g] for g, _ in serving])
    n = prog.columns([F.price[g] * st.hours_per_month for g, _ in serving], 0.0, upper, integer=True)
    m = prog.columns(tiers.node_price_per_hour[node_t] * st.hours_per_month, 0.0, np.inf, integer=True)
    prog.coefficients(prog.n_rows - 1, n, [F.price[g] * st.hours_per_month for g, _ in serving])
    prog.coefficients(prog.n_rows - 1, m, tiers.node_price_per_hour[node_t] * st.hours_per_month)
    for k, cut in enumerate(finite):
        prog.coefficients(k, n, [cut.worth[g, c] for g, c in serving])
        prog.coefficients(k, m, cut.node_worth[node_t])
    prog.coefficients(n_cuts + np.array([g for g, _ in serving], np.int64), n, 1.0)
    for row, cover in enumerate(covers):
        prog.coefficients(n_cuts + G + row, n[cover[code]], 1.0)
    if lifted:  # y_p = 1 where pool p has an instance
        y = prog.columns(np.zeros(len(serving)), 0.0, 1.0, integer=True)
        first = n_cuts + G + n_covers
        big = np.where(np.isfinite(upper), upper, 1e6)
        prog.coefficients(first + np.arange(len(serving)), n, 1.0)
        prog.coefficients(first + np.arange(len(serving)), y, -big)
        prog.coefficients(first + len(serving) + np.arange(len(serving)), y, 1.0)
        prog.coefficients(first + len(serving) + np.arange(len(serving)), n, -1.0)
        for k, cut in enumerate(finite):
            if cut.open is not None:
                outside = ~cut.open[code]
                prog.coefficients(k, y[outside], cut.value)
    status, x, _, objective, bound = prog.solve(gap=1e-9, time_limit=time_limit)
    pools, nodes = np.zeros((G, 2)), np.zeros(T)
    if x is None:
        return np.inf if status == "infeasible" and (box is not None or cap < np.inf) else -np.inf, pools, nodes
    for (g, c), col in zip(serving, n):
        pools[g, c] = round(x[col])
    nodes[node_t] = np.round(x[m])
    return float(bound), pools, nodes


@dataclass(frozen=True)
class Leaf:
    """A box of fleets, lower <= instances of each offering (both HBM states) <= upper, and prices for its
    bound: its LP's duals (its parent's where its LP has no solution)."""
    lower: np.ndarray
    upper: np.ndarray
    prices: Prices
    objective: float           # the box's LP over coarse buckets (inf: none), which only orders the search


def fleet_tree(inputs: Inputs, demand: Demand, background: Demand, states: tuple[int, ...],
               allowed: np.ndarray | None, target: float, nodes: int = TREE_NODES) -> list[Leaf]:
    """Boxes that together hold every fleet, from a branch-and-bound over the instances of each offering on
    the LP over TREE_BUCKETS buckets (best box first; a box is split at its LP's fractional offering that
    costs most, into <= floor and >= ceil, until `nodes` LPs are solved or every box's LP reaches `target`).
    The LP relaxation spreads fractions of large instances that no plan can buy (50,000 bench contexts:
    8% of a p5en.48xlarge, 9% of a p4de.24xlarge...); each split removes one such fraction. The buckets
    only steer the search: each box is bounded exactly by `tree_bound`."""
    F, st = inputs.fleet, inputs.settings
    G = len(F.names)
    lp, _, initial = bucket_lp(inputs, demand, background, states, allowed, TREE_BUCKETS)
    upper = np.where(F.serves, np.asarray(F.max_instances, float), 0.0)
    root = lp.box(np.zeros(G), upper, initial)
    if root is None:
        return [Leaf(np.zeros(G), upper, initial, np.inf)]
    price = np.nan_to_num(F.price) * st.hours_per_month
    heap = [(root.objective, 0, Leaf(np.zeros(G), upper, root.prices, root.objective), root)]
    leaves, solved = [], 1
    while heap and solved < nodes and heap[0][0] < target:
        _, _, leaf, solution = heapq.heappop(heap)
        v = solution.pools.sum(axis=1)
        fraction = v - np.floor(v + 1e-9)
        split = (fraction > 1e-6) & (fraction < 1 - 1e-6)
        if not split.any():  # an integer fleet: nothing left to split
            leaves.append(leaf)
            continue
        g = int(np.argmax(np.where(split, price * np.minimum(fraction, 1 - fraction), -1.0)))
        for lower, upper in ((leaf.lower, np.where(np.arange(G) == g, np.floor(v), leaf.upper)),
                             (np.where(np.arange(G) == g, np.ceil(v), leaf.lower), leaf.upper)):
            child = lp.box(lower, upper, solution.prices)
            solved += 1
            if child is None:
                leaves.append(Leaf(lower, upper, solution.prices, np.inf))
            else:
                heapq.heappush(heap, (child.objective, solved, Leaf(lower, upper, child.prices, child.objective),
                                      child))
    return leaves + [leaf for _, _, leaf, _ in heap]


def leaf_prices(inputs: Inputs, leaf: Leaf, states: tuple[int, ...]) -> tuple[Prices, np.ndarray | None]:
    """The leaf's prices and the pools (G, 2) its fleets may open (None: all that serve, in the states planned).
    Any prices >= 0 give a valid cut; where an instance is worth more than it costs at them, the box's bound
    stays finite through the master's cap (no plan that beats the one in hand buys more than it costs)."""
    F = inputs.fleet
    pools = (leaf.upper[:, None] > 0) & np.isin([0, 1], states)[None, :]
    serving = F.serves[:, None] & np.isin([0, 1], states)[None, :]
    return leaf.prices, None if (pools == serving).all() else pools


def tree_bound(inputs: Inputs, leaves: list[Leaf], cuts: list[Cut], covers: np.ndarray,
               states: tuple[int, ...], cap: float = np.inf) -> tuple[float, np.ndarray, Leaf | None]:
    """min over the leaves of the master's bound over the fleets in its box (every fleet lies in some leaf,
    so no plan costs less), with the fleet that attains it and its leaf; without leaves, the master's over
    every fleet."""
    if not leaves:
        bound, fleet, _ = master(inputs, cuts, covers, states, None, cap=cap)
        return bound, fleet, None
    bounds = [master(inputs, cuts, covers, states, None, box=(leaf.lower, leaf.upper), cap=cap) for leaf in leaves]
    k = int(np.argmin([b[0] for b in bounds]))
    return bounds[k][0], bounds[k][1], leaves[k]


class OpenColumns:
    """The options of some classes on a few pools, for the Lagrangian over those pools alone at many prices of
    their rows (`coords`: (g, c, r) per pool row priced; `nodes`: node-priced tiers priced). On each pool the
    tiers that price alike (same rows, same GPU load) make one column, holding the cheapest of them that is
    allowed: which one that is does not depend on the prices."""

    def __init__(self, fac: Factored, pools: list[tuple[int, int]], coords: list[tuple[int, int, int]],
                 nodes: np.ndarray, allowed: np.ndarray | None, recompute_only: bool = False):
        self.count = fac.demand.count.astype(float)
        coord = {key: k for k, key in enumerate(coords)}
        node = {t: len(coords) + k for k, t in enumerate(nodes)}
        groups = [np.array([RECOMPUTE])] if recompute_only else _tier_groups(fac.inputs)
        node_priced = np.isfinite(fac.inputs.tiers.node_gb)
        self.const, self.terms = [], []   # per column: direct cost (inf: none allowed); [(coordinate, amount)]
        for g, c in pools:
            terms = pool_terms(fac.offering(g), c, allowed)
            for ts in groups:
                r, t_node, recompute = int(fac.resource[ts[0]]), ts[0] if node_priced[ts[0]] else -1, ts[0] == RECOMPUTE
                const = (fac.direct[:, ts] + terms.blocked[:, ts]).min(axis=1)
                if not np.isfinite(const).any():
                    continue
                amounts = []
                if (g, c, GPU) in coord:
                    amounts.append((coord[g, c, GPU], terms.load[0] if recompute else terms.load[1]))
                if r >= 0 and (g, c, r) in coord:
                    amounts.append((coord[g, c, r], fac.use[:, ts[0]]))  # (the same for every tier of the group)
                if t_node in node:
                    amounts.append((node[t_node], fac.node_gb[:, t_node]))
                self.const.append(const)
                self.terms.append([(k, amount, self.count * amount) for k, amount in amounts])

    def evaluate(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """L at prices x (one per coordinate) over these pools, and what the cheapest options use of each
        coordinate (inf, zeros where some class has no option)."""
        K = len(self.count)
        values = np.empty((K, len(self.const)), order="F")
        for j, (const, terms) in enumerate(zip(self.const, self.terms)):
            column = values[:, j]
            np.copyto(column, const)
            for k, amount, _ in terms:
                if x[k] != 0:
                    column += x[k] * amount
        best = values.min(axis=1) if len(self.const) else np.full(K, np.inf)
        used = np.zeros(len(x))
        if not np.isfinite(best).all():
            return np.inf, used
        left = np.ones(K, bool)   # each class's first cheapest column
        for j, terms in enumerate(self.terms):
            hit = (values[:, j] == best) & left
            left &= ~hit
            for k, _, weighted in terms:
                used[k] += np.dot(weighted, hit)
        return float(np.dot(self.count, best)), used


def ascend(inputs: Inputs, fac: Factored, bfac: Factored | None, allowed: np.ndarray | None, starts: list[Prices],
           pools: np.ndarray, covers: np.ndarray, box: tuple[np.ndarray, np.ndarray] | None, cap: float,
           evals: int) -> Cut | None:
    """A cut for the fleets on the pools S (`pools`, (G, 2) bool: those of the fleet that attains the bound), from
    prices fitted to every context rather than to its bucket's mean. Kelley's method with a trust region (from
    the best of `starts`, at most `evals` exact passes over the contexts) maximises
        h(π) = L_S(π) + min { Σ_p (price_p·H − worth_p(π))·n_p : n on S in `box`, covering, cost <= cap }
    over the prices of S's rows and of the node-priced tiers (these at most a node's price per GB, so that no
    node is worth buying), L_S being the Lagrangian over S's pools alone. At its maximum h is the LP relaxation
    over every context at the best of those fleets (or a mix of them). A bucket's mean context takes one option
    for all its contexts, so the bucket LP's prices fall short of it (1,000,000 bench contexts: $98,629.50 at
    them, $98,924.05 after the ascent, the LP over every context there being $98,933.5). Any prices give a valid
    cut; it holds for fleets that open no pool off S (and is lifted for the others). None where the pools of S
    alone cannot serve every context."""
    F, tiers, st = inputs.fleet, inputs.tiers, inputs.settings
    G, H = len(F.names), st.hours_per_month
    cost = np.nan_to_num(F.price) * H
    S = [(int(g), int(c)) for g, c in zip(*np.nonzero(pools))]
    code = np.array([g * 2 + c for g, c in S])
    cap_pool = capacities(F)
    node_gb = np.nan_to_num(tiers.node_gb)
    coords = [(g, c, r) for g, c in S for r in range(6) if cap_pool[g, c, r] > 0]
    nodes = np.flatnonzero(node_gb > 0)
    upper = np.concatenate([np.full(len(coords), np.inf),
                            tiers.node_price_per_hour[nodes] * H / node_gb[nodes]])
    columns = [OpenColumns(fac, S, coords, nodes, allowed)]
    if bfac is not None:
        columns.append(OpenColumns(bfac, S, coords, nodes, None, recompute_only=True))
    # the fleets on S within the box and the cap, for the inner minimum (a tiny MIP)
    lower_g = np.zeros(G) if box is None else box[0]
    upper_g = np.asarray(F.max_instances, float) if box is None else np.minimum(F.max_instances, box[1])

    def with_x(x: np.ndarray) -> Prices:  # (the prices of pools off S do not matter: the cut is lifted there)
        pool, node = starts[0].pool.copy(), starts[0].node.copy()
        for (g, c, r), value in zip(coords, x):
            pool[g, c, r] = value
        node[nodes] = x[len(coords):]
        return Prices(pool, node)

    def h(x: np.ndarray):
        p = with_x(x)
        value, used = 0.0, np.zeros(len(x))
        for part in columns:
            part_value, part_used = part.evaluate(x)
            if not np.isfinite(part_value):
                return None
            value, used = value + part_value, used + part_used
        worth = p.worth(F, tiers)[0]
        prog = _Program(G + 1 + len(covers))
        n = prog.columns([cost[g] - worth[g, c] for g, c in S], 0.0, [F.max_instances[g] for g, _ in S], True)
        prog.coefficients([g for g, _ in S], n, 1.0)
        prog.row_lower[:G], prog.row_upper[:G] = lower_g, upper_g
        prog.coefficients(G, n, [cost[g] for g, _ in S])
        prog.row_upper[G] = cap
        for row, cover in enumerate(covers):  # (every class needs an instance of a pool that can serve it)
            prog.coefficients(G + 1 + row, n[cover[code]], 1.0)
        prog.row_lower[G + 1:] = 1.0
        _, n_value, _, inner, _ = prog.solve(gap=1e-9)
        if n_value is None:
            return None
        fleet_ = dict(zip(S, np.round(n_value)))
        sub = used - np.concatenate([[cap_pool[g, c, r] * fleet_[g, c] for g, c, r in coords],
                                     np.zeros(len(nodes))])
        return value + inner, value, sub, p

    tried = [(x, h(x)) for x in (np.minimum(np.concatenate([[p.pool[k] for k in coords], p.node[nodes]]), upper)
                                 for p in starts)]
    tried = [(x, value) for x, value in tried if value is not None]
    if not tried:
        return None
    x0, center = max(tried, key=lambda item: item[1][0])
    bundle = [(x, value[0], value[2]) for x, value in tried]
    step = np.maximum(np.abs(x0), 1e-3 * np.concatenate([[cost[g] / cap_pool[g, c, r] for g, c, r in coords],
                                                         upper[len(coords):]]))  # the trust region's unit
    x_c, rho = x0, 0.005   # (the starting prices are near: a small trust region first, doubled on each gain)
    for _ in range(evals - len(starts)):
        prog = _Program(len(bundle))
        theta = prog.columns([-1.0], -np.inf, np.inf)
        x = prog.columns(np.zeros(len(x0)), np.maximum(0.0, x_c - rho * step), np.minimum(upper, x_c + rho * step))
        for k, (x_k, h_k, g_k) in enumerate(bundle):   # θ <= h_k + g_k·(x − x_k)
            prog.coefficients(k, theta, 1.0)
            prog.coefficients(k, x, -g_k)
            prog.row_upper[k] = h_k - float(np.dot(g_k, x_k))
        _, solution, _, objective, _ = prog.solve()
        if solution is None or -objective - center[0] <= 1e-7 * abs(center[0]):
            break
        predicted, x_new = -objective, solution[x]
        trial = h(x_new)
        if trial is None:
            break
        bundle.append((x_new, trial[0], trial[2]))
        if trial[0] >= center[0] + 0.1 * (predicted - center[0]):
            center, x_c, rho = trial, x_new, 2 * rho
            if center[0] >= cap:  # no fleet on S within the box costs less than the plan in hand
                break
        else:
            rho /= 2
    return Cut.at(center[1], center[3], inputs, pools)


def decode(code: np.ndarray, T: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Option codes to (offering, HBM state, tier)."""
    pool, t = np.divmod(np.asarray(code, np.int64), T)
    g, c = np.divmod(pool, 2)
    return g, c, t


# --- step 3: the plan ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Result:
    status: str                # optimal (within gap) | feasible | infeasible | not_solved | unplaceable
    classes: np.ndarray        # per assignment row: class, offering, tier, contexts
    offering: np.ndarray
    tier: np.ndarray
    contexts: np.ndarray
    instances: np.ndarray      # per offering
    hbm_cache: np.ndarray      # per offering
    background_share: np.ndarray  # per offering
    nodes: np.ndarray          # per tier
    objective: float | None
    bound: float | None
    seconds: float
    unplaceable: np.ndarray    # classes with no allowed option
    reason: str = ""


def _uses(inputs: Inputs, o: Options) -> tuple[np.ndarray, np.ndarray]:
    """Per option: (resource of its tier's row, amount used on it)."""
    r = tier_resource(inputs.tiers)[o.t]
    amount = np.where((r == NETWORK) | (r == BLOCK), o.path_gbs, o.stored_gb)
    return r, amount


def place(inputs: Inputs, demand: Demand, background: Demand, s: Scan, hbm_state: np.ndarray,
          planned: np.ndarray, gap: float, time_limit: float | None,
          progress: Callable[[str], None] = lambda message: None, allowed: np.ndarray | None = None,
          fac: Factored | None = None):
    """Decide each class's option and the integer fleet, from `planned` instances per offering. Each class starts on
    its bucket's choice in the LP (else its cheapest option at the prices). First, at the planned fleet, the LP
    over the FIT_CONTEXTS classes least decided (the rest fixed), re-priced by its duals while they show the held
    classes far off their cheapest options (`allowed`: the options allowed, as in `scan`): a basic solution splits
    few classes (at most one per capacity row), and a MIP decides those, the FREE_CONTEXTS least decided and the
    LARGEST_CONTEXTS largest on the rows the LP fills. Where the planned fleet does not fit them, a MIP over the
    FREE_CONTEXTS least decided decides them and the fleet. Returns (status, assignment rows (class, g, t, count),
    n, background share, nodes, objective)."""
    from ..costmodel import evaluate

    F, tiers, st = inputs.fleet, inputs.tiers, inputs.settings
    G, T, K = len(F.names), len(tiers.names), len(demand.count)
    provisioned = st.mode == "provisioned"
    count = demand.count.astype(float)
    cap_g = capacities(F)[np.arange(G), hbm_state]                    # (G, 6) in the chosen states
    node = np.isfinite(tiers.node_gb)
    node_t = np.flatnonzero(node)

    def options(classes, codes):
        g, c, t = decode(codes, T)
        return evaluate(inputs.card, F, tiers, demand, st, classes, g, t, c)

    def load(o: Options, n: np.ndarray) -> np.ndarray:
        """(G, 6) resources used by n contexts on each option."""
        r, amount = _uses(inputs, o)
        out = np.zeros((G, 6))
        np.add.at(out, (o.g, np.full(len(n), GPU)), n * o.gpu_load)
        on = r >= 0
        np.add.at(out, (o.g[on], r[on]), n[on] * amount[on])
        return out

    cand_id = s.cand_id.copy()
    # Each class takes its bucket's choice in the LP (which respects capacities), else its cheapest option.
    chosen = np.where(s.designated >= 0, s.designated, s.cand_id[:, 0])
    o_all = options(np.arange(K), chosen)
    r_all, amount_all = _uses(inputs, o_all)
    use = load(o_all, count)

    # The least decided first: classes without a choice from the LP (prices alone ignore capacity), then on each
    # row those choices overload (buckets only approximate their classes) the classes nearest a tie until the
    # overload is gone, then the classes nearest a tie overall.
    margin = s.cand_rc[:, 1] - s.cand_rc[:, 0] if K else np.zeros(0)
    forced = s.designated < 0
    if provisioned:
        for g, r in zip(*np.nonzero(use > planned[:, None] * cap_g * (1 - 1e-9) + 1e-12)):
            on_row = np.flatnonzero((o_all.g == g) & ((r_all == r) if r != GPU else True) & ~forced)
            amount = count[on_row] * (o_all.gpu_load[on_row] if r == GPU else amount_all[on_row])
            order = np.lexsort((on_row, margin[on_row]))
            need = use[g, r] - planned[g] * cap_g[g, r] * 0.98
            forced[on_row[order[:np.searchsorted(np.cumsum(amount[order]), need) + 1]]] = True
    by_margin = np.lexsort((np.arange(K), margin))
    ranked = np.concatenate([by_margin[forced[by_margin]], by_margin[~forced[by_margin]
                                                                     & np.isfinite(margin[by_margin])]])
    ranked = ranked[s.cand_id[ranked, 0] >= 0]

    def program(fixed: tuple[np.ndarray, np.ndarray, np.ndarray], free: np.ndarray, n_lower: np.ndarray,
                n_upper: np.ndarray, first: np.ndarray = chosen):
        """The program deciding the `free` classes (each over its candidates, and its option in `first`) and
        the fleet, the `fixed` assignment rows (class, option code, contexts) held; with a first plan where
        every free class takes its option in `first`."""
        fixed_k, fixed_code, fixed_n = fixed
        o_fixed = options(fixed_k, fixed_code)
        fixed_use = load(o_fixed, fixed_n)
        fixed_node = np.bincount(o_fixed.t, fixed_n * o_fixed.stored_gb * node[o_fixed.t], T)
        offset = float(np.dot(fixed_n, o_fixed.direct_usd))
        candidates = np.column_stack([cand_id[free], np.where(np.any(cand_id[free] == first[free, None],
                                                                        axis=1), -1, first[free])])
        fk = np.repeat(free, candidates.shape[1])
        fcode = candidates.ravel()
        fk, fcode = fk[fcode >= 0], fcode[fcode >= 0]
        o_free = options(fk, fcode)
        r_free, amount_free = _uses(inputs, o_free)
        n_bg = len(s.background_ids)
        o_bg = None
        if n_bg:
            bg_g, bg_c, _ = decode(s.background_ids, T)
            o_bg = evaluate(inputs.card, F, tiers, background, st, np.zeros(n_bg, np.int64), bg_g,
                            np.zeros(n_bg, np.int64), bg_c)

        # rows: free classes' assignment, background, capacity (g, r), linking per g, node tiers
        nf = len(free)
        cap_row, link_row, node_row = nf + 1, nf + 1 + G * 6, nf + 1 + G * 7
        prog = _Program(node_row + T)
        slot = np.searchsorted(free, fk)
        prog.row_lower[:nf] = prog.row_upper[:nf] = demand.count[free]
        if n_bg:
            prog.row_lower[nf] = prog.row_upper[nf] = 1.0
        prog.row_upper[cap_row:link_row] = -fixed_use.ravel()
        prog.row_upper[link_row:node_row] = 0.0
        prog.row_upper[node_row:] = -fixed_node

        z = prog.columns(o_free.direct_usd, 0.0, demand.count[fk], integer=True)
        prog.coefficients(slot, z, 1.0)
        if provisioned:
            prog.coefficients(cap_row + o_free.g * 6 + GPU, z, o_free.gpu_load)
            on = r_free >= 0
            prog.coefficients(cap_row + o_free.g[on] * 6 + r_free[on], z[on], amount_free[on])
            prog.coefficients(link_row + o_free.g, z, 1.0)
        prog.coefficients(node_row + o_free.t, z, o_free.stored_gb * node[o_free.t])
        x = np.zeros(0, np.int64)
        if n_bg:
            x = prog.columns(o_bg.compute_usd, 0.0, 1.0)
            prog.coefficients(nf, x, 1.0)
            if provisioned:
                prog.coefficients(cap_row + o_bg.g * 6 + GPU, x, o_bg.gpu_load)
                prog.coefficients(link_row + o_bg.g, x, 1.0)
        n = np.zeros(0, np.int64)
        lower = np.zeros(G)
        if provisioned:
            used = np.zeros(G, bool)
            used[o_fixed.g] = True
            lower = np.maximum(used.astype(float), n_lower)
            big = np.bincount(o_free.g, demand.count[fk].astype(float), G) + (np.bincount(o_bg.g, minlength=G)
                                                                              if n_bg else 0)
            n = prog.columns(np.nan_to_num(F.price) * st.hours_per_month, lower, n_upper, integer=True)
            prog.coefficients(cap_row + np.arange(G)[:, None] * 6 + np.arange(6)[None, :], n[:, None], -cap_g)
            prog.coefficients(link_row + np.arange(G), n, -np.maximum(big, 1.0))
        m = np.zeros(0, np.int64)
        if len(node_t):
            m = prog.columns(tiers.node_price_per_hour[node_t] * st.hours_per_month, 0.0, np.inf, integer=True)
            prog.coefficients(node_row + node_t, m, -tiers.node_gb[node_t])

        # A first plan for the MIP: every free class on its option in `first`, instances enough for the load.
        start = np.zeros(prog.n_cols)
        pick = np.flatnonzero(fcode == first[fk])
        pick = pick[np.r_[True, fk[pick][1:] != fk[pick][:-1]]] if len(pick) else pick
        start[z[pick]] = demand.count[fk[pick]]
        total = fixed_use + load(o_free.take(pick), start[z[pick]])
        if n_bg:
            start[x[0]] = 1.0
            total[o_bg.g[0], GPU] += o_bg.gpu_load[0]
        if provisioned:
            with np.errstate(divide="ignore", invalid="ignore"):
                need = np.where(total > 1e-12, np.ceil(total / cap_g * (1 + 1e-9)), 0.0)
            start[n] = np.maximum(np.nan_to_num(need, nan=np.inf, posinf=np.inf).max(axis=1), lower)
        node_use = fixed_node + np.bincount(o_free.t[pick], start[z[pick]] * o_free.stored_gb[pick]
                                            * node[o_free.t[pick]], T)
        start[m] = np.ceil(node_use[node_t] / tiers.node_gb[node_t] * (1 + 1e-9))
        usable = len(pick) == len(free) and np.all(np.isfinite(start)) and (
            not provisioned or np.all(start[n] <= n_upper))

        def plan(values: np.ndarray):
            counts = np.round(values[z]).astype(np.int64)
            keep = counts > 0
            classes = np.concatenate([fixed_k, fk[keep]])
            g_all = np.concatenate([o_fixed.g, o_free.g[keep]])
            t_all = np.concatenate([o_fixed.t, o_free.t[keep]])
            c_all = np.concatenate([fixed_n.astype(np.int64), counts[keep]])
            instances = np.round(values[n]).astype(np.int64) if provisioned else np.zeros(G, np.int64)
            share = np.zeros(G)
            if n_bg:
                np.add.at(share, o_bg.g, np.maximum(values[x], 0.0))
                share = share / share.sum() if share.sum() > 0 else share
            nodes = np.zeros(T, np.int64)
            nodes[node_t] = np.round(values[m]).astype(np.int64)
            return classes, g_all, t_all, c_all, instances, share, nodes

        return prog, offset, start if usable else None, z, fk, fcode, o_free, plan

    def held(free: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rest = np.ones(K, bool)
        rest[free] = False
        rest &= chosen >= 0
        return np.flatnonzero(rest), chosen[rest], demand.count[rest]

    limit = time_limit
    max_instances = np.asarray(F.max_instances, dtype=float)
    if provisioned:  # at the planned fleet: the LP, then a MIP over the classes it splits
        # where the classes held leave no room, all are fitted, where they are few enough
        for fitted in [FIT_CONTEXTS] + ([len(ranked)] if FIT_CONTEXTS < len(ranked) <= FIT_ALL_UP_TO else []):
            free = np.sort(ranked[:fitted])
            prog, offset, _, z, fk, fcode, o_fit, _ = program(held(free), free, planned, planned)
            progress(f"fitting {len(free):,} classes to the planned fleet by an LP ({len(z):,} options)")
            status, values, duals, fit_objective, _ = prog.solve(offset=offset, time_limit=limit, relax=True)
            if values is not None:
                break
        # Re-pricing: the LP's duals price the planned fleet's rows better than the buckets did (a bucket's classes
        # all took its choice). At those prices a class held off its cheapest option costs the plan its excess
        # (their sum bounds what the fleet's LP can still gain, but for the few classes it splits); while that is
        # large, the classes furthest off move in the next LP (1,000,000 bench contexts: $99,723.60 -> $99,182.24 on
        # two p5en.48xlarge, where the sum was $7,311).
        ons, rounds, gained = None, 0, np.inf
        while values is not None and rounds < REPRICE_ROUNDS:
            if ons is None:
                fac = Factored(inputs, demand) if fac is None else fac
                ons = {g: fac.offering(g) for g in np.flatnonzero(planned > 0)}
            nf = len(free)
            pool = np.zeros((G, 2, 6))
            pool[np.arange(G), hbm_state] = np.maximum(-duals[nf + 1:nf + 1 + G * 6].reshape(G, 6), 0.0)
            prices = Prices(pool, np.maximum(-duals[nf + 1 + G * 7:], 0.0))
            positive = np.round(values[z]) > 0
            whole = np.abs(values[z] - np.round(values[z])) <= 1e-6
            on = fk[positive]
            split = np.union1d(fk[~whole], on[1:][on[1:] == on[:-1]])  # non-whole, or on two options
            took = whole & positive & ~np.isin(fk, split)
            chosen[fk[took]] = fcode[took]
            excess, rc_k, id_k = _repriced(fac, ons, hbm_state, prices, chosen, T, cand_id.shape[1], allowed)
            excess = excess * count
            excess[split] = np.inf
            off = float(excess[np.isfinite(excess)].sum())
            progress(f"the planned fleet's LP: ${fit_objective:,.2f}; at its prices ${off:,.2f} more than each "
                     f"class's cheapest option")
            if off <= REPRICE_OFF * abs(fit_objective) or gained < REPRICE_GAIN * abs(fit_objective):
                break
            ok = id_k[:, 0] >= 0
            cand_id[ok] = id_k[ok]
            margin = np.where(ok, rc_k[:, 1] - rc_k[:, 0], np.inf)
            ranked = np.lexsort((np.arange(K), margin))
            ranked = ranked[np.isfinite(margin[ranked])]
            last = (free, prog, offset, z, fk, fcode, o_fit, status, values, duals, fit_objective)
            free = np.sort(np.lexsort((np.arange(K), -excess))[:FIT_CONTEXTS])
            prog, offset, _, z, fk, fcode, o_fit, _ = program(held(free), free, planned, planned)
            status, values, duals, fit_objective, _ = prog.solve(offset=offset, time_limit=limit, relax=True)
            if values is None:  # (not seen: the last LP's plan is one of this one's)
                free, prog, offset, z, fk, fcode, o_fit, status, values, duals, fit_objective = last
                break
            gained = last[-1] - fit_objective
            rounds += 1
        if values is not None:
            # the MIP moves the classes the LP splits, the least decided, and the largest on each row the LP
            # fills (whole contexts must fit where the LP packs fractions: held where the LP put them, 997 of
            # 5,000 bench contexts left one g6e.4xlarge no room, and the MIP bought a second)
            whole = np.abs(values[z] - np.round(values[z])) <= 1e-6
            split = np.unique(fk[~whole])
            r_fit, amount_fit = _uses(inputs, o_fit)
            cap_rows = len(free) + 1 + np.arange(G * 6)
            full = (np.abs(duals[cap_rows]) > 1e-9).reshape(G, 6)
            with np.errstate(divide="ignore", invalid="ignore"):  # each context's share of the rows it fills
                room = planned[:, None] * cap_g
                on_full = np.where(full[o_fit.g, GPU], o_fit.gpu_load / room[o_fit.g, GPU], 0.0) + np.where(
                    (r_fit >= 0) & full[o_fit.g, np.maximum(r_fit, 0)],
                    amount_fit / room[o_fit.g, np.maximum(r_fit, 0)], 0.0)
            size = np.zeros(K)
            np.maximum.at(size, fk, np.where(values[z] > 1e-9, np.nan_to_num(on_full), 0.0))
            largest = np.lexsort((np.arange(K), -size))[:LARGEST_CONTEXTS]
            largest = largest[size[largest] > 0]
            shares = np.lexsort((-values[z], fk))
            shares = shares[np.r_[True, fk[shares][1:] != fk[shares][:-1]][:len(shares)]]  # each class's largest
            first = chosen.copy()
            first[fk[shares]] = fcode[shares]
            best = None
            # where whole contexts do not fit the planned fleet as moved, once more with more of them moved (the
            # fleet it buys then is worth its price: at 50,000 bench contexts, 4,162 moved bought a second
            # p5.4xlarge, $10,639.73, unless HiGHS's first heuristic happened on the plan with one, $5,647.92)
            for n_free in (FREE_CONTEXTS, FREE_RETRY):
                moved = np.union1d(np.union1d(split, ranked[:n_free]), largest)
                keep = ~np.isin(fk, moved) & (np.round(values[z]) > 0)
                lp_held = (fk[keep], fcode[keep], np.round(values[z][keep]))
                fixed = tuple(np.concatenate([a, b]) for a, b in zip(held(np.union1d(free, moved)), lp_held))
                prog, offset, start, *_, plan = program(fixed, moved, np.zeros(G), max_instances, first)
                progress(f"final MIP: {len(moved):,} classes free ({len(split):,} split by the LP), the other "
                         f"{K - len(moved):,} fixed")
                status_, x, _, objective, _ = prog.solve(offset=offset, gap=gap, time_limit=limit,
                                                         start=start, max_nodes=PLACE_NODES)
                if x is not None and (best is None or objective < best[1][-1]):
                    best = (status_, (*plan(x), float(objective)))
                if best is None or (best[1][4] <= planned).all() or len(moved) >= len(ranked):
                    break
            if best is not None:
                return best
    free = np.sort(ranked[:FREE_CONTEXTS])
    prog, offset, start, z, *_, plan = program(held(free), free, np.zeros(G), max_instances)
    progress(f"final MIP: {len(free):,} classes free, {len(z):,} options, the other {K - len(free):,} fixed")
    status, values, _, objective, _ = prog.solve(offset=offset, gap=gap, time_limit=limit, start=start,
                                                 max_nodes=PLACE_NODES)
    if values is None:
        return status, None
    return status, (*plan(values), float(objective))


def _serve_lost(inputs: Inputs, demand: Demand, background: Demand, s: Scan, prices: Prices,
                states: tuple[int, ...], hbm: np.ndarray, pools: np.ndarray,
                allowed: np.ndarray | None) -> tuple[Scan, np.ndarray]:
    """Classes (or background) with no option on the open pools get candidates on every offering in its HBM
    state (then on either state, the offering taking the state that class needs)."""
    F, T = inputs.fleet, len(inputs.tiers.names)
    G = len(F.names)
    cand_id, cand_rc, bg_ids = s.cand_id.copy(), s.cand_rc.copy(), s.background_ids
    for attempt in range(2):
        lost = np.flatnonzero(cand_id[:, 0] < 0)
        bg_lost = len(background.count) > 0 and len(bg_ids) == 0
        if len(lost) == 0 and not bg_lost:
            break
        if attempt == 1:  # only the other HBM state serves them: give their best offerings that state
            g, c, _ = decode(s.best_id[lost], T)
            hbm = hbm.copy()
            hbm[g] = c
        wider = np.zeros((G, 2), bool)
        wider[np.arange(G), hbm] = F.serves
        sub = Demand(*(getattr(demand, name)[lost] for name in Demand.__dataclass_fields__))
        extra = scan(inputs, sub, background if bg_lost else _no_background(background), prices, states, wider,
                     None if allowed is None else allowed[lost], keep=cand_id.shape[1])
        cand_id[lost], cand_rc[lost] = extra.cand_id, extra.cand_rc
        if bg_lost:
            bg_ids = extra.background_ids
    return Scan(s.value, s.open_value, s.best_id, cand_rc, cand_id, s.designated, s.open, s.also, bg_ids,
                s.covers), hbm


def _no_background(background: Demand) -> Demand:
    return Demand(*(getattr(background, name)[:0] for name in Demand.__dataclass_fields__))


def solve(inputs: Inputs, demand: Demand, background: Demand, *, states: tuple[int, ...] = (0, 1),
          allowed: np.ndarray | None = None, gap: float = 1e-4, time_limit: float | None = None,
          tree: bool = True, progress: Callable[[str], None] = lambda message: None) -> Result:
    """Plan `demand` (context classes) and `background` with the engine described at the top of this module."""
    clock = time.perf_counter()
    F, tiers, st = inputs.fleet, inputs.tiers, inputs.settings
    G, T, K = len(F.names), len(tiers.names), len(demand.count)
    states = states if st.hbm_cache_possible else (0,)
    provisioned = st.mode == "provisioned"
    zeros = np.zeros(G, np.int64)
    empty = np.zeros(0, np.int64)

    def elapsed() -> float:
        return time.perf_counter() - clock

    def failed(status: str, unplaceable=empty, bound=None, reason: str = "") -> Result:
        return Result(status, empty, empty, empty, empty, zeros, zeros, np.zeros(G), np.zeros(T, np.int64), None,
                      bound, elapsed(), unplaceable, reason)

    lp, of_class, initial = bucket_lp(inputs, demand, background, states, allowed)
    rep = lp.rep
    relaxed = lp.solve(None, initial)
    if relaxed is None:
        return failed("infeasible", reason="no fleet within max_instances serves the load")
    fac = Factored(inputs, demand)  # every pass over the contexts prices the same options
    progress(f"prices from the LP over {len(rep.count):,} buckets of {K:,} context classes "
             f"(${relaxed.objective:,.2f}, {elapsed():.1f} s)")

    def pools_of(fleet: np.ndarray, used: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The pools a plan with this fleet may use (its own, and those its LP added), each offering in one
        HBM state (the one with more instances)."""
        use = fleet + used
        hbm = (use[:, 1] > use[:, 0]).astype(np.int64) if 1 in states else zeros
        pools = np.zeros((G, 2), bool)
        pools[np.arange(G), hbm] = F.serves & (use.sum(axis=1) > 1e-9)
        return hbm, pools

    # Fleets to plan, each scored by the LP over buckets with that fleet (extra instances bought whole).
    fleets: dict[bytes, tuple[float, LPSolution, np.ndarray]] = {}
    screened: list[np.ndarray] = []

    def fleet_cost(fleet: np.ndarray) -> float:
        return float(np.dot(np.nan_to_num(F.price), fleet.sum(axis=1))) * st.hours_per_month

    def consider(fleet: np.ndarray, prices: Prices) -> None:
        if fleet.tobytes() not in fleets:
            solution = lp.solve(fleet, prices)
            if solution is not None:
                fleets[fleet.tobytes()] = (solution.estimate, solution, fleet)

    def complement(fleet: np.ndarray, limit: float, prices: Prices) -> None:
        """Consider `fleet` plus one instance of a pool cheaper than `limit` $/h, for the few the LP relaxation
        uses (cheapest first), then those the single-pool screen ranks best, on offerings the fleet lacks: where
        a fleet falls short, a small instance beside it may cost less than another large one (rag-docs: one
        g6e.16xlarge and one g6e.4xlarge, $7,754.81, where two g6e.16xlarge cost $11,093.57)."""
        g, c = np.nonzero(relaxed.pools > 1e-9)
        pools = [(g[k], c[k]) for k in np.lexsort((c, g, F.price[g]))]
        pools += [tuple(np.argwhere(single)[0]) for single in screened]
        tried = set()
        for g, c in pools:
            if len(tried) == COMPLEMENTS:
                break
            if (g, c) in tried or fleet[g].sum() > 0 or not F.price[g] < limit:
                continue
            tried.add((g, c))
            more = fleet.copy()
            more[g, c] = 1
            consider(more, prices)

    if provisioned:  # the LP's fleet rounded down, plus the instances its LP then buys beside it, twice
        fleet = np.floor(relaxed.pools + 1e-9)
        if fleet.any():  # (where it rounds down to nothing, the fleets that serve alone below are the candidates)
            for _ in range(2):
                consider(fleet, relaxed.prices)
                if fleet.tobytes() not in fleets:
                    break
                extra = fleets[fleet.tobytes()][1].pools - fleet
                fleet = fleet + np.ceil(np.maximum(extra, 0) - 1e-9)
            consider(fleet, relaxed.prices)
        screened = lp.alone()
        for fleet in screened[:ALONE]:
            consider(fleet, relaxed.prices)
    else:
        fleets[np.zeros((G, 2)).tobytes()] = (relaxed.objective, relaxed, np.zeros((G, 2)))

    # More fleets: Kelley's method on the buckets. A master over the integer fleet with the buckets' cuts
    # (and covers) proposes a fleet; the LP with that fleet scores it and gives the next cut; until the master
    # repeats itself. Cheap (no pass over the contexts), and it finds the few large instances that rounding
    # the LP misses.
    if provisioned:
        bucket_cuts = [Cut.at(lp.cut(relaxed.prices), relaxed.prices, inputs)]
        bucket_covers = lp.covers()
        since_best = 0  # fleets tried since the best one
        for round_ in range(MAX_ROUNDS):
            estimate, fleet_ = master(inputs, bucket_cuts, bucket_covers, states, None)[:2]
            best = min(fleets.values(), key=lambda item: item[0])[0] if fleets else np.inf
            if fleet_.tobytes() in fleets or estimate >= best * (1 - gap) or since_best >= 2:
                break
            consider(fleet_, relaxed.prices)
            if fleet_.tobytes() not in fleets:
                break
            progress(f"fleet {len(fleets)}: ${fleets[fleet_.tobytes()][0]:,.2f} by the LP ({elapsed():.1f} s)")
            since_best = 0 if fleets[fleet_.tobytes()][0] < best else since_best + 1
            prices_ = fleets[fleet_.tobytes()][1].prices
            bucket_cuts += [Cut.at(lp.cut(prices_), prices_, inputs),
                            Cut.at(lp.cut(prices_, fleet_ > 0), prices_, inputs, fleet_ > 0)]
        progress(f"{len(fleets)} fleets tried; best ${min(item[0] for item in fleets.values()):,.2f} by the LP "
                 f"({elapsed():.1f} s)")
    # The bound: a master over the integer fleet with exact Lagrangian cuts (a pass over every context each)
    # and covers. Where passes are quick, Kelley's method adds cuts at the master's fleets (each also a fleet
    # to try); otherwise the cuts come from the plan's own pass below.
    cuts: list[Cut] = []
    covers = None
    bound = -np.inf
    rounds = min(MAX_ROUNDS, KELLEY_WORK // max(K, 1)) if provisioned else 0
    if rounds >= 2:
        hbm, pools = pools_of(np.zeros((G, 2)), relaxed.pools)
        s = scan(inputs, demand, background, relaxed.prices, states, pools, allowed, fac=fac)
        if (s.best_id < 0).any() or not np.isfinite(s.value):
            return failed("unplaceable", np.flatnonzero(s.best_id < 0))
        covers = s.covers
        cuts.append(Cut.at(s.value, relaxed.prices, inputs))
        history: list[float] = []
        for round_ in range(rounds - 1):
            bound, fleet, _ = master(inputs, cuts, covers, states, None)
            best = min(fleets.values(), key=lambda item: item[0])[0] if fleets else np.inf
            progress(f"round {round_ + 1}: bound ${bound:,.2f}, best plan ${best:,.2f} by the LP "
                     f"({elapsed():.1f} s)")
            stalled = round_ >= 2 and bound <= history[-2] * (1 + 1e-9)  # no rise in two rounds
            history.append(bound)
            if bound >= best * (1 - gap) or stalled or (time_limit is not None and elapsed() > time_limit / 2):
                break
            consider(fleet, relaxed.prices)
            if fleet.tobytes() not in fleets:
                break
            solution = fleets[fleet.tobytes()][1]
            hbm, pools = pools_of(fleet, solution.pools)
            s = scan(inputs, demand, background, solution.prices, states, pools, allowed, open_pools=fleet > 0,
                     fac=fac)
            new = [Cut.at(s.value, solution.prices, inputs), Cut.at(s.open_value, solution.prices, inputs, s.open)]
            if any(c.value == old.value and (c.open is None) == (old.open is None) for c in new for old in cuts):
                cuts += new
                break
            cuts += new
    best_estimate = min((item[0] for item in fleets.values()), default=np.inf)
    if provisioned and np.isfinite(bound) and bound < best_estimate * (1 - MORE_ALONE_GAP):
        # Far from the bound (where the cuts ran): more fleets of a single pool, of those whose instances cost
        # less than the best fleet (20,000 bench contexts: the best by the LP was one p5.4xlarge, $5,022.40; the
        # 5th single pool, a g6e.8xlarge, with a g6e.xlarge beside it plans at $4,708.44)
        cheaper = [fleet for fleet in screened[ALONE:] if fleet_cost(fleet) < best_estimate]
        for fleet in cheaper[:ALONE]:
            consider(fleet, relaxed.prices)
    if not fleets:
        return failed("infeasible", bound=bound, reason="no fleet within max_instances serves the load")
    # Boxes of fleets for a bound that knows instances come whole, where the cuts leave the bound far below the
    # best fleet and the LP relaxation spends on offerings whose one instance costs more than the gap left (no
    # plan near the best fleet buys one: 50,000 bench contexts, 8% of a p5en.48xlarge; at 20,000 the cuts got
    # to $2,544.05, the boxes to $2,798.38), and where at least two boxes can be checked; the lowest boxes are
    # checked in the plan's pass.
    leaves, checked = [], []
    best_estimate = min(item[0] for item in fleets.values())
    instance = np.nan_to_num(F.price) * st.hours_per_month
    beyond = instance > best_estimate - relaxed.objective
    if (provisioned and tree and 2 * K <= TREE_WORK and bound < best_estimate * (1 - TREE_GAP)
            and np.dot(instance[beyond], relaxed.pools.sum(axis=1)[beyond]) >= TREE_GAP * relaxed.objective):
        leaves = fleet_tree(inputs, demand, background, states, allowed, best_estimate)
        lowest = sorted(leaves, key=lambda leaf: leaf.objective)[:min(TREE_CHECKS, TREE_WORK // K)]
        # the lowest boxes (those that bound the plan, mostly) priced by the LP over the finer buckets: their
        # prices are worth more exactly (50,000 bench contexts: bound $4,871.70 -> $4,983.32 with the lowest;
        # 1,000,000: $98,607.15 -> $98,629.58 with the two there are)
        finer_lp = lp.twin(relaxed.prices)  # (the plan's LP keeps its columns: with these, its choices changed)
        for i in range(min(TREE_FINER, len(lowest))):
            finer = finer_lp.box(lowest[i].lower, lowest[i].upper, lowest[i].prices)
            if finer is not None:
                lowest[i] = Leaf(lowest[i].lower, lowest[i].upper, finer.prices, lowest[i].objective)
        checked = [leaf_prices(inputs, leaf, states) for leaf in lowest]
        progress(f"{len(leaves)} boxes of fleets for the bound ({elapsed():.1f} s)")

    # The plan: the best fleet by the LP; where passes are quick, the next best too (up to PLANNED_FLEETS) while
    # its LP may beat the plans in hand (within PLAN_MARGIN; a fleet the LP fills to the brim may not take whole
    # contexts). Their LPs' prices and each bucket's choice fix most contexts; the cheapest plan wins.
    best, status = None, "not_solved"
    planned_ones: set[bytes] = set()
    tree_cuts: list[Cut] = []
    if provisioned and K <= PLANNED_FLEETS_UP_TO:
        # Fleets whose LP needs less than one instance beyond their own, where one small instance instead could
        # beat the best fleet: the three cheapest such.
        best_estimate = min(item[0] for item in fleets.values())
        smallest = np.nanmin(np.where(F.serves, F.price, np.nan)) * st.hours_per_month
        short = []
        for estimate, solution, fleet in fleets.values():
            lacks = np.maximum(solution.pools - fleet, 0).sum(axis=1)
            bought = float(np.dot(np.nan_to_num(F.price), np.ceil(lacks - 1e-9))) * st.hours_per_month
            if 1e-9 < lacks.sum() <= 1 and estimate - bought + smallest < best_estimate:
                short.append((estimate, fleet.tobytes(), fleet, F.price[lacks > 1e-9].max()))
        for _, _, fleet, limit in sorted(short, key=lambda item: item[:2])[:3]:
            complement(fleet, limit, relaxed.prices)
    while len(planned_ones) < (PLANNED_FLEETS if K <= PLANNED_FLEETS_UP_TO else 1):
        ranked = sorted((item for key, item in fleets.items() if key not in planned_ones),
                        key=lambda item: (item[0], item[2].tobytes()))
        if not ranked or (best is not None and (best[1][-1] * (1 + PLAN_MARGIN) <= ranked[0][0]
                                                or (time_limit is not None and elapsed() > time_limit))):
            break
        estimate, solution, fleet = ranked[0]
        planned_ones.add(fleet.tobytes())
        solution = lp.exact(fleet, solution.prices, demand, of_class, allowed) or solution
        progress(f"the fleet's LP on the buckets' own contexts: ${solution.estimate:,.2f} ({elapsed():.1f} s)")
        hbm, pools = pools_of(fleet, solution.pools)
        s = scan(inputs, demand, background, solution.prices, states, pools, allowed, open_pools=fleet > 0,
                 designated=lp.designated(solution.shares, of_class, demand.count),
                 also=((relaxed.prices, None), *checked), fac=fac)
        if (s.best_id < 0).any() or not np.isfinite(s.value):
            return failed("unplaceable", np.flatnonzero(s.best_id < 0))
        covers = s.covers if covers is None else covers
        cuts += [Cut.at(s.value, solution.prices, inputs), Cut.at(s.also[0], relaxed.prices, inputs)]
        tree_cuts += [Cut.at(value, prices, inputs, opens) for value, (prices, opens) in zip(s.also[1:], checked)]
        checked = []
        if provisioned and fleet.any():
            cuts.append(Cut.at(s.open_value, solution.prices, inputs, s.open))
        progress(f"placing {K:,} context classes on a fleet of ${solution.estimate:,.2f} by the LP "
                 f"({elapsed():.1f} s)")
        s, hbm = _serve_lost(inputs, demand, background, s, solution.prices, states, hbm, pools, allowed)
        planned = fleet + np.ceil(np.maximum(solution.pools - fleet, 0) - 1e-9)   # with its extras bought whole
        status, placed = place(inputs, demand, background, s, hbm, planned.sum(axis=1), gap,
                               max(time_limit - elapsed(), 1.0) if time_limit else None, progress, allowed, fac)
        if placed is not None:
            progress(f"plan ${placed[-1]:,.2f} ({elapsed():.1f} s)")
            if best is None or placed[-1] < best[1][-1]:
                best = (hbm, placed)
        if provisioned and placed is not None and (placed[4] > planned.sum(axis=1)).any():
            # Whole contexts did not fit the fleet as the LP's fractions do (50,000 bench contexts: one
            # p5.4xlarge; with one g6e.xlarge beside it, $6,380.93, where two p5.4xlarge cost $10,045).
            complement(fleet, F.price[placed[4] > planned.sum(axis=1)].max(), solution.prices)
    cap = best[1][-1] if best is not None else np.inf  # the plan in hand: only fleets that cost less matter
    cuts += tree_cuts
    bound, at, leaf = tree_bound(inputs, leaves, cuts, covers, states, cap)
    # Prices fitted to every context at the fleet that attains the bound (in its box), while the work allows:
    # a bucket's mean context takes one option for all its contexts, where each of them takes its own
    tried: set[bytes] = set()
    work = ASCENT_WORK
    bfac = Factored(inputs, background) if len(background.count) else None
    stalled = 0
    while provisioned and best is not None and bound < cap * (1 - gap) and at.any() and stalled < 2:
        # over the fleets of its offerings in either HBM state; then (that LP may mix the states) over its own
        # pools alone (10,000 bench contexts: $2,202.84 on a g6e.4xlarge in either state, where the master had
        # $2,204.84 and the fleet in its own state $2,212.39)
        either = (at.sum(axis=1) > 0)[:, None] & np.isin([0, 1], states)[None, :] & F.serves[:, None]
        box = None if leaf is None else (leaf.lower, leaf.upper)
        in_box = b"" if box is None else box[0].tobytes() + box[1].tobytes()
        pools = next((pools for pools in (either, at > 0)
                      if pools.tobytes() + in_box not in tried and K * int(pools.sum()) * ASCENT_EVALS <= work), None)
        if pools is None or (time_limit is not None and elapsed() > time_limit):
            break
        tried.add(pools.tobytes() + in_box)
        work -= K * int(pools.sum()) * ASCENT_EVALS
        opened = (at > 0).ravel()
        near = sorted((c for c in cuts if c.prices is not None and (c.open is None or not (opened & ~c.open).any())),
                      key=lambda c: c.value - float((c.worth * at).sum()), reverse=True)  # (the cut's θ at `at`)
        cut = ascend(inputs, fac, bfac, allowed, [c.prices for c in near[:ASCENT_STARTS]], pools, covers, box, cap,
                     ASCENT_EVALS)
        if cut is None:
            break
        cuts.append(cut)
        before = bound
        bound, at, leaf = tree_bound(inputs, leaves, cuts, covers, states, cap)
        progress(f"bound ${bound:,.2f} with prices fitted to every context ({elapsed():.1f} s)")
        stalled = 0 if bound > before + gap * (cap - before) else stalled + 1  # (many fleets may share a bound)
    bound = min(bound, cap)
    progress(f"bound ${bound:,.2f} ({elapsed():.1f} s)")
    if best is None:
        return failed(status, bound=bound, reason="no fleet within max_instances serves the load"
                      if status == "infeasible" else "the final MIP found no plan in time")
    hbm, (classes, g, t, counts, instances, share, nodes, objective) = best
    return Result("feasible", classes, g, t, counts, instances, hbm, share, nodes, objective, bound,
                  elapsed(), empty)

"""The scale benchmark (issue #6): plan generated workloads end to end and print one table.

Each run is `kvplan plan WORKLOAD --catalog aws --no-baselines --out DIR` in a fresh process, from reading the
contexts file to the written plan, timed by wall clock, with that process's peak resident memory. The engine
(`--method scale`) runs at every size; the straightforward per-context program (`--method exact`: one integer
variable per context and option, built with PuLP, solved by HiGHS) runs at the sizes named by --baseline, under
--baseline-limit seconds and --baseline-memory GB of address space, by default this machine's memory (where it
runs out, the table says so, with the seconds it ran).

    python bench/run.py                                   # 1k, 10k, 100k, 1M contexts; baseline at 50k
    python bench/run.py --sizes 1000 10000 --baseline 10000 --baseline-limit 300

With --families, the solver benchmark of issue #23 instead (bench/suite.py): each family x size x catalog planned
end to end in a fresh process, results appended as JSON lines, and a Markdown table printed:

    python bench/run.py --families compute storage path mixed examples --sizes 1000 10000 --catalogs aws gcp \
        --timeout 300 --results bench-out.jsonl [--no-baselines] [--compare-exact]
    python bench/run.py --table bench-out.jsonl          # the table of a results file
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# this checkout's planner (in --one mode too), not an installed copy; and bench/ for generate
sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]
from generate import write  # noqa: E402


def one(workload: str, method: str, out: str, limit: float) -> None:
    """Run the CLI in this process and print wall seconds and peak RSS (MB) as JSON (the --one mode)."""
    from planner.cli import main

    clock = time.perf_counter()
    code = 0
    try:
        main(["plan", workload, "--catalog", "aws", "--method", method, "--no-baselines", "--out", out, "--force",
              "--quiet", "--time-limit", str(limit)], standalone_mode=False)
    except SystemExit as exc:
        code = exc.code or 0
    seconds = time.perf_counter() - clock
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    print(json.dumps({"seconds": seconds, "rss_mb": rss, "code": code}), file=sys.stderr)


def measure(workload: Path, method: str, limit: float, memory_gb: float | None = None) -> dict:
    out = workload.parent / f"plan-{method}"

    def cap_memory() -> None:
        if memory_gb is not None:
            resource.setrlimit(resource.RLIMIT_AS, (int(memory_gb * 2**30), int(memory_gb * 2**30)))

    clock = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, __file__, "--one", str(workload), method, str(out), str(limit)],
                              capture_output=True, text=True, timeout=limit + 120, preexec_fn=cap_memory)
    except subprocess.TimeoutExpired:  # (killed; its peak RSS is the largest of this process's children so far)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
        return {"seconds": time.perf_counter() - clock, "note": f"stopped, still running, at {peak:.1f} GB"}
    said = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("{")]
    last = said[-1].strip() if said else "failed"
    if "MemoryError" in done.stderr or "out of memory" in last or done.returncode == -9:  # (-9: the OOM killer)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
        last = f"out of memory at {peak:.1f} GB resident" + (f", {memory_gb:.1f} GB allowed" if memory_gb else "")
    lines = [line for line in done.stderr.splitlines() if line.startswith("{")]
    if not lines:  # the process died without its report
        return {"seconds": time.perf_counter() - clock, "note": last}
    result = json.loads(lines[-1])
    plan_file = out / "plan.json"
    if plan_file.exists() and result["code"] == 0:
        plan = json.loads(plan_file.read_text())
        result.update(total=plan["total_usd"], bound=plan["solver"]["lower_bound_usd"], gap=plan["solver"]["gap"],
                      status=plan["solver"]["status"])
    elif result["code"] != 0:
        result["note"] = last
    return result


def main() -> None:
    if any(arg.startswith(("--families", "--table")) for arg in sys.argv[1:]):
        from suite import main as suite_main

        suite_main(sys.argv[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="--families ... or --table FILE: the solver benchmark (bench/suite.py; "
                                     "python bench/suite.py --help)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--baseline", type=int, nargs="*", default=[50_000])
    parser.add_argument("--baseline-limit", type=float, default=1800.0)
    parser.add_argument("--baseline-memory", type=float, default=os.sysconf("SC_PAGE_SIZE")
                        * os.sysconf("SC_PHYS_PAGES") / 2**30, help="GB of address space for the baseline "
                        "(default: this machine's memory)")
    parser.add_argument("--limit", type=float, default=600.0, help="--time-limit of the engine's runs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="kvplan-bench-") as tmp:
        for n in sorted(set(args.sizes) | set(args.baseline)):
            workload = write(n, Path(tmp) / str(n), seed=args.seed)
            row = {"contexts": n}
            if n in args.sizes or n in args.baseline:
                row["scale"] = measure(workload, "scale", args.limit)
            if n in args.baseline:
                row["exact"] = measure(workload, "exact", args.baseline_limit, args.baseline_memory)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    print(table(rows))


def _money(value) -> str:
    return "—" if value is None else f"${value:,.2f}"


def table(rows: list[dict]) -> str:
    lines = ["| contexts | seconds | peak RSS | total | lower bound | gap | baseline (per-context PuLP) | ratio |",
             "|---:|---:|---:|---:|---:|---:|---|---:|"]
    for row in rows:
        s = row["scale"]
        e = row.get("exact")
        if e is None:
            baseline, ratio = "—", "—"
        elif e.get("seconds") is not None and e.get("total") is None and s.get("seconds"):
            # stopped at --baseline-limit without one, or failed (out of memory) after that long
            baseline = f"no plan in {e['seconds']:.0f} s" + (f" ({e['note']})" if e.get("note") else "")
            ratio = f"> {e['seconds'] / s['seconds']:.1f}×"
        elif e.get("seconds") is None or e.get("total") is None:
            baseline = e.get("note", "no plan")
            ratio = "—"
        else:
            baseline = f"{e['seconds']:.1f} s, {_money(e['total'])} (gap {e['gap']:.4%})"
            ratio = f"{e['seconds'] / s['seconds']:.1f}×" if s.get("seconds") else "—"
        seconds = "—" if s.get("seconds") is None else f"{s['seconds']:.1f}"
        rss = "—" if s.get("rss_mb") is None else f"{s['rss_mb'] / 1024:.2f} GB"
        gap = "—" if s.get("gap") is None else f"{s['gap']:.2%}"
        lines.append(f"| {row['contexts']:,} | {seconds} | {rss} | {_money(s.get('total'))} | "
                     f"{_money(s.get('bound'))} | {gap} | {baseline} | {ratio} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        one(*sys.argv[2:5], float(sys.argv[5]))
    else:
        main()

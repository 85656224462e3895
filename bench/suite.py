"""The solver benchmark of issue #23: workload families x sizes x catalogs, each planned end to end.

Each case is `python -m planner plan WORKLOAD --catalog C --out DIR --force --quiet` (with the baselines unless
--no-baselines) in a fresh process, from the interpreter's start to the written plan, timed by wall clock, with
that process's peak resident memory (from wait4), and stopped at --timeout. Its record (a `Run`) is appended to
--results as one JSON line: the plan's total, lower bound, gap and status, the fleet, the peak GPU utilisation and
the fleet's storage and path utilisation (bench/usage.py), or the exit code and the last line it said. With
--compare-exact, cases of at most --exact-max contexts also run `--method exact --no-baselines` under
--exact-limit seconds: the per-context program's optimum, the reference the plan is compared with.

    python bench/run.py --families compute storage path mixed examples --sizes 1000 10000 --catalogs aws \\
        --timeout 300 --results bench-out.jsonl
    python bench/run.py --table bench-out.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]  # this checkout's planner, not an installed one

import families  # noqa: E402
from usage import usage  # noqa: E402

POLL_S = 0.01
ERROR_WIDTH = 90  # characters of a failed run's last line in the table (the JSON line keeps it whole)


@dataclass(frozen=True)
class Case:
    family: str
    contexts: int
    catalog: str
    seed: int
    example: str = ""           # the bundled example's name (family "examples")


@dataclass
class Run:
    """One planner process and what it produced."""
    family: str
    contexts: int
    catalog: str
    seed: int
    example: str
    method: str                 # auto (the default the user gets) or exact (the reference)
    baselines: bool
    time_limit: float | None    # the planner's --time-limit (None: its default)
    timeout: float              # this bench's limit on the whole process
    seconds: float = 0.0
    rss_mb: float = 0.0
    code: int | None = None     # exit code; None where the bench stopped the process at its timeout
    status: str = ""            # the plan's solver status, or timeout / exit N
    total: float | None = None
    bound: float | None = None
    gap: float | None = None
    fleet: list[dict] = field(default_factory=list)  # {offering, instances, tp, hbm_cache}
    gpu_peak: float | None = None
    storage: dict = field(default_factory=dict)      # attached kind: stored GB / the fleet's capacity
    storage_max: dict = field(default_factory=dict)  # attached kind: the fullest offering's share
    path: dict = field(default_factory=dict)         # network / block: the busiest offering's share
    baselines_failed: list[str] = field(default_factory=list)  # baselines without a total, with their reasons
    error: str = ""             # the last line the process said, where it failed
    mode: str = ""              # the plan's mode: provisioned, or per_use (no fleet to fill)
    load: float | None = None   # this machine's 1-minute load average as the run started (others' work slows it)
    commit: str = ""
    date: str = ""

    @property
    def key(self) -> tuple:
        return (self.family, self.example, self.contexts, self.catalog, self.seed)


def _commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except OSError:
        return ""


def cases(family_names: list[str], sizes: list[int], catalogs: list[str], seed: int,
          example_names: list[str] | None = None) -> list[Case]:
    """Every family x size x catalog; the examples family is one case per bundled example, at its own size."""
    from planner.inputs.workload import load_workload

    found = []
    for family in family_names:
        for catalog in catalogs:
            if family == "examples":
                for path in families.examples():
                    name = path.parent.name
                    if example_names and name not in example_names:
                        continue
                    found.append(Case(family, len(load_workload(path).contexts), catalog, seed, name))
            else:
                found.extend(Case(family, n, catalog, seed) for n in sorted(sizes))
    order = {name: i for i, name in enumerate(family_names)}
    return sorted(found, key=lambda c: (order[c.family], c.contexts, c.example, catalogs.index(c.catalog)))


def _wait(process: subprocess.Popen, timeout: float) -> tuple[int | None, float, float]:
    """Wait for the process (stopping it after timeout seconds): exit code (None if stopped), seconds, peak RSS MB."""
    start = time.perf_counter()
    code = None
    try:
        while True:
            pid, status, rusage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                code = os.waitstatus_to_exitcode(status)
                break
            if time.perf_counter() - start > timeout:
                os.killpg(process.pid, signal.SIGKILL)  # its own session: a solver it started goes with it
                _, status, rusage = os.wait4(process.pid, 0)
                break
            time.sleep(POLL_S)
    except BaseException:  # the bench itself stopped (Ctrl-C, SIGTERM): its planner goes too
        os.killpg(process.pid, signal.SIGKILL)
        os.wait4(process.pid, 0)
        raise
    seconds = time.perf_counter() - start
    process.returncode = -9 if code is None else code  # reaped here: Popen must not wait for it again
    return code, seconds, rusage.ru_maxrss / 1024  # ru_maxrss is in kB on Linux


def measure(workload: Path, case: Case, folder: Path, *, method: str = "auto", baselines: bool = True,
            time_limit: float | None = None, timeout: float = 900.0) -> Run:
    """Plan the workload in a fresh process and read what it wrote."""
    out = folder / f"plan-{method}"
    command = [sys.executable, "-m", "planner", "plan", str(workload), "--catalog", case.catalog, "--out", str(out),
               "--force", "--quiet"]
    command += [] if method == "auto" else ["--method", method]
    command += [] if baselines else ["--no-baselines"]
    command += [] if time_limit is None else ["--time-limit", f"{time_limit:g}"]
    run = Run(case.family, case.contexts, case.catalog, case.seed, case.example, method, baselines, time_limit,
              timeout, commit=_commit(), date=datetime.date.today().isoformat())
    run.load = round(os.getloadavg()[0], 2)
    stderr_file = folder / f"stderr-{method}.txt"
    with open(stderr_file, "w") as stderr:
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr,
                                   start_new_session=True)
        run.code, run.seconds, run.rss_mb = _wait(process, timeout)
    said = [line.strip() for line in stderr_file.read_text(errors="replace").splitlines() if line.strip()]
    if run.code is None:
        run.status = "timeout"
        return run
    plan_file = out / "plan.json"
    if run.code != 0 or not plan_file.exists():
        run.status = f"exit {run.code}"
        run.error = said[-1] if said else "(nothing said)"
        return run
    plan = json.loads(plan_file.read_text())
    solver = plan["solver"]
    run.status, run.total, run.mode = solver["status"], plan["total_usd"], plan["mode"]
    run.bound, run.gap = solver["lower_bound_usd"], solver["gap"]
    run.fleet = [{key: row.get(key) for key in ("offering", "instances", "tp", "hbm_cache")} for row in plan["fleet"]]
    run.baselines_failed = [f"{name}: {entry.get('reason', '')}" for name, entry in plan.get("baselines", {}).items()
                            if entry.get("total_usd") is None]
    try:
        used = usage(workload, case.catalog, out)
        run.gpu_peak, run.storage, run.storage_max, run.path = used.gpu_peak, used.storage, used.storage_max, used.path
    except Exception as exc:  # a bench row is still worth having without its utilisation
        run.error = f"utilisation not computed: {type(exc).__name__}: {exc}"
    return run


def case_name(case: Case) -> str:
    return f"{case.example or case.family}-{case.contexts}-{case.catalog}-seed{case.seed}"


def workload_of(case: Case, folder: Path) -> Path:
    if case.family == "examples":
        return ROOT / "examples" / case.example / "workload.yaml"
    return families.write(case.family, case.contexts, folder, case.seed)


def run_cases(todo: list[Case], results: Path | None, *, baselines: bool, time_limit: float | None, timeout: float,
              compare_exact: bool, exact_max: int, exact_limit: float, keep: Path | None = None) -> list[Run]:
    """Run each case (and its exact reference); plans are kept under keep/<case>/ where given."""
    runs = []
    for case in todo:
        with tempfile.TemporaryDirectory(prefix="kvplan-suite-") as tmp:
            folder = Path(tmp) if keep is None else keep / case_name(case)
            folder.mkdir(parents=True, exist_ok=True)
            workload = workload_of(case, folder)
            found = [measure(workload, case, folder, baselines=baselines, time_limit=time_limit, timeout=timeout)]
            if compare_exact and case.contexts <= exact_max:
                found.append(measure(workload, case, folder, method="exact", baselines=False,
                                     time_limit=exact_limit, timeout=exact_limit + max(600.0, exact_limit / 2)))
        for run in found:
            line = json.dumps(dataclasses.asdict(run))
            if results is not None:
                with open(results, "a") as handle:
                    handle.write(line + "\n")
            print(line, file=sys.stderr, flush=True)
        runs.extend(found)
    return runs


def read_results(path: Path) -> list[Run]:
    names = {f.name for f in dataclasses.fields(Run)}
    runs = []
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            runs.append(Run(**{key: value for key, value in record.items() if key in names}))
    return runs


# --- the table ---------------------------------------------------------------------------------------------

def _money(value: float | None) -> str:
    return "—" if value is None else f"${value:,.2f}"


def _gap(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.2%}" if value >= 1e-3 else f"{value:.4%}"


def _excess(value: float) -> str:
    return f"{value:+.2%}" if abs(value) >= 1e-3 else f"{value:+.4%}"


def _share(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def fleet_text(fleet: list[dict], mode: str = "provisioned") -> str:
    if mode == "per_use":
        return "per use (GPU-seconds)"
    parts = []
    for row in fleet:
        if not row.get("instances"):
            continue
        tp = f" tp{row['tp']}" if row.get("tp", 1) > 1 else ""
        parts.append(f"{row['instances']}× {row['offering']}{tp}")
    return " + ".join(parts) or "—"


def _uses(values: dict, labels: dict[str, str]) -> str:
    shown = [f"{labels[k]} {_share(v)}" for k, v in values.items() if v is not None and k in labels]
    return ", ".join(shown) or "—"


STORAGE_LABELS = {"hbm": "HBM", "host_memory": "host", "local_nvme": "NVMe"}
PATH_LABELS = {"network": "net", "block": "block"}


def unsolved_baselines(run: Run) -> list[str]:
    """Baselines the solver failed on (a baseline that no plan can meet, 'N contexts meet no SLO', is not one)."""
    return [entry for entry in run.baselines_failed if "solver" in entry.split(":", 1)[1]]


def _outcome(run: Run) -> str:
    if run.status == "timeout":
        return f"stopped at {run.timeout:.0f} s"
    if run.code:
        said = run.error.split(" (rerun with --debug", 1)[0]
        said = said if len(said) <= ERROR_WIDTH else said[:ERROR_WIDTH - 1] + "…"
        return f"exit {run.code}: {said}".replace("|", "/")
    unsolved = unsolved_baselines(run)
    return run.status + (f"; {len(unsolved)} baseline{'s' * (len(unsolved) > 1)} unsolved" if unsolved else "")


def table(runs: list[Run]) -> str:
    """One row per family x size x catalog (the latest record of each); exact columns where a reference ran."""
    main, exact = {}, {}
    for run in runs:
        (exact if run.method == "exact" else main)[run.key] = run
    with_exact = bool(exact)
    head = ["family", "contexts", "catalog", "seconds", "peak RSS", "plan", "lower bound", "gap", "status", "fleet",
            "GPU peak", "storage used", "path used"]
    if with_exact:
        head += ["exact optimum (reference)", "plan over it"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join("---:" if h in ("contexts", "seconds", "peak RSS", "plan", "lower bound", "gap",
                                            "GPU peak") else "---" for h in head) + "|"]
    order = {name: i for i, name in enumerate(families.FAMILIES + ("examples",))}
    for key, run in sorted(main.items(), key=lambda item: (order.get(item[1].family, len(order)),) + item[0][1:]):
        family = run.family + (f": {run.example}" if run.example else "")
        seconds = f"> {run.timeout:.0f}" if run.code is None else f"{run.seconds:.1f}"
        row = [family, f"{run.contexts:,}", run.catalog, seconds, f"{run.rss_mb / 1024:.2f} GB", _money(run.total),
               _money(run.bound), _gap(run.gap), _outcome(run), fleet_text(run.fleet, run.mode), _share(run.gpu_peak),
               _uses(run.storage, STORAGE_LABELS), _uses(run.path, PATH_LABELS)]
        if with_exact:
            ref = exact.get(key)
            if ref is None:
                row += ["—", "—"]
            elif ref.total is None:
                row += [f"no plan ({_outcome(ref)}, {ref.seconds:.0f} s)", "—"]
            else:
                optimal = f"{_money(ref.total)} ({ref.status}, gap {_gap(ref.gap)}, {ref.seconds:.0f} s)"
                over = "—" if run.total is None else _excess((run.total - ref.total) / ref.total)
                row += [optimal, over]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", choices=families.FAMILIES + ("examples",))
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--catalogs", nargs="+", default=["aws"])
    parser.add_argument("--examples", nargs="+", help="only these bundled examples (family examples)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per planner process (default 900)")
    parser.add_argument("--time-limit", type=float, help="the planner's --time-limit (default: its own, 300 s)")
    parser.add_argument("--no-baselines", action="store_true", help="plan without the baselines")
    parser.add_argument("--results", type=Path, help="append each run's record to this JSON-lines file")
    parser.add_argument("--compare-exact", action="store_true",
                        help="also run --method exact (the reference optimum) where there are at most --exact-max "
                             "contexts")
    parser.add_argument("--exact-max", type=int, default=3_000)
    parser.add_argument("--exact-limit", type=float, default=2_400.0, help="the exact run's --time-limit")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep each case's workload and plans in DIR/<case>/")
    parser.add_argument("--table", type=Path, metavar="RESULTS", help="print the table of a results file and stop")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds: the planner running is stopped, temp removed
    if args.table is not None:
        print(table(read_results(args.table)))
        return
    if not args.families:
        parser.error("give --families (or --table RESULTS)")
    todo = cases(args.families, args.sizes, args.catalogs, args.seed, args.examples)
    runs = run_cases(todo, args.results, baselines=not args.no_baselines, time_limit=args.time_limit,
                     timeout=args.timeout, compare_exact=args.compare_exact, exact_max=args.exact_max,
                     exact_limit=args.exact_limit, keep=args.keep)
    print(table(runs))


if __name__ == "__main__":
    main()

"""`kvplan export`: the files load with SkyPilot's own task parser, every YAML parses, vLLM's flags and LMCache's
keys are the pinned releases' own (tests/data), and the sizes, batches and tp in the files are the plan's,
checked against hand computations from MODEL.md §3.1, §4 and §5. Refusals exit 2 in one line."""

import copy
import csv
import io
import json
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from planner.cli import main
from planner.cli.plan import plan_text
from planner.inputs.catalog import bundled_dir, known_gpus, load_models, parse_catalog
from planner.inputs.fields import load_yaml
from planner.inputs.workload import parse_workload
from planner.plan.runner import make_plan
from planner.present.deploy import export_plan
from planner.present.export import GIB, GPU_MEMORY_SHARE

DATA = Path(__file__).resolve().parent / "data"
MODELS = load_models()
CARD = MODELS["Llama-3.1-8B"]


def _lines(name: str) -> set[str]:
    return {line.strip() for line in (DATA / name).read_text().splitlines() if line.strip() and line[0] != "#"}


VLLM_FLAGS = _lines("vllm_serve_flags.txt")
LMCACHE_KEYS = _lines("lmcache_config_keys.txt")


def subset(name: str, offerings: set[str], tiers: set[str], profiles: list | None = None):
    """A bundled catalog with only the named offerings and tiers (and measured profiles, if given)."""
    raw = copy.deepcopy(load_yaml(bundled_dir() / f"{name}.yaml"))
    raw["offerings"] = [o for o in raw["offerings"] if o["name"] in offerings]
    raw["tiers"] = [t for t in raw["tiers"] if t["name"] in tiers]
    if profiles:
        raw["profiles"] = profiles
    return parse_catalog(raw, f"{name}-subset", MODELS)


def no_faster_than_tp1(gpu: str, tps: tuple[int, ...]) -> list[dict]:
    """Profiles of GPUs that gain nothing from tensor parallelism (PCIe cards without NVLink): at each tp, prefill
    and decode take what one GPU takes by the roofline (MODEL.md §4), so a replica of tp GPUs costs tp times the
    GPU-seconds and one GPU per replica is the plan's choice."""
    spec = known_gpus()[gpu]
    flops = lambda n: 2 * CARD.params_b * 1e9 * n + 4 * CARD.n_layers * CARD.n_heads * CARD.attn_head_dim * n * n / 2  # noqa: E731
    prefill = {n: flops(n) / (spec["tflops"] * 1e12 * 0.4) for n in (1000, 10000, 40000)}
    step = {b: (CARD.weight_read_bytes + b * CARD.kv_bytes_per_token * 30000) / (spec["hbm_gbps"] * 1e9 * 0.6)
            for b in (1, 8, 32)}
    return [{"model": CARD.name, "gpu": gpu, "tp": tp, "prefill_s": prefill,
             "decode_step_s": {"kv_tokens": 30000, "by_batch": step}, "source": "test", "as_of": "2026-12-07"}
            for tp in tps]


def workload(contexts: list[dict], ttft: float = 4.0):
    data = {"name": "export-test", "model": CARD.name, "mode": "provisioned", "slo": {"ttft_s": ttft, "tpot_s": 0.2},
            "contexts": contexts}
    return parse_workload(data, "inline", MODELS, None)


def ctx(name: str, tokens: int, reuses: float, slo: float, prompt: int = 200, output: int = 100) -> dict:
    return {"id": name, "tokens": tokens, "reuses_per_month": reuses, "prompt_tokens": prompt,
            "output_tokens": output, "ttft_slo_s": slo}


@pytest.fixture(scope="module")
def plans():
    """stores: hbm, host memory and NVMe on 2 x g6e.12xlarge (4 GPUs, tp 1: 4 replicas each, as the profiles make
    a larger tp cost more GPU time than it saves HBM); strict contexts (2 s)
    need host memory or HBM (NVMe loads 3.9 GB in 3 s, recompute takes 5 s), loose ones (4 s) may use NVMe.
    remote: S3 (4.5 s) and EBS io2 (2.5 s) on one pool. nothing: recompute only. gcs: GCP object storage only."""
    stores = make_plan(workload([ctx(f"c{i:03d}", 30000, 20000, 2.0) for i in range(128)]
                                + [ctx(f"n{i:02d}", 30000, 20000, 4.0) for i in range(20)]),
                       subset("aws", {"g6e.12xlarge"}, {"hbm", "host_memory", "local_nvme"},
                              no_faster_than_tp1("L40S", (2, 4))), baselines=False)
    remote = make_plan(workload([ctx(f"s{i}", 30000, 300, 4.5, 100) for i in range(4)]
                                + [ctx(f"e{i}", 30000, 300, 2.5, 100) for i in range(2)], 8.0),
                       subset("aws", {"g6e.12xlarge"}, {"s3_standard", "ebs_io2"}, no_faster_than_tp1("L40S", (2, 4))),
                       baselines=False)
    nothing = make_plan(workload([ctx(f"r{i}", 2000, 10, 5.0, 100) for i in range(5)], 5.0),
                        subset("aws", {"g6e.xlarge"}, {"hbm", "host_memory", "s3_standard"}), baselines=False)
    gcs = make_plan(workload([ctx(f"g{i}", 30000, 300, 8.0, 100) for i in range(6)], 8.0),
                    subset("gcp", {"g2-standard-8"}, {"gcs_standard"}), baselines=False)
    return {"stores": stores, "remote": remote, "nothing": nothing, "gcs": gcs}


@pytest.fixture(scope="module")
def exported(plans, tmp_path_factory):
    out = {}
    for name, plan in plans.items():
        folder = tmp_path_factory.mktemp(name) / "deploy"
        out[name] = (folder, export_plan(plan, f"{name}.json", folder, force=False))
    return out


def tier_kinds(plan: dict) -> dict[str, str]:
    return {t["tier"]: t["kind"] for t in plan["tiers"]}


def plan_gb(plan: dict, offering: str, kind: str) -> float:
    kinds = tier_kinds(plan)
    return sum(c["gb"] for c in plan["contexts"] if c["offering"] == offering and kinds[c["tier"]] == kind)


def command(task: dict) -> list[str]:
    """The `vllm serve` line of a task's run script, as argv."""
    text = task["run"].replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.strip().startswith("vllm serve"))
    return shlex.split(line)


def flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def test_the_stores_plan_is_what_the_test_means(plans):
    """The fixture exercises what it says: DP replicas, several instances, and every attached tier."""
    plan = plans["stores"]
    (line,) = plan["fleet"]
    assert (line["offering"], line["gpus"], line["tp"], line["instances"], line["hbm_cache"]) == \
        ("g6e.12xlarge", 4, 1, 2, True)
    assert {t["tier"] for t in plan["tiers"]} == {"hbm", "host_memory", "local_nvme"}
    assert plan["violations"] == []


def test_folder_layout_and_every_yaml_parses(exported):
    folder, summary = exported["stores"]
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert files == sorted(summary.files) == ["README.md", "g6e.12xlarge/lmcache.yaml", "g6e.12xlarge/task.yaml",
                                              "g6e.12xlarge/vllm_serve.sh", "placement.csv"]
    for name, (out, _) in exported.items():
        for path in out.rglob("*.yaml"):
            assert isinstance(yaml.safe_load(path.read_text()), dict), path
    assert os.access(folder / "g6e.12xlarge" / "vllm_serve.sh", os.X_OK)


def test_vllm_command_flags_are_vllm_0_34s_and_carry_the_plans_figures(plans, exported):
    plan = plans["stores"]
    (line,) = plan["fleet"]
    folder, _ = exported["stores"]
    task = yaml.safe_load((folder / "g6e.12xlarge" / "task.yaml").read_text())
    argv = command(task)
    assert argv[:3] == ["vllm", "serve", "meta-llama/Llama-3.1-8B-Instruct"]
    assert {a for a in argv if a.startswith("--")} <= VLLM_FLAGS
    assert int(flag(argv, "--tensor-parallel-size")) == line["tp"]
    assert int(flag(argv, "--data-parallel-size")) == line["gpus"] // line["tp"]   # every GPU serves a replica
    assert float(flag(argv, "--gpu-memory-utilization")) == GPU_MEMORY_SHARE
    assert "--enable-prefix-caching" in argv   # the plan keeps an HBM cache: vLLM's prefix cache holds it
    assert json.loads(flag(argv, "--kv-transfer-config")) == {"kv_connector": "LMCacheConnectorV1",
                                                              "kv_role": "kv_both"}
    # The decode batch by hand (MODEL.md §3.1, §4): s = 2 * layers * kv_heads * head_dim * bytes; K = tp * hbm - W;
    # the batch gets (1 - hbm_cache_fraction) of K with an HBM cache; b = min(decode_batch, floor(space / (s * len))).
    offering = subset("aws", {"g6e.12xlarge"}, set()).offering("g6e.12xlarge")
    s = 2 * CARD.n_layers * CARD.n_kv_heads * CARD.head_dim * CARD.kv_dtype_bytes
    weights = CARD.total_params_b * 1e9 * CARD.weight_dtype_bytes
    space = (1 - offering.efficiency["hbm_cache_fraction"]) * (line["tp"] * offering.gpu.hbm_gb * 1e9 - weights)
    lengths = [c["tokens"] + c["prompt_tokens"] + c["output_tokens"] for c in plan["contexts"]]
    batches = [min(offering.efficiency["decode_batch"], math.floor(space / (s * n))) for n in lengths]
    assert int(flag(argv, "--max-num-seqs")) == max(batches) == 4
    assert int(flag(argv, "--max-model-len")) == max(lengths)
    script = (folder / "g6e.12xlarge" / "vllm_serve.sh").read_text()
    assert shlex.split(script.split("\n", 4)[4].replace("\\\n", " ")) == argv   # the same command, no SkyPilot


def test_lmcache_sizes_round_trip_to_the_plans_gb(plans, exported):
    """LMCache allocates per rank (tp x replicas per instance): size x ranks x instances x GB/GiB = the plan's GB."""
    plan = plans["stores"]
    (line,) = plan["fleet"]
    folder, _ = exported["stores"]
    config = yaml.safe_load((folder / "g6e.12xlarge" / "lmcache.yaml").read_text())
    assert set(config) <= LMCACHE_KEYS
    ranks = line["tp"] * (line["gpus"] // line["tp"])
    for key, kind in (("max_local_cpu_size", "host_memory"), ("max_local_disk_size", "local_nvme")):
        expected = plan_gb(plan, "g6e.12xlarge", kind)
        assert expected > 50
        assert config[key] * ranks * line["instances"] * GIB == pytest.approx(expected, abs=1e-4)
    assert config["local_cpu"] is True and config["local_disk"].startswith("file:///")
    assert config["chunk_size"] == 256 and "remote_url" not in config
    task = yaml.safe_load((folder / "g6e.12xlarge" / "task.yaml").read_text())
    assert task["file_mounts"] == {"~/kvplan/lmcache.yaml": "lmcache.yaml"}
    assert "export LMCACHE_CONFIG_FILE=$HOME/kvplan/lmcache.yaml" in task["run"]


def test_several_instances_make_a_skyserve_service(plans, exported):
    folder, _ = exported["stores"]
    task = yaml.safe_load((folder / "g6e.12xlarge" / "task.yaml").read_text())
    assert task["service"] == {"readiness_probe": "/v1/models", "replicas": plans["stores"]["fleet"][0]["instances"]}
    assert task["resources"] | {} == {"cloud": "aws", "region": "us-east-1", "instance_type": "g6e.12xlarge",
                                      "accelerators": "L40S:4", "use_spot": False, "ports": 8000}
    assert task["num_nodes"] == 1


def test_remote_tier_served_and_the_other_named(plans, exported):
    plan = plans["remote"]
    assert {t["tier"]: t["contexts"] for t in plan["tiers"]} == {"s3_standard": 4, "ebs_io2": 2}
    folder, summary = exported["remote"]
    text = (folder / "g6e.12xlarge" / "lmcache.yaml").read_text()
    config = yaml.safe_load(text)
    assert set(config) <= LMCACHE_KEYS and set(config["extra_config"]) == {"s3_region"}
    assert config["remote_url"] == "s3://REPLACE_WITH_BUCKET.s3.us-east-1.amazonaws.com"
    assert config["extra_config"]["s3_region"] == "us-east-1" and config["remote_serde"] == "naive"
    assert config["local_cpu"] is False and "max_local_disk_size" not in config
    # No host tier: max_local_cpu_size is LMCache's staging buffer, the largest context here per tp rank.
    largest = max(c["gb"] for c in plan["contexts"])
    assert largest / GIB <= config["max_local_cpu_size"] < largest / GIB + 1 / 1024 + 1e-9
    assert "# Not served here: ebs_io2" in text
    assert any(u.startswith("g6e.12xlarge: ebs_io2") for u in summary.unserved)
    assert any("S3 bucket" in p for p in summary.placeholders)
    rows = list(csv.DictReader(io.StringIO((folder / "placement.csv").read_text())))
    served = {r["context_id"]: r["served_by"] for r in rows}
    assert served == {**{f"s{i}": "LMCache" for i in range(4)},
                      **{f"e{i}": "not served (see README)" for i in range(2)}}


def test_no_stored_contexts_no_lmcache_no_connector(plans, exported):
    assert {t["tier"] for t in plans["nothing"]["tiers"]} == {"recompute"}
    folder, summary = exported["nothing"]
    (pool,) = [p for p in folder.iterdir() if p.is_dir()]
    assert sorted(p.name for p in pool.iterdir()) == ["task.yaml", "vllm_serve.sh"]
    task = yaml.safe_load((pool / "task.yaml").read_text())
    argv = command(task)
    assert "--kv-transfer-config" not in argv and "LMCACHE" not in task["run"] and "file_mounts" not in task
    assert "lmcache" not in task["setup"] and "service" not in task
    assert {a for a in argv if a.startswith("--")} <= VLLM_FLAGS
    assert summary.unserved == ()


def test_tier_lmcache_cannot_serve_is_named_not_dropped(plans, exported):
    folder, summary = exported["gcs"]
    (pool,) = [p for p in folder.iterdir() if p.is_dir()]
    assert not (pool / "lmcache.yaml").exists()
    text = (pool / "task.yaml").read_text()
    assert "# Not served by LMCache 0.5.6: gcs_standard (23.6 GB, 6 contexts)" in text
    assert summary.unserved == (f"{pool.name}: gcs_standard (23.6 GB, 6 contexts): LMCache 0.5.6 has no backend "
                                "for gcp object storage",)
    assert "gcs_standard" in (folder / "README.md").read_text()
    assert yaml.safe_load(text)["resources"]["accelerators"] == "L4:1"


def test_placement_is_the_warm_up_list(plans, exported):
    plan = plans["stores"]
    folder, _ = exported["stores"]
    rows = list(csv.DictReader(io.StringIO((folder / "placement.csv").read_text())))
    assert sorted(r["context_id"] for r in rows) == sorted(c["id"] for c in plan["contexts"])
    by_id = {c["id"]: c for c in plan["contexts"]}
    kinds = tier_kinds(plan)
    for r in rows:
        c = by_id[r["context_id"]]
        assert (r["tier"], r["offering"], float(r["reuses_per_month"])) == \
            (c["tier"], c["offering"], c["reuses_per_month"])
        assert float(r["gb"]) == pytest.approx(c["gb"], abs=1e-6) and r["kind"] == kinds[c["tier"]]
    order = [kinds[r["tier"]] for r in rows]
    assert order == sorted(order, key=["local_nvme", "host_memory", "hbm"].index)   # slow tiers warm first
    assert [int(r["warm_order"]) for r in rows] == list(range(1, len(rows) + 1))


def test_readme_names_the_fleet_total_and_slos(plans, exported):
    folder, _ = exported["stores"]
    text = (folder / "README.md").read_text()
    assert f"${plans['stores']['total_usd']:,.2f} per month" in text
    assert "default TTFT 4 s, TPOT 0.2 s (148 per-context SLOs)" in text
    assert "| g6e.12xlarge | 2 | g6e.12xlarge | 4 x L40S | 1 x 4 | yes |" in text
    assert "(cd g6e.12xlarge && sky serve up -n kvplan-g6e-12xlarge task.yaml --secret HF_TOKEN)" in text


def test_replicas_read_from_the_fleet_line_and_idle_gpus_said(plans, tmp_path):
    """A fleet line may carry `replicas`: it sets the data-parallel size, and GPUs left idle are named."""
    plan = copy.deepcopy(plans["stores"])
    plan["fleet"][0]["replicas"] = 2
    summary = export_plan(plan, "plan.json", tmp_path / "deploy", force=False)
    argv = command(yaml.safe_load((tmp_path / "deploy" / "g6e.12xlarge" / "task.yaml").read_text()))
    assert flag(argv, "--data-parallel-size") == "2"
    assert any("2 of 4 GPUs per instance serve no replica" in w for w in summary.warnings)


SKY_SCRIPT = r"""
import csv, json, os, sys
from sky.catalog import common
data = sys.argv[1]
for name, source, drop_last in (("aws/vms.csv", "skypilot_aws_vms.csv", True),
                                ("common/accelerators.csv", "skypilot_accelerators.csv", False)):
    path = common.get_catalog_path(name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rows = [line for line in open(os.path.join(data, source)) if not line.startswith("#")]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        for row in csv.reader(rows):
            w.writerow(row[:-1] if drop_last else row)   # vms rows without read_at
import sky
found = {}
for task_file in sys.argv[2:]:
    os.chdir(os.path.dirname(task_file))
    task = sky.Task.from_yaml(task_file)   # the YAML against SkyPilot's schema
    task.validate()                          # name, run, file mounts, resources against the catalog
    (r,) = list(task.resources)
    found[task_file] = {"cloud": str(r.cloud), "region": r.region, "instance_type": r.instance_type,
                        "accelerators": r.accelerators, "use_spot": r.use_spot, "num_nodes": task.num_nodes,
                        "replicas": task.service.min_replicas if task.service else None,
                        "mounts": task.file_mounts}
print("RESULT " + json.dumps(found))
"""


def test_every_task_loads_with_skypilots_own_parser(plans, exported, tmp_path):
    """SkyPilot 0.14.1 parses each task.yaml (schema, resources, service) and validates it (Task.validate: name,
    run, file mounts, region, instance type and accelerators against its catalog, given here from tests/data so
    nothing is fetched); HOME is empty: no credentials, no network."""
    tasks, expected = [], {}
    for name in ("stores", "remote", "nothing"):
        folder, _ = exported[name]
        for line in plans[name]["fleet"]:
            path = str(folder / line["offering"] / "task.yaml")
            tasks.append(path)
            expected[path] = {"cloud": "AWS", "region": "us-east-1", "instance_type": line["offering"],
                              "accelerators": {"L40S": line["gpus"]}, "use_spot": False, "num_nodes": 1,
                              "replicas": line["instances"] if line["instances"] > 1 else None}
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home)}
    result = subprocess.run([sys.executable, "-c", SKY_SCRIPT, str(DATA), *tasks],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.split("RESULT ", 1)[1])
    for path, fields in expected.items():
        got = found[path]
        mounts = got.pop("mounts") or {}
        assert got == fields, path
        lmcache = Path(path).parent / "lmcache.yaml"
        assert list(mounts.values()) == ([str(lmcache)] if lmcache.exists() else [])


def test_skypilot_rejects_an_instance_type_its_catalog_lacks(exported, tmp_path):
    """The parser check above can fail: a task naming an instance type missing from the catalog is refused."""
    folder, _ = exported["nothing"]
    task = yaml.safe_load((folder / "g6e.xlarge" / "task.yaml").read_text())
    task["resources"]["instance_type"] = "g6e.3xlarge"
    bad = tmp_path / "bad" / "task.yaml"
    bad.parent.mkdir()
    bad.write_text(yaml.safe_dump(task))
    home = tmp_path / "home"
    home.mkdir()
    result = subprocess.run([sys.executable, "-c", SKY_SCRIPT, str(DATA), str(bad)],
                            capture_output=True, text=True, env={**os.environ, "HOME": str(home)}, timeout=300)
    assert result.returncode != 0 and "g6e.3xlarge" in result.stderr


# --- the command line ------------------------------------------------------------------------------------------

def _write(tmp_path: Path, plan: dict) -> Path:
    path = tmp_path / "plan.json"
    path.write_text(plan_text(plan))
    return path


@pytest.mark.parametrize("change, words", [
    (lambda p: p.update(violations=["g6e.12xlarge: GPU load 3 exceeds capacity 2"]), "violations"),
    (lambda p: p.update(kvplan_version="0.9.0"), "kvplan_version"),
    (lambda p: p.pop("kvplan_version"), "not a kvplan plan"),
    (lambda p: p.update(total_usd=p["total_usd"] + 10), "re-prices"),
    (lambda p: p.update(model="Llama-7B-paper") or p["inputs"]["workload"].update(model="Llama-7B-paper")
     or p["inputs"]["models"].append({**p["inputs"]["models"][0], "name": "Llama-7B-paper"}), "--model-id"),
])
def test_refusals_are_one_line_exit_2(plans, tmp_path, change, words):
    plan = copy.deepcopy(plans["nothing"])
    change(plan)
    result = CliRunner().invoke(main, ["export", str(_write(tmp_path, plan)), "--out", str(tmp_path / "deploy")])
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1 and words in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "deploy").exists()


def test_cli_writes_then_needs_force_and_is_deterministic(plans, tmp_path):
    path = _write(tmp_path, plans["remote"])
    out = tmp_path / "deploy"
    first = CliRunner().invoke(main, ["export", str(path), "--out", str(out)])
    assert first.exit_code == 0, (first.stdout, first.stderr)
    assert first.stdout.startswith(f"wrote 5 files to {out} (1 pool(s))")
    assert "not served by LMCache 0.5.6: g6e.12xlarge: ebs_io2" in first.stdout
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    refused = CliRunner().invoke(main, ["export", str(path), "--out", str(out)])
    assert refused.exit_code == 2 and "--force" in refused.stderr and refused.stderr.count("\n") == 1
    (out / "notes.txt").write_text("mine")
    forced = CliRunner().invoke(main, ["export", str(path), "--out", str(out), "--force"])
    assert forced.exit_code == 0, (forced.stdout, forced.stderr)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "notes.txt"} == before
    assert "left in place (not from this export): notes.txt" in forced.stdout
    assert CliRunner().invoke(main, ["export", "--help"]).exit_code == 0

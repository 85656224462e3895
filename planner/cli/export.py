"""`kvplan export`: a saved plan as SkyPilot, vLLM and LMCache launch files (planner/present/deploy.py)."""

from __future__ import annotations

from pathlib import Path

import click

from ..inputs.fields import load_yaml
from ..present.deploy import export_plan
from ..present.export import LMCACHE_VERSION, SKYPILOT_VERSION, VLLM_VERSION
from .common import command


@click.command("export", help=(
    f"Write PLAN_FILE's launch files to --out: per pool a SkyPilot {SKYPILOT_VERSION} task, the vLLM {VLLM_VERSION} "
    f"command and an LMCache {LMCACHE_VERSION} config; placement.csv (the warm-up list) and a README. A plan with "
    "violations, or from a kvplan whose plan layout this one cannot read, is refused (exit 2)."))
@click.argument("plan_file", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="The folder to write (e.g. deploy/).")
@click.option("--force", is_flag=True, help="Write into a folder that is not empty, replacing the files it writes.")
@click.option("--model-id", help="The Hugging Face repository vLLM serves (default: the one known for the plan's "
              "model card).")
@command
def export_command(plan_file: Path, out: Path, force: bool, model_id: str | None, quiet: bool) -> None:
    plan = load_yaml(plan_file)  # JSON is YAML; one safe loader with line numbers for syntax errors
    summary = export_plan(plan, str(plan_file), out, force, model_id=model_id)
    click.echo("\n".join(summary.lines()))

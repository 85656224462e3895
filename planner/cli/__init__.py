"""The `kvplan` command line: the `main` group and its commands, one module per command group.

Exit codes: 0 ok, 1 infeasible or unsolved, 2 bad input, 3 an internal error (cli.common).
"""

from __future__ import annotations

import click

from .. import __version__
from .calibrate import calibrate_command
from .catalogs import catalogs_group
from .export import export_command
from .forecast import forecast_command
from .plan import compare_command, evaluate_command, plan_command
from .report import breakeven_command, explain_command, report_command
from .sweep import sweep_command
from .workload import workload_group


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kvplan")
def main() -> None:
    """kvplan: plan where LLM KV caches live and which GPUs to rent, at least monthly cost under SLOs."""


for _command in (plan_command, evaluate_command, compare_command, forecast_command, report_command,
                 explain_command, breakeven_command, sweep_command, workload_group, catalogs_group, export_command,
                 calibrate_command):
    main.add_command(_command)

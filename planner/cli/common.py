"""What every kvplan command shares: --debug/--quiet and one-line errors with exit codes (0 ok, 1 infeasible or
unsolved, 2 bad input, 3 a bug), files written whole, progress on stderr, and the solver's options."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import click

from ..inputs.errors import Infeasible, InputError
from ..inputs.workload import SLO_POLICIES
from ..plan.runner import METHODS, SCALE_CLASSES
from ..present.output import write_atomic  # noqa: F401  (the commands write through it)

SOLVERS = ("highs", "cbc")


def _setup_logging(quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    logger = logging.getLogger("kvplan")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.ERROR if quiet else logging.WARNING)


def command(func):
    """Shared options and error handling: one line per error, no traceback unless --debug."""
    @click.option("--debug", is_flag=True, help="Show tracebacks.")
    @click.option("--quiet", "-q", is_flag=True, help="No warnings or progress on stderr.")
    @functools.wraps(func)
    def wrapper(*args, debug: bool, quiet: bool, **kwargs):
        _setup_logging(quiet)
        try:
            return func(*args, quiet=quiet, **kwargs)
        except InputError as exc:
            if debug:
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except Infeasible as exc:
            if debug:
                raise
            click.echo(f"infeasible: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except MemoryError:  # not a bug: the problem is too large for this machine (unsolved, exit 1)
            if debug:
                raise
            click.echo("out of memory: the problem does not fit in this machine's memory (at scale, --method scale "
                       "plans in far less)", err=True)
            sys.exit(1)
        except Exception as exc:  # a bug: say so in one line, keep the traceback for --debug
            if debug:
                raise
            click.echo(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
                       err=True)
            sys.exit(3)
    return wrapper


def progress_printer(quiet: bool) -> Callable[[str], None]:
    """A progress callback: each message a line on stderr, or nothing with --quiet."""
    return (lambda message: None) if quiet else (lambda message: click.echo(message, err=True))


def slo_policy_option(func):
    """--slo-policy: strict (the default) refuses a plan where a context can meet its SLO nowhere; best_effort
    plans such contexts at their fastest option and lists them (MODEL.md §5). Overrides the workload's."""
    return click.option("--slo-policy", type=click.Choice(SLO_POLICIES), default=None,
                        help="strict: a context that can meet its SLO nowhere makes the plan infeasible; "
                        "best_effort: it takes its fastest option and is listed under slo_misses. Default: the "
                        "workload's slo_policy (strict).")(func)


def solver_options(*, time_limit: float, time_limit_help: str | None = None, solver: bool = True,
                   gap: bool = True, method: bool = False):
    """The options of a command that solves, declared here once: --solver, --gap, --time-limit (its default and
    help are the command's own: what one solve is there) and, for `plan`, --method."""
    options = []
    if solver:
        options.append(click.option("--solver", type=click.Choice(SOLVERS), default="highs", show_default=True,
                                    help="HiGHS, or CBC (bundled with PuLP; used anyway where highspy is missing)."))
    options.append(click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), default=time_limit,
                                show_default=True, help=time_limit_help))
    if gap:
        options.append(click.option("--gap", type=click.FloatRange(min=0, max=1), default=1e-4, show_default=True,
                                    help="Relative optimality gap at which the solver stops."))
    if method:
        options.append(click.option(
            "--method", type=click.Choice(METHODS), default="auto", show_default=True,
            help="exact: one program over every context class and option; scale: the engine for many contexts "
            f"(a per-context plan with a proven lower bound); auto: scale above {SCALE_CLASSES:,} context classes."))

    def decorate(func):
        for option in reversed(options):
            func = option(func)
        return func
    return decorate

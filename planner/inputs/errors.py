"""Errors a user can act on, and the warnings channel.

Every input problem becomes one line: where (file and key path, or CSV row and column), what was expected
and what was found. The CLI prints it and exits with code 2; `--debug` adds the traceback.
"""

from __future__ import annotations

import logging

log = logging.getLogger("kvplan")


class InputError(Exception):
    """Bad input. `where` names the file and key path (or row and column)."""

    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


class Infeasible(Exception):
    """The workload cannot be served under its SLOs and caps; the message says why and what would fix it."""


def warn(where: str, message: str) -> None:
    log.warning("%s: %s", where, message)

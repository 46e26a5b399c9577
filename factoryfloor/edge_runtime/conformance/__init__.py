"""The FFEP/2 conformance kit (``docs/protocol.md``, section 10).

``SERVER_CHECKS`` tests any FFEP/2 server over its endpoint (``factoryfloor edge conformance
--connect``); ``CONTROLLER_CHECKS`` tests any controller command against the kit's own scripted
server (``--serve``). Both are registries: check name -> ``Check(section, rule, run)``.
"""

from __future__ import annotations

from factoryfloor.edge_runtime.conformance import error_checks, framing_checks, server_checks
from factoryfloor.edge_runtime.conformance.controller_checks import (
    CONTROLLER_CHECKS,
    ControllerTarget,
)
from factoryfloor.edge_runtime.conformance.kit import (
    PROTOCOL,
    Check,
    CheckResult,
    ServerTarget,
    run_checks,
)
from factoryfloor.edge_runtime.conformance.report import report_json, write_table

SERVER_CHECKS = {**server_checks.CHECKS, **error_checks.CHECKS, **framing_checks.CHECKS}

__all__ = [
    "CONTROLLER_CHECKS",
    "PROTOCOL",
    "SERVER_CHECKS",
    "Check",
    "CheckResult",
    "ControllerTarget",
    "ServerTarget",
    "report_json",
    "run_checks",
    "write_table",
]

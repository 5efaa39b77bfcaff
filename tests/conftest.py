"""Suite-wide fixtures and the "no tier skipped" rule.

Tiers are folders: unit/, apptest/, real/ (a real ComfyUI 0.3.75 on CPU), e2e/ (Chromium).
With ``COMFYPANEL_REQUIRE_ALL_TIERS=1`` (set by scripts/test.sh, so by CI) the run fails when any
test was skipped or when a tier ran no test at all: a green run means every tier really ran.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

TIERS = ("unit", "apptest", "real", "e2e")
_ROOT = Path(__file__).resolve().parent

try:  # the doubles' fixtures (comfy_double, comfy_double_new, cloud_double)
    from tests.doubles.fixtures import *  # noqa: F401,F403
except ImportError:  # pragma: no cover - only while the doubles are being written
    pass


def _tier(nodeid: str) -> str | None:
    parts = nodeid.split("/")
    return parts[1] if len(parts) > 1 and parts[0] == "tests" and parts[1] in TIERS else None


_ran: Counter[str] = Counter()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.outcome in ("passed", "failed"):
        tier = _tier(report.nodeid)
        if tier:
            _ran[tier] += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("COMFYPANEL_REQUIRE_ALL_TIERS") != "1" or exitstatus not in (0, 5):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    missing = [t for t in TIERS if not _ran[t]]
    problems = []
    if skipped:
        problems.append(f"{skipped} test(s) were skipped")
    if missing:
        problems.append("no test ran in tier(s): " + ", ".join(missing))
    if problems:
        if reporter:
            reporter.write_line("TIER CHECK FAILED: " + "; ".join(problems) + " (every tier must run in CI)", red=True)
        session.exitstatus = 1
    elif reporter:
        reporter.write_line("tier check: " + ", ".join(f"{t} {_ran[t]}" for t in TIERS))


@pytest.fixture(scope="session")
def real_server(tmp_path_factory):
    """A real ComfyUI 0.3.75 on CPU (installed and cached by comfypanel.devserver), one per test
    session, with its own data folder; started only when a test asks for it."""
    from comfypanel import devserver

    devserver.ensure_installed()
    server = devserver.start(data_dir=tmp_path_factory.mktemp("comfyui-data"))
    try:
        yield server
    finally:
        server.stop()

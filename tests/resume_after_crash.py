"""A pytest plugin that lets a pass killed by a signal resume instead of starting over.

`scripts/pytest_pass.sh` loads it (`-p tests.resume_after_crash`) and names three files in
the environment; without them the plugin does nothing.

- TEST_PASSED_FILE: each test whose setup, call and teardown all passed is appended as
  it finishes (one nodeid a line, flushed), so the record survives a crash of the
  interpreter. A run that finds the file already there deselects the tests it names:
  they passed once in this CI run, and every other test runs again (the one that was
  running when the interpreter died, the ones after it, and any that failed).
- TEST_FAILED_FILE: each test that failed or errored, appended the same way, so a
  failure before the crash still fails the run although the crash kept pytest from
  printing its summary; what pytest would have printed for it goes to the same name
  with `.details` added.
- TEST_RUNNING_FILE: the nodeid of the test being run, rewritten as each starts, so the
  script can name the test the interpreter died in.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_outcomes: dict[str, list[str]] = {}
_resumed: list[int] = []  # how many tests the run left out because they had passed


def _file(name: str) -> Path | None:
    value = os.environ.get(name, "").strip()
    return Path(value) if value else None


def _append(path: Path | None, nodeid: str) -> None:
    if path is None:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(nodeid + "\n")
        f.flush()
        os.fsync(f.fileno())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    passed_file = _file("TEST_PASSED_FILE")
    if passed_file is None or not passed_file.exists():
        return
    passed = set(passed_file.read_text(encoding="utf-8").splitlines())
    keep = [item for item in items if item.nodeid not in passed]
    left_out = [item for item in items if item.nodeid in passed]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = keep
        _resumed.append(len(left_out))


def pytest_runtest_logstart(nodeid: str, location: tuple) -> None:
    running = _file("TEST_RUNNING_FILE")
    if running is not None:
        running.write_text(nodeid + "\n", encoding="utf-8")


def pytest_runtest_logfinish(nodeid: str, location: tuple) -> None:
    running = _file("TEST_RUNNING_FILE")
    if running is not None:
        running.write_text("", encoding="utf-8")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.outcome == "rerun":  # pytest-rerunfailures tries again: only the last try counts
        _outcomes.pop(report.nodeid, None)
        return
    _outcomes.setdefault(report.nodeid, []).append(report.outcome)
    failed_file = _file("TEST_FAILED_FILE")
    if report.failed and failed_file is not None:
        with open(f"{failed_file}.details", "a", encoding="utf-8") as f:
            f.write(f"_____ {report.nodeid} ({report.when}) _____\n{report.longreprtext}\n\n")
    if report.when != "teardown":
        return
    outcomes = _outcomes.pop(report.nodeid)
    if "failed" in outcomes:
        _append(_file("TEST_FAILED_FILE"), report.nodeid)
    elif outcomes == ["passed", "passed", "passed"]:
        _append(_file("TEST_PASSED_FILE"), report.nodeid)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # A resumed run whose every test had already passed (the crash came after the last
    # one) selects nothing; that is a pass, not pytest's "no tests collected".
    if _resumed and exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.OK


def pytest_report_header(config: pytest.Config) -> str | None:
    passed_file = _file("TEST_PASSED_FILE")
    if passed_file is not None and passed_file.exists():
        return f"resuming after a crash: tests that passed before it are left out ({passed_file})"
    return None

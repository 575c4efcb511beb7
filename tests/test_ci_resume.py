"""scripts/pytest_pass.sh: a pass killed by a signal resumes without the tests that had
passed, says so loudly, and still fails on a second crash or on any failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Each test notes that it ran; `once(name)` is true the first time it is asked in a CI
# run (a marker file), so a crash or a failure can happen on the first try only.
THROWAWAY_TESTS = """
import os, signal
from pathlib import Path

DIR = Path(os.environ["THROWAWAY_DIR"])

def ran(name):
    with open(DIR / "ran", "a") as f:
        f.write(name + "\\n")

def once(name):
    marker = DIR / f"once-{name}"
    if name not in os.environ.get("THROWAWAY_EVERY_TIME", "") and marker.exists():
        return False
    marker.touch()
    return True

def test_a():
    ran("a")
    if "a" in os.environ.get("THROWAWAY_FAIL", ""):
        assert not once("fail-a"), "a fails on the first try"

def test_b():
    ran("b")
    if "b" in os.environ.get("THROWAWAY_CRASH", "") and once("b"):
        os.kill(os.getpid(), signal.SIGSEGV)

def test_c():
    ran("c")
"""

CRASH_AT_EXIT = """
import os, signal
from pathlib import Path

def pytest_unconfigure(config):
    if "exit" in os.environ.get("THROWAWAY_CRASH", ""):
        marker = Path(os.environ["THROWAWAY_DIR"]) / "once-exit"
        if not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGSEGV)
"""


def run_pass(tmp_path: Path, **env: str) -> tuple[int, str, list[str]]:
    (tmp_path / "test_throwaway.py").write_text(THROWAWAY_TESTS)
    (tmp_path / "conftest.py").write_text(CRASH_AT_EXIT)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("TEST_", "DJANGO_", "PYTEST_"))}
    # Installed plugins (Django, Hypothesis, LangSmith) are left out: they cost seconds per run.
    child_env.update(THROWAWAY_DIR=str(tmp_path), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", **env)
    command = ["bash", "scripts/pytest_pass.sh", "throwaway", "-c", str(tmp_path / "pytest.ini")]
    command.append(str(tmp_path / "test_throwaway.py"))
    done = subprocess.run(command, cwd=ROOT, env=child_env, capture_output=True, text=True, timeout=120)
    ran = (tmp_path / "ran").read_text().split() if (tmp_path / "ran").exists() else []
    return done.returncode, done.stdout + done.stderr, ran


def test_a_clean_pass_runs_each_test_once(tmp_path):
    status, output, ran = run_pass(tmp_path)
    assert status == 0, output
    assert ran == ["a", "b", "c"]
    assert "CRASHED" not in output


def test_a_crash_resumes_with_the_tests_that_had_not_passed(tmp_path):
    status, output, ran = run_pass(tmp_path, THROWAWAY_CRASH="b")
    assert status == 0, output
    # a passed before the crash and is left out; b (the crash) and c run on resuming.
    assert ran == ["a", "b", "b", "c"]
    assert "the throwaway pass CRASHED (signal 11) in" in output and "test_throwaway.py::test_b" in output
    assert "1 tests had passed" in output
    assert "Fatal Python error: Segmentation fault" in output  # faulthandler's dump
    assert "crashed once and passed on resuming" in output


def test_a_second_crash_fails_the_pass(tmp_path):
    status, output, ran = run_pass(tmp_path, THROWAWAY_CRASH="b", THROWAWAY_EVERY_TIME="b")
    assert status == 128 + 11, output
    assert ran == ["a", "b", "b"]
    assert "crashed again (signal 11)" in output


def test_a_failure_before_the_crash_fails_the_pass_though_its_retry_passes(tmp_path):
    status, output, ran = run_pass(tmp_path, THROWAWAY_CRASH="b", THROWAWAY_FAIL="a")
    assert status == 1, output
    assert ran == ["a", "b", "a", "b", "c"]  # a failed, so it runs again (printing why) but still counts
    assert "had failures (those before the crash count too)" in output
    assert "test_throwaway.py::test_a" in output.split("had failures")[1]
    # Why it failed, which the crash kept pytest from printing, is shown too.
    assert output.split("had failures")[1].count("AssertionError: a fails on the first try") == 1


def test_a_crash_after_the_last_test_passes_with_nothing_left_to_run(tmp_path):
    status, output, ran = run_pass(tmp_path, THROWAWAY_CRASH="exit")
    assert status == 0, output
    assert ran == ["a", "b", "c"]
    assert "3 tests had passed" in output and "no test (collection or exit)" in output


def test_without_the_script_the_plugin_does_nothing(tmp_path):
    # The plugin is loaded by the script only; a plain pytest run is unchanged by it.
    (tmp_path / "test_plain.py").write_text("def test_x():\n    pass\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.resume_after_crash", "-c", "/dev/null",
         str(tmp_path / "test_plain.py")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**{k: v for k, v in os.environ.items() if not k.startswith(("TEST_", "DJANGO_", "PYTEST_"))},
             "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
    )  # fmt: skip
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout + done.stderr
    assert not list(tmp_path.glob("passed*"))

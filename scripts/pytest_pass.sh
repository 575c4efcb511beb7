#!/usr/bin/env bash
# pytest_pass.sh NAME PYTEST-ARGS...: one pass of the suite (test.sh runs two), made
# cheap to survive a crash. If the interpreter is killed by a signal (a crash, not a
# test failure), the pass is reported loudly, with the test it died in, and resumed
# once: the tests that passed before the crash are left out (tests/resume_after_crash.py
# records them as they finish), every other one runs. The pass fails if the resumed run
# crashes or fails, or if any test failed before the crash: every test must have passed
# once. Its exit status is pytest's.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

name=$1; shift
state=$(mktemp -d /tmp/panels-pass.XXXXXX)
trap 'rm -rf "$state"' EXIT
export TEST_PASSED_FILE="$state/passed" TEST_FAILED_FILE="$state/failed" TEST_RUNNING_FILE="$state/running"

running_test() {
  local nodeid
  nodeid=$(cat "$TEST_RUNNING_FILE" 2>/dev/null || true)
  echo "${nodeid:-no test (collection or exit)}"
}

status=0
"$PY" -X faulthandler -m pytest -q -p no:cacheprovider -p tests.resume_after_crash "$@" || status=$?
if [ "$status" -lt 128 ]; then exit "$status"; fi

touch "$TEST_PASSED_FILE"
log "WARNING: the $name pass CRASHED (signal $((status - 128))) in $(running_test);" \
  "$(wc -l <"$TEST_PASSED_FILE") tests had passed; running the rest once more"
status=0
"$PY" -X faulthandler -m pytest -q -p no:cacheprovider -p tests.resume_after_crash "$@" || status=$?
if [ "$status" -ge 128 ]; then
  log "FAILED: the $name pass crashed again (signal $((status - 128))) in $(running_test)"
elif [ -s "$TEST_FAILED_FILE" ]; then
  log "FAILED: the $name pass had failures (those before the crash count too):"
  cat "$TEST_FAILED_FILE.details" >&2
  sort -u "$TEST_FAILED_FILE" >&2
  [ "$status" != 0 ] || status=1
elif [ "$status" != 0 ]; then
  log "FAILED: the resumed $name pass ended with pytest's status $status"
else
  log "the $name pass crashed once and passed on resuming (see the WARNING above)"
fi
exit "$status"

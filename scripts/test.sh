#!/usr/bin/env bash
# The whole test suite: installs what is missing (Debian and npm packages), builds the guest
# images (default and Debian 12; cached), starts a private PostgreSQL server for the store tests,
# then runs every test file (unit, integration, e2e with real VMs) with node's test runner.
# `npm test -- FILES` runs some.
set -Eeuo pipefail
trap 'status=$?; echo "ironbark test: line $LINENO: \"$BASH_COMMAND\" failed (exit $status)" >&2' ERR
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh test

# The guest image (and the Debian cloud kernel inside it) that the QEMU tests boot.
echo "==> default guest image"
bin/ironbark image build >/dev/null
# Debian 12 with cloud-init (test/e2e/debian-cloud-init.test.ts): a few minutes the first time,
# then found by the fingerprint of its inputs.
echo "==> Debian 12 guest image"
bin/ironbark image build debian-12 >/dev/null

pg_dir=""
stop_postgres() { if [ -n "$pg_dir" ]; then scripts/test-postgres.sh stop "$pg_dir" || true; pg_dir=""; fi; }
trap stop_postgres EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
if [ -z "${IRONBARK_TEST_PG_URL:-}" ]; then
  echo "==> private PostgreSQL server"
  pg_dir=$(mktemp -d "${TMPDIR:-/tmp}/ironbark-test-pg.XXXXXX")
  # A separate assignment, so that a failure to start PostgreSQL stops the run here.
  pg_url=$(scripts/test-postgres.sh start "$pg_dir")
  export IRONBARK_TEST_PG_URL=$pg_url
fi
# Debian's aws CLI, even when another one comes first in PATH.
[ -x /usr/bin/aws ] && export IRONBARK_AWS_CLI=${IRONBARK_AWS_CLI:-/usr/bin/aws}
if [ $# -gt 0 ]; then files=("$@"); else mapfile -t files < <(find test -name '*.test.ts' | sort); fi
# Two groups run side by side, each one file at a time: the real-VM and network-namespace files
# (test/e2e/) and the rest (unit, integration). A TCG guest keeps about one core busy and an e2e
# file mostly waits on its guests, so the other core runs the rest meanwhile; two VM files at once
# would only slow each other's boots. The rest's report is shown when it ends, not interleaved.
vm_files=() other_files=()
for f in "${files[@]}"; do
  case "$f" in */e2e/*|e2e/*) vm_files+=("$f") ;; *) other_files+=("$f") ;; esac
done
run_files() { node --import tsx --test --test-concurrency=1 --test-timeout=600000 "$@"; }
other_status=0 vm_status=0 other_pid=""
if [ ${#other_files[@]} -gt 0 ] && [ ${#vm_files[@]} -gt 0 ]; then
  other_log=$(mktemp "${TMPDIR:-/tmp}/ironbark-test-rest.XXXXXX")
  stop_rest() { if [ -n "$other_pid" ]; then kill "$other_pid" 2>/dev/null || true; fi; rm -f "$other_log"; stop_postgres; }
  trap stop_rest EXIT
  echo "==> unit and integration tests (${#other_files[@]} files) beside the e2e tests; their report follows the e2e one"
  node --import tsx --test --test-concurrency=1 --test-timeout=600000 "${other_files[@]}" >"$other_log" 2>&1 &
  other_pid=$!
  echo "==> e2e tests (${#vm_files[@]} files)"
  run_files "${vm_files[@]}" || vm_status=$?
  wait "$other_pid" || other_status=$?
  other_pid=""
  echo "==> unit and integration tests"
  cat "$other_log"
else
  run_files "${files[@]}" || other_status=$?
fi
[ "$vm_status" -ne 0 ] && echo "ironbark test: e2e tests failed (exit $vm_status)" >&2
[ "$other_status" -ne 0 ] && echo "ironbark test: unit/integration tests failed (exit $other_status)" >&2
if [ "$vm_status" -ne 0 ]; then exit "$vm_status"; fi
exit "$other_status"

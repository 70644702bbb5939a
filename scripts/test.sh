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
status=0
node --import tsx --test --test-concurrency=1 --test-timeout=600000 "${files[@]}" || status=$?
exit "$status"

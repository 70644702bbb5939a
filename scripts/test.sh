#!/usr/bin/env bash
# The whole test suite: installs what is missing, starts PostgreSQL on loopback for the store
# tests, then runs every test file (unit, integration, e2e with real VMs) with node's test runner.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh test
if [ -z "${IRONBARK_TEST_PG_URL:-}" ]; then
  # A separate assignment, so that a failure to start PostgreSQL stops the run here.
  pg_url=$(scripts/test-postgres.sh)
  export IRONBARK_TEST_PG_URL=$pg_url
fi
# Debian's aws CLI, even when another one comes first in PATH.
[ -x /usr/bin/aws ] && export IRONBARK_AWS_CLI=${IRONBARK_AWS_CLI:-/usr/bin/aws}
if [ $# -gt 0 ]; then files=("$@"); else mapfile -t files < <(find test -name '*.test.ts' | sort); fi
exec node --import tsx --test --test-concurrency=1 --test-timeout=600000 "${files[@]}"

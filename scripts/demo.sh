#!/usr/bin/env bash
# The embedded demo: no servers needed. With arguments, they go to `saga demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
if [ "$#" -gt 0 ]; then
    exec .venv/bin/saga demo "$@"
fi
.venv/bin/saga demo trip-booking --fail flight
echo
.venv/bin/saga demo money-transfer

#!/usr/bin/env bash
# Run every test: unit tests, host-native firmware tests, and the end-to-end tests on the emulated board.
# Sets up first (fast when already done). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
./setup.sh --no-run
exec .venv/bin/python -m pytest "$@"

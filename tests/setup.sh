#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain, on a fresh
# machine. Safe to run again; each step is skipped when already done.
#
#   - Go modules of the outside verifier (golang.org/x/mod: sumdb/note, sumdb/tlog),
#     from the Go module proxy.
set -euo pipefail
cd "$(dirname "$0")/.."

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "setup: '$1' is not installed; $2" >&2; exit 1; }
}
need cargo "install Rust (https://rustup.rs)"
need go "install Go 1.22 or newer (the outside-verifier test builds a Go program)"

echo "setup: Go modules for tests/go-verifier"
(cd tests/go-verifier && go mod download && go build -o /dev/null .)
echo "setup: done"

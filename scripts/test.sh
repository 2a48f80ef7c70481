#!/usr/bin/env bash
# The full default test run: set-up, Rust checks and tests, Python lint, types, tests.
# Self-sufficient on a fresh clone (CI runs exactly this through .ci/run).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
"$ROOT/scripts/setup.sh"
export PATH="$ROOT/.venv/bin:$HOME/.cargo/bin:$PATH"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }

step "cargo fmt --check"
cargo fmt --all --check
step "cargo clippy (pure Rust and with the Python binding)"
cargo clippy --all-targets -- -D warnings
cargo clippy --features python -- -D warnings
step "cargo test"
cargo test -q
step "ruff"
ruff check python tests bench scripts cloud
ruff format --check python tests bench scripts cloud
step "mypy --strict"
mypy python/edgenode
mypy --strict cloud/edgehub
step "pytest"
pytest "$@"

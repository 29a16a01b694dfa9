#!/usr/bin/env bash
# A bounded fuzzing session of the reassembler, for CI: fuzz/run.sh [SECONDS]
# (default 60). Fails if the target finds a crash; the input is left in
# fuzz/artifacts/reasm/.
#
# Uses the nightly toolchain when rustup has one. Otherwise stable with
# RUSTC_BOOTSTRAP=1, which lets cargo-fuzz pass its -Z flags, and without a
# sanitizer (ASan needs nightly's runtime); the target is safe Rust, its
# invariants are assertions, so coverage-guided search still finds what it
# is after.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
export PATH="$HOME/.cargo/bin:$PATH"

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

# FUZZ_STABLE=1 takes the stable way even where nightly is installed.
toolchain=()
flags=()
if [ "${FUZZ_STABLE:-0}" != 1 ] && rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  if [ "${FUZZ_STABLE:-0}" = 1 ]; then toolchain=(+stable); fi
  export RUSTC_BOOTSTRAP=1
  flags=(--sanitizer none)
fi

# New inputs go to a scratch directory: the committed corpus changes only
# when someone minimizes it on purpose (cargo fuzz cmin).
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

# FUZZ_DEV=1 builds without optimizations: a few times faster to build,
# slower to run; right for CI's short smoke.
if [ "${FUZZ_DEV:-0}" = 1 ]; then flags+=(--dev); fi

cargo "${toolchain[@]}" fuzz run "${flags[@]}" reasm "$scratch" corpus/reasm -- \
  -max_total_time="$secs" -max_len=4096 -print_final_stats=1

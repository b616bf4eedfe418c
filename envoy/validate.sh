#!/usr/bin/env bash
# `envoy --mode validate` on every envoy/*.yaml (or the files given), as `make validate-envoy`
# runs it. The shipped configurations name the module where an operator installs it,
# /etc/envoy/uma_pep.wasm (see envoy/regenerate.sh); Envoy's validation opens the module, so that
# path is pointed at the module just built ($WASM) in a copy of each file. Relative paths in a
# file are resolved against the repository root, where this runs.
#
# Usage: ENVOY=.venv/bin/envoy WASM=target/wasm32-wasip1/release/uma_pep.wasm envoy/validate.sh [FILE...]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
envoy="${ENVOY:-.venv/bin/envoy}"
wasm="$(realpath -m "${WASM:-target/wasm32-wasip1/release/uma_pep.wasm}")"
installed=/etc/envoy/uma_pep.wasm
if [[ ! -f "$wasm" ]]; then
  echo "validate.sh: the filter is not built ($wasm): make wasm" >&2
  exit 2
fi
files=("$@")
if [[ ${#files[@]} -eq 0 ]]; then
  files=(envoy/*.yaml)
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for f in "${files[@]}"; do
  echo "envoy --mode validate $f"
  copy="$work/$(basename "$f")"
  sed "s#$installed#$wasm#g" "$f" >"$copy"
  "$envoy" --mode validate -c "$copy" --disable-hot-restart --log-level error
done

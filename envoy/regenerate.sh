#!/usr/bin/env bash
# Regenerates the shipped configurations that `pepctl render` produces, so that the examples and
# the renderer cannot diverge:
#
#   envoy/keycloak.yaml  envoy/gluu.yaml  istio/wasmplugin.yaml
#
# Each file records how it is made in its header (the comment lines up to and including the
# `# pepctl render ...` line, kept as they are):
#
#   # client.json: {"client_id": "...", "client_secret": "..."}   the client file render reads
#   # pepctl render TARGET FLAGS...                                 the command, on one line
#
# Everything below that line is pepctl's output, rendered with that client file and an empty
# repository (the shipped configurations get their resources from pepctl at run time through
# `resource_sync`). To change a shipped file, change its header and run this script; never edit
# below the header. tests/pepctl/test_render_shipped.py fails when a file differs from the render.
#
# Usage: envoy/regenerate.sh [--check] [FILE...]
#   --check   write nothing; print a diff and exit 1 when a file is not what pepctl renders
#   PEPCTL    the pepctl binary (default: target/debug/pepctl, else target/release/pepctl)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

check=0
if [[ "${1:-}" == "--check" ]]; then
  check=1
  shift
fi
files=("$@")
if [[ ${#files[@]} -eq 0 ]]; then
  files=(envoy/keycloak.yaml envoy/gluu.yaml istio/wasmplugin.yaml)
fi

pepctl="${PEPCTL:-}"
if [[ -z "$pepctl" ]]; then
  for candidate in target/debug/pepctl target/release/pepctl; do
    if [[ -x "$candidate" ]]; then
      pepctl="$candidate"
      break
    fi
  done
fi
if [[ -z "$pepctl" || ! -x "$pepctl" ]]; then
  echo "regenerate.sh: no pepctl binary: run \`cargo build -p pepctl\` or set PEPCTL" >&2
  exit 2
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

status=0
for file in "${files[@]}"; do
  header="$(awk '{print} /^# pepctl render /{exit}' "$file")"
  command_line="$(grep -m1 '^# pepctl render ' "$file" || true)"
  client_json="$(grep -m1 '^# client.json: ' "$file" || true)"
  if [[ -z "$command_line" || -z "$client_json" ]]; then
    echo "regenerate.sh: $file has no '# client.json: ...' and '# pepctl render ...' header lines" >&2
    status=2
    continue
  fi
  # The flags are words without spaces or quotes (checked): no shell evaluation of the header.
  flags="${command_line#\# pepctl render }"
  if [[ "$flags" == *[\"\'\\\$\`\;\&\<\>\(\)\*\?]* ]]; then
    echo "regenerate.sh: $file: the recorded flags may hold no quotes, \$, \`, ;, &, <, >, (, ), * or ?" >&2
    status=2
    continue
  fi
  read -r -a args <<<"$flags"
  umask 077
  printf '%s\n' "${client_json#\# client.json: }" >"$work/client.json"
  rm -f "$work/pepctl.db"*
  if ! body="$(PEPCTL_LOG=error "$pepctl" render "${args[@]}" --client "$work/client.json" --db "$work/pepctl.db")"; then
    echo "regenerate.sh: $file: pepctl render ${args[*]} failed" >&2
    status=2
    continue
  fi
  printf '%s\n%s\n' "$header" "$body" >"$work/out"
  if [[ $check -eq 1 ]]; then
    if ! diff -u "$file" "$work/out" --label "$file (shipped)" --label "$file (pepctl render)"; then
      echo "regenerate.sh: $file differs from what pepctl renders: run envoy/regenerate.sh" >&2
      status=1
    fi
  elif ! cmp -s "$file" "$work/out"; then
    cp "$work/out" "$file"
    echo "regenerated $file"
  fi
done
exit $status

#!/usr/bin/env bash
# Runs the fuzz targets: builds once, then each target for <seconds> with its committed seed
# corpus (corpus/<target>, read only) and the regression inputs (regressions/<target>).
#   fuzz/run.sh <seconds-per-target> [target...]        (default: every target)
#   fuzz/run.sh replay [target...]   every committed input once, no exploration: deterministic,
#                                    the mode `make test` runs (a crash there is a regression)
# Env: FUZZ_JOBS (targets run at once, default 1), FUZZ_SANITIZER (none|address, default none:
# core is safe Rust and overflow checks and debug assertions are on either way),
# FUZZ_RSS_MB (default 2048), FUZZ_MAX_LEN (default 65536), FUZZ_NICE (default 10).
# New inputs go to fuzz/work/<target>, crashes to fuzz/artifacts/<target> (both ignored by git).
# Exit status: 0 when no target crashed, 1 otherwise, 2 on a usage or toolchain error.
set -uo pipefail
cd "$(dirname "$0")"

seconds=${1:-}
replay=0
if [[ "$seconds" == replay ]]; then replay=1; seconds=0; fi
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "usage: $0 <seconds-per-target>|replay [target...]" >&2; exit 2; }
shift
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "run.sh: the nightly toolchain is missing (rustup toolchain install nightly)" >&2; exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "run.sh: cargo-fuzz is missing (cargo install cargo-fuzz --locked)" >&2; exit 2
fi
targets=("$@")
((${#targets[@]})) || mapfile -t targets < <(cargo +nightly fuzz list)
sanitizer=${FUZZ_SANITIZER:-none}
rss=${FUZZ_RSS_MB:-2048}
max_len=${FUZZ_MAX_LEN:-65536}
jobs=${FUZZ_JOBS:-1}
nice_level=${FUZZ_NICE:-10}

echo "== building ${#targets[@]} targets (sanitizer $sanitizer)"
nice -n "$nice_level" cargo +nightly fuzz build -s "$sanitizer" --target-dir target || exit 2

# found.tar.xz: the inputs earlier fuzz runs found, minimised for coverage (libFuzzer -merge=1),
# kept compressed; unpacked into work/found/ for replay and as extra seeds.
unpack_found() {
    rm -rf work/found && mkdir -p work && tar -xJf found.tar.xz -C work || exit 2
}

replay_one() {
    local t=$1 log=work/$1.replay.log
    local dirs=("corpus/$t")
    [[ -d work/found/$t ]] && dirs+=("work/found/$t")
    [[ -d regressions/$t ]] && dirs+=("regressions/$t")
    # -runs=0: each input of the given directories once, nothing new; the directories are only read.
    cargo +nightly fuzz run -s "$sanitizer" --target-dir target "$t" "${dirs[@]}" -- \
        -runs=0 -rss_limit_mb="$rss" -max_len="$max_len" -timeout=10 >"$log" 2>&1
    local rc=$?
    local inputs
    inputs=$(find "${dirs[@]}" -type f ! -name '*.md' | wc -l)
    printf '%-16s rc=%-3s inputs=%-6s (log fuzz/%s)\n' "$t" "$rc" "$inputs" "$log"
    ((rc != 0)) && tail -20 "$log"
    [[ $rc -eq 0 ]]
}

run_one() {
    local t=$1 log=work/$1.log
    mkdir -p "work/$t" "artifacts/$t" "corpus/$t"
    local dirs=("work/$t" "corpus/$t")
    [[ -d work/found/$t ]] && dirs+=("work/found/$t")
    [[ -d regressions/$t ]] && dirs+=("regressions/$t")
    # A regression input must not crash before the timed run starts.
    nice -n "$nice_level" cargo +nightly fuzz run -s "$sanitizer" --target-dir target "$t" "${dirs[@]}" -- \
        -max_total_time="$seconds" -rss_limit_mb="$rss" -max_len="$max_len" -timeout=10 \
        -print_final_stats=1 >"$log" 2>&1
    local rc=$?
    local runs crashes
    runs=$(grep -Eo '^stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1)
    crashes=$(find "artifacts/$t" -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' -o -name 'leak-*' \) | wc -l)
    printf '%-16s rc=%-3s runs=%-10s crash/oom/timeout artifacts=%s  (log fuzz/%s)\n' "$t" "$rc" "${runs:-?}" "$crashes" "$log"
    [[ $rc -eq 0 ]]
}

unpack_found
if ((replay)); then
    echo "== replaying the committed inputs of ${#targets[@]} targets"
    status=0
    for t in "${targets[@]}"; do replay_one "$t" || status=1; done
    ((status == 0)) && echo "== every committed input passes" || echo "== REGRESSION: a committed input fails"
    exit $status
fi

echo "== running each target ${seconds}s, $jobs at a time"
status=0
pids=()
for t in "${targets[@]}"; do
    run_one "$t" &
    pids+=($!)
    if ((${#pids[@]} >= jobs)); then
        wait "${pids[0]}" || status=1
        pids=("${pids[@]:1}")
    fi
done
for p in "${pids[@]}"; do wait "$p" || status=1; done
((status == 0)) && echo "== no crash" || echo "== CRASHES: see fuzz/artifacts/<target>/"
exit $status

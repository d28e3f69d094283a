#!/usr/bin/env bash
# tests/fuzz/run.sh [SECONDS]: the fuzzing part of the suite (a ctest entry).
#   1. builds libtq and the libFuzzer targets with clang into .build/fuzz
#      (-DTQ_FUZZ=ON: -fsanitize=fuzzer,address,undefined);
#   2. replays every saved crash of each target (tests/fuzz/<target>/regressions/);
#   3. fuzzes each target for SECONDS (default TQ_FUZZ_SECONDS or 15; six
#      targets, 90 s in all), from its seeds (tests/fuzz/<target>/) and a
#      working corpus under .build/fuzz/corpus/ that never enters the tree;
#   4. prints per target executions per second and coverage (libFuzzer's
#      cov: and ft:).
# A crash, leak, sanitizer report or timeout fails the run, and libFuzzer
# saves the input as tests/fuzz/<target>/regressions/crash-* (or leak-*,
# timeout-*): commit it with the fix, every later run replays it.
# Exit 77 (skipped) when clang is missing.
set -uo pipefail
top=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
secs=${1:-${TQ_FUZZ_SECONDS:-15}}
build=${TQ_FUZZ_BUILD_DIR:-$top/.build/fuzz}
targets=(request_file pipeline template http_request queue_id redis_url)

cc=$(command -v clang-14 || command -v clang || true)
if [ -z "$cc" ]; then
  echo "fuzz: SKIPPED: clang not found (Debian package clang-14)"
  exit 77
fi
if ! cmake -S "$top" -B "$build" -DCMAKE_C_COMPILER="$cc" -DTQ_FUZZ=ON \
       -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$build.configure.log" 2>&1; then
  cat "$build.configure.log"; echo "fuzz: FAILED: configure"; exit 1
fi
if ! nice -n 5 cmake --build "$build" -j "${TQ_BUILD_JOBS:-2}" >"$build.build.log" 2>&1; then
  cat "$build.build.log"; echo "fuzz: FAILED: build"; exit 1
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
failed=()
for t in "${targets[@]}"; do
  bin="$build/tests/fuzz/fuzz_$t"
  seeds="$top/tests/fuzz/$t"
  regs="$seeds/regressions"
  corpus="$build/corpus/$t"
  log="$build/$t.log"
  mkdir -p "$regs" "$corpus"
  mapfile -t saved < <(find "$regs" -type f ! -name '.*' ! -name '*.md' | sort)
  if [ "${#saved[@]}" -gt 0 ] && ! "$bin" "${saved[@]}" >"$build/$t.replay.log" 2>&1; then
    tail -n 40 "$build/$t.replay.log"
    echo "fuzz $t: FAILED: a saved regression crashes again"
    failed+=("$t")
    continue
  fi
  # -max_len 65536: a request line of CSV/JSONL is at most 64 KiB anyway.
  if ! "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 -artifact_prefix="$regs/" "$corpus" "$seeds" >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz $t: FAILED: input saved in $regs/"
    failed+=("$t")
    continue
  fi
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1)
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$done_line")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$done_line")
  eps=$(sed -n 's/.* exec\/s: \([0-9]*\).*/\1/p' <<<"$done_line")
  printf 'fuzz %-13s %9s runs  %7s exec/s  cov %5s  ft %6s  (%s s, %d saved regressions)\n' \
    "$t" "${runs:-?}" "${eps:-?}" "${cov:-?}" "${ft:-?}" "$secs" "${#saved[@]}"
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]}"
  exit 1
fi
echo "fuzz: OK"

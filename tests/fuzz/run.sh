#!/usr/bin/env bash
# Build the libFuzzer targets and run each one for a while on its corpus.
#
#   tests/fuzz/run.sh [--merge] [--only PATTERN] [SECONDS]
#
# Builds every tests/fuzz/fuzz_*.c with clang (-fsanitize=fuzzer,address,
# undefined) in build-fuzz/, then runs each target for SECONDS (default 60;
# 0 runs the corpus once and stops) on a temporary copy of
# tests/fuzz/corpus/<target>/ (with tests/fuzz/<target>.dict if there is one),
# so the repository's corpus is left as it is.
# --merge adds the inputs the run found that reach new code to the repository's
# corpus (libFuzzer -merge=1); --only PATTERN runs the targets whose name
# matches *PATTERN* (e.g. --only l1, --only fuzz_req).
#
# Prints TAP (one line per target), so it runs under prove:
#   prove --exec bash tests/fuzz/run.sh :: 30
# Exits non-zero if a target crashed, leaked, hung or broke one of its checks;
# the input that did it is kept in build-fuzz/artifacts/ (add it to the
# corpus as regress-<what> once fixed), and the end of the log is printed.
#
# Environment: HOTPROXY_FUZZ_TIMEOUT (seconds one input may take, default 25),
# HOTPROXY_FUZZ_RSS_MB (memory limit per target, default 2048).
set -euo pipefail

merge=0
only=
secs=60
while (($#)); do
    case "$1" in
    --merge) merge=1 ;;
    --only)
        [[ $# -ge 2 ]] || { echo "run.sh: --only needs a pattern" >&2; exit 2; }
        only=$2
        shift
        ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *)
        [[ $1 =~ ^[0-9]+$ ]] || { echo "run.sh: unknown argument '$1' (try --help)" >&2; exit 2; }
        secs=$1
        ;;
    esac
    shift
done

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=$src/build-fuzz
per_input=${HOTPROXY_FUZZ_TIMEOUT:-25}
rss=${HOTPROXY_FUZZ_RSS_MB:-2048}
ulimit -c 0 2>/dev/null || true

targets=()
for f in "$src"/tests/fuzz/fuzz_*.c; do
    t=$(basename "$f" .c)
    [[ -z $only || $t == *$only* ]] && targets+=("$t")
done
if ((${#targets[@]} == 0)); then
    echo "1..0 # SKIP no fuzz target${only:+ matching \"$only\"}"
    exit 0
fi

if ! command -v clang >/dev/null 2>&1; then
    echo "1..0 # SKIP clang is not installed (bash .ci/deps installs it)"
    exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "1..${#targets[@]}"
if ! CC=clang cmake -S "$src" -B "$build" -DHOTPROXY_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        >"$tmp/configure.log" 2>&1 ||
    ! cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)" --target "${targets[@]}" >"$tmp/build.log" 2>&1; then
    sed 's/^/# /' "$tmp/configure.log" "$tmp/build.log" | tail -40
    n=0
    for t in "${targets[@]}"; do
        n=$((n + 1))
        echo "not ok $n - $t: does not build"
    done
    exit 1
fi

mkdir -p "$build/artifacts"
failed=0
n=0
for t in "${targets[@]}"; do
    n=$((n + 1))
    name=${t#fuzz_}
    corpus=$src/tests/fuzz/corpus/$name
    work=$tmp/corpus-$name
    mkdir -p "$work" "$corpus"
    cp -R "$corpus"/. "$work"/ 2>/dev/null || true
    log=$tmp/$t.log
    args=(-timeout="$per_input" -rss_limit_mb="$rss" -artifact_prefix="$build/artifacts/$t-" -print_final_stats=1)
    [[ -f $src/tests/fuzz/$name.dict ]] && args+=(-dict="$src/tests/fuzz/$name.dict")
    if ((secs > 0)); then args+=(-max_total_time="$secs"); else args+=(-runs=0); fi
    rc=0
    # ASan's leak check is libFuzzer's own (-detect_leaks=1 by default): a
    # leak fails the input like a crash.  Bound the run in case it wedges.
    timeout --kill-after=10 $((secs + per_input + 120)) "$build/tests/fuzz/$t" "${args[@]}" "$work" >"$log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1 || true)
    cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2 || true)
    ft=$(grep -Eo 'ft: [0-9]+' "$log" | tail -1 | cut -d' ' -f2 || true)
    files=$(find "$work" -type f | wc -l)
    summary="$t: ${secs}s, ${execs:-?} execs, cov ${cov:-?} edges, ft ${ft:-?}, corpus $(find "$corpus" -type f | wc -l) -> $files inputs"
    if ((rc == 0)); then
        echo "ok $n - $summary"
        if ((merge)); then
            before=$(find "$corpus" -type f | wc -l)
            "$build/tests/fuzz/$t" -merge=1 -timeout="$per_input" -rss_limit_mb="$rss" "$corpus" "$work" >"$tmp/$t.merge.log" 2>&1 ||
                { echo "# $t: merge failed"; tail -5 "$tmp/$t.merge.log" | sed 's/^/#   /'; }
            echo "# $t: merged, corpus $before -> $(find "$corpus" -type f | wc -l) inputs"
        fi
    else
        failed=$((failed + 1))
        echo "not ok $n - $summary (exit $rc)"
        { grep -E -A40 'FUZZ CHECK FAILED|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error' "$log" ||
            tail -40 "$log"; } | head -60 | cut -c1-300 | sed 's/^/#   /' || true
        grep -E 'Test unit written to' "$log" | sed 's/^/#   /' || true
    fi
done
((failed == 0))

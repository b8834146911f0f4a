#!/usr/bin/env bash
# The test command: install deps, build, and run every test under prove.
#
#   tests/run.sh [--no-san] [--no-fuzz] [--only PATTERN] [--jobs N] [--verbose]
#
# Two passes, each over its own build: build/ (RelWithDebInfo) and build-san/
# (-DHOTPROXY_SANITIZE=ON, ASan + UBSan, leak checking on where it works).
# Each pass runs, under `prove`, the unit test binaries build*/tests/unit/test_*,
# the integration binaries build*/tests/integration/test_* and the executable
# scripts tests/integration/*.sh, with these in the environment:
#   HOTPROXY_BIN    absolute path of that build's hotproxy
#   HOTPROXY_BUILD  absolute path of that build directory
#   HOTPROXY_SRC    absolute path of the source tree
#
# --only PATTERN keeps the tests whose file name matches the shell glob
# *PATTERN* (e.g. --only resp, --only 'test_conf*').
#
# Then a fuzz pass: tests/fuzz/run.sh builds the libFuzzer targets
# (tests/fuzz/fuzz_*.c, clang) in build-fuzz/ and runs each for
# HOTPROXY_FUZZ_SECONDS (default 60; 0 or --no-fuzz skips the pass) on a
# copy of its corpus.  With --only, the pass runs only for a pattern that
# says "fuzz", and only the targets whose name matches (--only fuzz: all of
# them and test_netfuzz; --only fuzz_l1: one; --only l1: none).
#
# Everything is bounded: each test file gets HOTPROXY_TEST_TIMEOUT seconds
# (default 300; a file killed by it shows in prove as "returned 124") and the
# whole run HOTPROXY_RUN_BUDGET seconds (default 2700).
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
}

san=1
fuzz=1
only=
jobs=1
verbose=()
while (($#)); do
    case "$1" in
    --no-san) san=0 ;;
    --no-fuzz) fuzz=0 ;;
    --only)
        [[ $# -ge 2 ]] || { echo "run.sh: --only needs a pattern" >&2; exit 2; }
        only=$2
        shift
        ;;
    --only=*) only=${1#--only=} ;;
    --jobs | -j)
        [[ $# -ge 2 && $2 =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: --jobs needs a number" >&2; exit 2; }
        jobs=$2
        shift
        ;;
    --verbose | -v) verbose=(--verbose) ;;
    -h | --help) usage; exit 0 ;;
    *) echo "run.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$src"

per_test=${HOTPROXY_TEST_TIMEOUT:-300}
budget=${HOTPROXY_RUN_BUDGET:-2700}
deadline=$((SECONDS + budget))
ncpu=$(nproc 2>/dev/null || echo 2)

# Seconds left of the run's budget; every long step is bounded by it.
remaining() {
    local left=$((deadline - SECONDS))
    ((left > 0)) || left=1
    echo "$left"
}

bounded() {
    local rc=0
    timeout --kill-after=10 "$(remaining)" "$@" || rc=$?
    if ((rc == 124 || rc == 137)); then
        echo "run.sh: '$*' ran out of the ${budget}s budget" >&2
    fi
    return "$rc"
}

# Sanitizer aborts must not litter the tree with core files.
ulimit -c 0 2>/dev/null || true
tmpdir=$(mktemp -d)
trap 'rm -rf "$tmpdir"' EXIT
log=$tmpdir/prove.log

echo "== deps"
bounded bash "$src/.ci/deps"

builds=(build)
((san)) && builds+=(build-san)

for b in "${builds[@]}"; do
    flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo)
    [[ $b == build-san ]] && flags+=(-DHOTPROXY_SANITIZE=ON)
    echo "== configure + build $b"
    bounded cmake -S "$src" -B "$src/$b" "${flags[@]}" >"$tmpdir/configure.log" 2>&1 || {
        cat "$tmpdir/configure.log" >&2
        echo "run.sh: configuring $b failed" >&2
        exit 1
    }
    bounded cmake --build "$src/$b" -j "$ncpu" || {
        echo "run.sh: building $b failed" >&2
        exit 1
    }
done

# LeakSanitizer needs ptrace; some containers forbid it and LSan then dies with
# "LeakSanitizer has encountered a fatal error" in every process.  Probe once
# with a program that leaks nothing and fall back to detect_leaks=0 if so.
lsan_works() {
    local dir rc=0
    dir=$(mktemp -d)
    printf 'int main(void) { return 0; }\n' >"$dir/p.c"
    if cc -fsanitize=address "$dir/p.c" -o "$dir/p" 2>/dev/null; then
        ASAN_OPTIONS=detect_leaks=1 "$dir/p" >/dev/null 2>&1 || rc=1
    else
        rc=1
    fi
    rm -rf "$dir"
    return "$rc"
}

# The test files of one build, filtered by --only.
collect() {
    local b=$1 f name
    local -a found=()
    shopt -s nullglob
    for f in "$src/$b"/tests/unit/test_* "$src/$b"/tests/integration/test_* "$src"/tests/integration/*.sh; do
        [[ -f $f ]] || continue
        name=$(basename "$f")
        # CMake leaves no other files there, but be safe about objects and logs.
        case "$name" in *.o | *.log | *.d) continue ;; esac
        if [[ -n $only && $name != *$only* ]]; then continue; fi
        found+=("$f")
    done
    shopt -u nullglob
    ((${#found[@]})) && printf '%s\n' "${found[@]}"
    return 0
}

# The fuzz targets the last pass runs (see the top).
fuzz_secs=${HOTPROXY_FUZZ_SECONDS:-60}
fuzz_targets=()
if ((fuzz)) && [[ $fuzz_secs =~ ^[0-9]+$ ]] && ((fuzz_secs > 0)); then
    for f in "$src"/tests/fuzz/fuzz_*.c; do
        [[ -f $f ]] || continue
        name=$(basename "$f" .c)
        # --only l1 means the l1 tests, not ten minutes of fuzzing: a
        # pattern picks fuzz targets only when it says "fuzz"
        [[ -z $only || ($only == *fuzz* && $name == *$only*) ]] && fuzz_targets+=("$name")
    done
fi

files_total=0
files_failed=0
failed_passes=()
pass_failed() {
    [[ " ${failed_passes[*]} " == *" $1 "* ]] || failed_passes+=("$1")
}

for b in "${builds[@]}"; do
    mapfile -t tests < <(collect "$b")
    if ((${#tests[@]} == 0)); then
        # --only may pick fuzz targets alone
        ((${#fuzz_targets[@]})) && continue
        echo "run.sh: no tests found for $b${only:+ matching \"$only\"}" >&2
        pass_failed "$b"
        continue
    fi
    notexec=()
    for t in "${tests[@]}"; do
        [[ -x $t ]] || notexec+=("$t")
    done
    if ((${#notexec[@]})); then
        echo "run.sh: not executable (chmod +x them): ${notexec[*]}" >&2
        files_failed=$((files_failed + ${#notexec[@]}))
        files_total=$((files_total + ${#notexec[@]}))
        pass_failed "$b"
        mapfile -t tests < <(for t in "${tests[@]}"; do [[ -x $t ]] && echo "$t"; done)
        ((${#tests[@]})) || continue
    fi

    export HOTPROXY_SRC="$src"
    export HOTPROXY_BUILD="$src/$b"
    export HOTPROXY_BIN="$src/$b/hotproxy"
    if [[ $b == build-san ]]; then
        if lsan_works; then
            export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
        else
            echo "run.sh: LeakSanitizer does not work here (ptrace?); leak checks off" >&2
            export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
        fi
        export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    else
        unset ASAN_OPTIONS UBSAN_OPTIONS
    fi

    echo "== prove $b (${#tests[@]} files)"
    rc=0
    # Each file runs under timeout(1), which also reaps the process group the
    # test leaves behind if it hangs; prove itself is bounded by the budget.
    bounded prove --failures --exec "timeout --kill-after=10 $per_test" -j "$jobs" "${verbose[@]}" \
        "${tests[@]}" 2>&1 | tee "$log" || rc=$?
    files_total=$((files_total + ${#tests[@]}))
    if ((rc != 0)); then
        pass_failed "$b"
        # prove's "Test Summary Report" names each failed file once, followed
        # by "(Wstat: ...)"; if prove was killed there is no report at all.
        n=$(grep -c '(Wstat: ' "$log" || true)
        ((n > 0)) || n=${#tests[@]}
        files_failed=$((files_failed + n))
    fi
done

# The fuzz pass, under prove like the others: one TAP line per target.
if ((${#fuzz_targets[@]})); then
    echo "== fuzz (${#fuzz_targets[@]} targets, ${fuzz_secs}s each)"
    unset ASAN_OPTIONS UBSAN_OPTIONS
    fuzz_args=("$fuzz_secs")
    [[ -n $only ]] && fuzz_args+=(--only "$only")
    rc=0
    bounded prove --failures --exec "timeout --kill-after=10 $((fuzz_secs * ${#fuzz_targets[@]} + 600)) bash" \
        "${verbose[@]}" "$src/tests/fuzz/run.sh" :: "${fuzz_args[@]}" 2>&1 | tee "$log" || rc=$?
    files_total=$((files_total + 1))
    if ((rc != 0)); then
        pass_failed fuzz
        files_failed=$((files_failed + 1))
    fi
fi

echo "== summary"
if ((${#failed_passes[@]})); then
    echo "run.sh: failures in: ${failed_passes[*]}"
fi
echo "files: $((files_total - files_failed)) passed, $files_failed failed"
((${#failed_passes[@]} == 0))

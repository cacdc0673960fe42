#!/bin/sh
# Runs each test binary given, prints its output, and closes with one summary
# line "N passed, N failed" counting Check test cases across all binaries.
# SHOAL_VALGRIND=1 runs each binary under valgrind (errors fail the run).
pass=0; fail=0; failed_bins=""
for t in "$@"; do
    echo "== $t"
    if [ -n "$SHOAL_VALGRIND" ]; then
        out=$(CK_FORK=no valgrind -q --error-exitcode=99 --leak-check=full \
              --errors-for-leak-kinds=definite "$t" 2>&1); rc=$?
    else
        out=$("$t" 2>&1); rc=$?
    fi
    printf '%s\n' "$out" | tail -n 60
    line=$(printf '%s\n' "$out" | grep -E '^[0-9]+%: Checks: ' | tail -n 1)
    if [ -n "$line" ]; then
        n=$(echo "$line" | sed -E 's/.*Checks: ([0-9]+).*/\1/')
        f=$(echo "$line" | sed -E 's/.*Failures: ([0-9]+).*/\1/')
        e=$(echo "$line" | sed -E 's/.*Errors: ([0-9]+).*/\1/')
        pass=$((pass + n - f - e)); fail=$((fail + f + e))
    fi
    if [ $rc -ne 0 ]; then
        failed_bins="$failed_bins $t"
        [ -z "$line" ] && fail=$((fail + 1))
    fi
done
echo
[ -n "$failed_bins" ] && echo "failing:$failed_bins"
echo "$pass passed, $fail failed"
[ -z "$failed_bins" ]

#!/bin/sh
# Renders the inferd metric set with metrics_dump and runs `promtool check metrics` on it.
# Fails on a non-zero exit or on ANY output (some promtool versions print lint findings and
# still exit 0). Exits 77 (ctest SKIP_RETURN_CODE) when promtool is not installed.
# Usage: promtool_check.sh METRICS_DUMP OUTFILE [PREFIX]
set -u
dump=$1
outfile=$2
prefix=${3:-inferd_}
if ! command -v promtool >/dev/null 2>&1; then
    echo "promtool not installed: skipping"
    exit 77
fi
"$dump" "$prefix" >"$outfile" || { echo "metrics_dump failed"; exit 1; }
[ -s "$outfile" ] || { echo "empty exposition"; exit 1; }
findings=$(promtool check metrics <"$outfile" 2>&1)
rc=$?
if [ $rc -ne 0 ] || [ -n "$findings" ]; then
    echo "promtool check metrics (exit $rc) on $outfile:"
    echo "$findings"
    exit 1
fi
echo "promtool check metrics: clean ($(wc -l <"$outfile") lines, prefix \"$prefix\")"

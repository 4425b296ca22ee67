#!/bin/sh
# Renders the inferd metric set as OpenMetrics with metrics_dump and feeds it to Prometheus's
# OpenMetrics parser (`promtool tsdb create-blocks-from openmetrics`, which wants timestamps,
# so one is appended to each sample line). Checks # EOF, escaping and sample syntax.
# Exits 77 (ctest SKIP_RETURN_CODE) when promtool is not installed.
# Usage: openmetrics_check.sh METRICS_DUMP WORKDIR
set -u
dump=$1
work=$2
if ! command -v promtool >/dev/null 2>&1; then
    echo "promtool not installed: skipping"
    exit 77
fi
rm -rf "$work" && mkdir -p "$work" || exit 1
"$dump" inferd_ "application/openmetrics-text; version=1.0.0" >"$work/om.txt" ||
    { echo "metrics_dump failed"; exit 1; }
[ "$(tail -n 1 "$work/om.txt")" = "# EOF" ] || { echo "no trailing # EOF"; exit 1; }
grep -q '^inferd_requests_created{' "$work/om.txt" || { echo "no _created samples"; exit 1; }
grep -q '^# TYPE inferd_requests counter$' "$work/om.txt" ||
    { echo "counter family not named without _total"; exit 1; }
sed -E '/^#/! s/$/ 1700000000/' "$work/om.txt" >"$work/om_ts.txt"
out=$(promtool tsdb create-blocks-from openmetrics "$work/om_ts.txt" "$work/blocks" 2>&1)
rc=$?
samples=$(grep -cv '^#' "$work/om.txt")
if [ $rc -ne 0 ] || ! echo "$out" | grep -q "BLOCK ULID" ||
    ! echo "$out" | grep -qE "[[:space:]]$samples[[:space:]]+$samples[[:space:]]"; then
    echo "Prometheus OpenMetrics parser rejected $work/om.txt (exit $rc, $samples samples):"
    echo "$out"
    exit 1
fi
echo "OpenMetrics parse: clean ($samples samples)"

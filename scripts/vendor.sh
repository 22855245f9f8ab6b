#!/usr/bin/env bash
# Refresh the front-end libraries vendored from the npm registry, at the
# pinned versions below, with their licences. Nothing is loaded from a CDN at
# run time; the files are committed:
#   static/vendor/            htmx and Chart.js for the admin; analytics-next's
#                             standalone build, which the collector serves to
#                             Segment's standard snippet (analytics._cdn = xtag)
#   tests/support/sdks/       the browser SDKs the Chromium tests run as sites do
set -euo pipefail
cd "$(dirname "$0")/.."

HTMX=2.0.11
CHARTJS=4.6.1
ANALYTICS_NEXT=1.84.3   # @segment/analytics-next
RUDDERSTACK=3.34.1      # @rudderstack/analytics-js

out=static/vendor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "htmx.org@$HTMX" "chart.js@$CHARTJS" \
  "@segment/analytics-next@$ANALYTICS_NEXT" "@rudderstack/analytics-js@$RUDDERSTACK" >/dev/null)
for package in htmx.org-$HTMX chart.js-$CHARTJS segment-analytics-next-$ANALYTICS_NEXT \
  rudderstack-analytics-js-$RUDDERSTACK; do
  mkdir -p "$work/$package" && tar -xzf "$work/$package.tgz" -C "$work/$package"
done
mkdir -p "$out"
cp "$work/htmx.org-$HTMX/package/dist/htmx.min.js" "$out/htmx.min.js"
cp "$work/htmx.org-$HTMX/package/LICENSE" "$out/htmx.LICENSE"
cp "$work/chart.js-$CHARTJS/package/dist/chart.umd.min.js" "$out/chart.umd.min.js"
cp "$work/chart.js-$CHARTJS/package/LICENSE.md" "$out/chart.js.LICENSE.md"
cat > "$out/README.md" <<NOTE
Vendored by scripts/vendor.sh from the npm registry; do not edit by hand.

| file | package | version | licence |
|---|---|---|---|
| htmx.min.js | htmx.org | $HTMX | htmx.LICENSE (0BSD) |
| chart.umd.min.js | chart.js | $CHARTJS | chart.js.LICENSE.md (MIT) |
NOTE
(cd "$out" && sha256sum htmx.min.js chart.umd.min.js > SHA256SUMS)

next_dist="$work/segment-analytics-next-$ANALYTICS_NEXT/package/dist/umd"
rm -rf "$out/analytics-next" && mkdir -p "$out/analytics-next"
cp "$next_dist/standalone.js" "$next_dist"/*.bundle.*.js "$out/analytics-next/"
rm -f "$out/analytics-next"/*.map "$out/analytics-next"/*.gz
cp "$work/segment-analytics-next-$ANALYTICS_NEXT/package/LICENSE.MD" "$out/analytics-next/LICENSE.md"
cat > "$out/analytics-next/README.md" <<NOTE
@segment/analytics-next $ANALYTICS_NEXT (MIT, LICENSE.md), dist/umd: standalone.js and its
lazily loaded chunks. The collector serves them at /analytics.js/v1/<writeKey>/analytics.min.js
and /analytics-next/bundles/<chunk>. Vendored by scripts/vendor.sh; do not edit by hand.
NOTE

sdks=tests/support/sdks
rm -rf "$sdks" && mkdir -p "$sdks"
cp "$next_dist/index.js" "$sdks/analytics-next.umd.js"
cp "$work/segment-analytics-next-$ANALYTICS_NEXT/package/LICENSE.MD" "$sdks/analytics-next.LICENSE.md"
cp "$work/rudderstack-analytics-js-$RUDDERSTACK/package/dist/npm/modern/bundled/umd/index.js" \
  "$sdks/rudderstack.umd.js"
cp "$work/rudderstack-analytics-js-$RUDDERSTACK/package/LICENSE.md" "$sdks/rudderstack.LICENSE.md"
cat > "$sdks/README.md" <<NOTE
Browser SDKs as sites run them, for the Chromium tests (tests/system/test_sdks.py).
Vendored by scripts/vendor.sh from the npm registry; do not edit by hand.

| file | package | version | licence |
|---|---|---|---|
| analytics-next.umd.js | @segment/analytics-next (dist/umd/index.js) | $ANALYTICS_NEXT | analytics-next.LICENSE.md (MIT) |
| rudderstack.umd.js | @rudderstack/analytics-js (modern, plugins bundled) | $RUDDERSTACK | rudderstack.LICENSE.md (MIT) |
NOTE
(cd "$sdks" && sha256sum analytics-next.umd.js rudderstack.umd.js > SHA256SUMS)
echo "vendored htmx $HTMX, Chart.js $CHARTJS, analytics-next $ANALYTICS_NEXT, RudderStack $RUDDERSTACK"

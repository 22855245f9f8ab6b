#!/usr/bin/env bash
# Refresh the front-end libraries vendored into static/vendor/ from the npm
# registry, at the pinned versions below, with their licences. Nothing is
# loaded from a CDN at run time; the files are committed.
set -euo pipefail
cd "$(dirname "$0")/.."

HTMX=2.0.11
CHARTJS=4.6.1

out=static/vendor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "htmx.org@$HTMX" "chart.js@$CHARTJS" >/dev/null)
for package in htmx.org-$HTMX chart.js-$CHARTJS; do
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
echo "vendored htmx $HTMX and Chart.js $CHARTJS into $out"

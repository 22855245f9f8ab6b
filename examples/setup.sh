#!/usr/bin/env bash
# Set up xtag with the management API and the CLI only: a connection, a site,
# a pixel and a mapping; preview what an order becomes; send a test event
# through the collector; read the delivery that took it to X.
#
#   XTAG_URL=http://127.0.0.1:5000 XTAG_TOKEN=$(flask --app app xtag create-api-token admin@localhost) \
#   PIXEL_TOKEN=<from X Events Manager> examples/setup.sh
set -euo pipefail
: "${XTAG_URL:?set XTAG_URL}" "${XTAG_TOKEN:?set XTAG_TOKEN}" "${PIXEL_TOKEN:?set PIXEL_TOKEN}"
PIXEL_ID=${PIXEL_ID:-o8z6j}     # your pixel's id in X Events Manager
X_EVENT_ID=${X_EVENT_ID:-o87ne} # the event's id there
FLASK=${FLASK:-flask}

api() {  # api METHOD PATH [JSON]
  curl -sS --fail-with-body -X "$1" "$XTAG_URL/api/v1/$2" \
    -H "Authorization: Bearer $XTAG_TOKEN" -H 'Content-Type: application/json' ${3:+-d "$3"}
}
field() { python3 -c "import json, sys; print(json.load(sys.stdin)$1)"; }

connection=$(api POST connections \
  "{\"name\": \"Ads account\", \"auth_type\": \"pixel_token\", \"credentials\": {\"token\": \"$PIXEL_TOKEN\"}}" | field '["id"]')
site=$(api POST sites '{"name": "Shop", "allowed_origins": ["https://shop.example"], "default_phone_region": "US"}' | field '["id"]')
pixel=$(api POST pixels "{\"pixel_id\": \"$PIXEL_ID\", \"name\": \"Main pixel\", \"connection_id\": $connection}" | field '["id"]')
api POST mappings "{\"site_id\": $site, \"event_name\": \"Order Completed\", \"pixel\": $pixel,
  \"x_event_id\": \"$X_EVENT_ID\", \"fields\": {\"value\": \"properties.total\"}}" > /dev/null
echo "site $site, pixel $pixel, connection $connection"

echo "preview:"
api POST mappings/preview "{\"site_id\": $site, \"message\": {\"event\": \"Order Completed\",
  \"anonymousId\": \"a-1\", \"properties\": {\"order_id\": \"A-1001\", \"total\": 59.9, \"currency\": \"eur\"},
  \"context\": {\"twclid\": \"23opevjt88psuo13lu8d020qkn\"}}}" | field '["conversions"][0]["conversion"]'

$FLASK --app app xtag send-test-event "$site" "Order Completed"

for _ in $(seq 1 60); do  # the worker batches for XTAG_BATCH_WINDOW_MS, then sends
  delivered=$(api GET "deliveries?pixel=$PIXEL_ID&status=delivered&limit=1" | field '["items"]')
  if [ "$delivered" != "[]" ]; then echo "delivery: $delivered"; exit 0; fi
  sleep 0.5
done
echo "no delivery yet: is a worker running? (flask --app app xtag status)" >&2
exit 1

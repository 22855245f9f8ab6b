"""The one place that changes what xtag keeps: configuration with its audit
entries, deliveries (retries), tokens, logins, the connect flow; and the read
queries the admin and the API share. May import xtag.core, xtag.models,
xtag.x_api and xtag.pipeline; never a web package (collector, admin, api, ops)."""

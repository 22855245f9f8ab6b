"""What the worker runs: the inbox stream, intake (record events and the
conversions they make), batching, sending to X, the RQ jobs, heartbeats,
retention and the worker itself. May import xtag.core, xtag.models and
xtag.x_api; never a web package (collector, admin, api, ops)."""

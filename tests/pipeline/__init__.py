"""The worker's side (xtag.pipeline): recording, batching, sending, retention, storage."""

"""What the tests share: factories, a shop on the fake X, sending events,
signing in, real worker processes, Chromium, and the scan for raw PII."""

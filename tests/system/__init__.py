"""Real processes end to end: faults, crashes, Chromium, schemathesis, benches (slow)."""

"""Talking to X's Conversions API: auth strategies, the request, and what an answer means."""

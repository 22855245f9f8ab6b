"""The web edges through HTTP: collector, admin, management API, ops, CLI."""

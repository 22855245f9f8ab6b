"""Pure rules (xtag.core), and configuration from the environment."""

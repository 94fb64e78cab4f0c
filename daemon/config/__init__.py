"""Configuration: the settings file and environment (read once), YAML positions, model profiles."""

"""Real backends run as child processes for the integration tests (see tests/backends.py)."""

"""Plain helpers that several test modules share, one module per concept (shared fixtures live in conftest.py)."""

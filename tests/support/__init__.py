"""The tests' helpers and fixtures, one concern a module; conftest.py registers the fixtures (pytest_plugins)."""

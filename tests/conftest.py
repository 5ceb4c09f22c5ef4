"""Shared fixtures. pytest-trio runs in trio mode (pyproject), so async tests need no marker."""

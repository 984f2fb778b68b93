"""Headwater's benchmark harness (``make bench``). Results are tables, never test asserts."""

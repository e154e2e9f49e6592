"""Readers: pure functions from a raw file to plain data; they know formats, not databases."""

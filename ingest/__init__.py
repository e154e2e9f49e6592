"""Ingest: readers for raw rig files, and the auto-populated tables that load them."""

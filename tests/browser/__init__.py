"""Helpers for the report tests: build reports/summary.html from the stored tables, drive a headless Chromium."""

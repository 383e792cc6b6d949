"""What tests share: the loopback hub, the workflow runner, report pages, a headless browser; where things are."""

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
DATA = TESTS / "data"  # real captured llama.cpp output and stored tables
REPO = TESTS.parent

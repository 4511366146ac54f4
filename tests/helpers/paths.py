"""Where things are: the repository, the committed bundle fixtures, the workspace's real data."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURE_BUNDLES = REPO / "tests" / "fixtures" / "bundles"
"""Bundles of an earlier version (tests/fixtures/make_bundles.py wrote them; tests/library/test_bundle_compat.py)."""
REAL_DATA = REPO.parent / "shared" / "data" / "real"
"""The workspace's real PET/CT cases and tables, absent in some checkouts (the ``real_data`` fixture then skips)."""

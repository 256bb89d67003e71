from __future__ import annotations

from pathlib import Path

import pytest

from rag.core.config import BGE_ZH_QUERY_INSTRUCTION, EmbeddingSettings, load_settings
from rag.core.errors import ConfigError


def test_defaults_are_the_production_models(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RAG_EMBEDDING__MODEL", "RAG_LLM__MODEL", "RAG_LLM__BASE_URL", "RAG_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    s = load_settings(_env_file=None)
    assert s.embedding.model == "BAAI/bge-small-zh-v1.5"
    assert s.llm.model == "Qwen/Qwen2.5-7B-Instruct"
    assert s.llm.base_url == "http://127.0.0.1:8000/v1"
    assert s.sqlalchemy_url.startswith("sqlite:///") and s.sqlalchemy_url.endswith("var/rag.db")
    assert s.embedding.resolved_query_instruction() == BGE_ZH_QUERY_INSTRUCTION


def test_nested_environment_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RAG_LLM__BASE_URL", "http://gpu:9000/v1/")
    monkeypatch.setenv("RAG_CHUNKING__CHUNK_TOKENS", "300")
    monkeypatch.setenv("RAG_EMBEDDING__MODEL", str(tmp_path))  # a local folder is accepted
    s = load_settings(_env_file=None)
    assert s.llm.base_url == "http://gpu:9000/v1"
    assert s.chunking.chunk_tokens == 300
    assert s.embedding.model == str(tmp_path)
    assert s.embedding.resolved_query_instruction() == ""


@pytest.mark.parametrize(
    ("var", "value", "named"),
    [
        ("RAG_LLM__BASE_URL", "gpu-host:8000", "RAG_LLM__BASE_URL"),
        ("RAG_CHUNKING__OVERLAP_TOKENS", "9999", "RAG_CHUNKING"),
        ("RAG_PORT", "not-a-port", "RAG_PORT"),
        ("RAG_EMBEDDING__MODEL", "/no/such/folder", "RAG_EMBEDDING__MODEL"),
        ("RAG_DATABASE_URL", "mysql://x", "RAG_DATABASE_URL"),
    ],
)
def test_bad_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, named: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as info:
        load_settings(_env_file=None)
    assert named in str(info.value)


def test_explicit_query_instruction_wins() -> None:
    assert (
        EmbeddingSettings(model="fake:8", query_instruction="q: ").resolved_query_instruction()
        == "q: "
    )

"""The quickstart's demo with its real stand-in LLM: data/samples ingested with m3e-small, the
offline profile's model (Qwen2.5-Coder-0.5B-Instruct) behind `transformers serve`, and the
printed question answered with the handbook's rule, not an echo or a loop.

Answers are greedy (`transformers serve` samples only when the model's generation config says
so, and ours does not), so they are the same on every run; bench/stand_in_models.py measures
the same prompts for speed and quality against SmolLM2-135M.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.parsers import SUPPORTED_EXTENSIONS
from ingest.upload import stage_upload
from rag.core.config import Settings
from rag.generation.local_server import (
    served_model_name,
    start_transformers_serve,
    stop,
    wait_until_ready,
)
from rag.ml.offline_models import LOCAL_BUDGET_TOKENS, OfflineModels
from rag.qa.answer import Answer, AskSpec
from rag.services import Services
from tests.conftest import REPO

pytestmark = pytest.mark.integration

SAMPLES = REPO / "data" / "samples"
ANSWER_TOKENS = 160  # the stand-in answers these in well under 100 tokens


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def demo(
    tmp_path_factory: pytest.TempPathFactory, offline_models: OfflineModels
) -> Iterator[tuple[Services, str]]:
    tmp = tmp_path_factory.mktemp("stand-in")
    port = _free_port()
    proc = start_transformers_serve(offline_models.stand_in, port=port, log_file=tmp / "llm.log")
    try:
        base_url = f"http://127.0.0.1:{port}/v1"
        wait_until_ready(base_url, 600, proc)
        env = offline_models.env(base_url)
        settings = Settings(
            data_dir=tmp / "data",
            embedding={"model": env["RAG_EMBEDDING__MODEL"]},  # type: ignore[arg-type]
            tokenizer={"path": env["RAG_TOKENIZER__PATH"]},  # type: ignore[arg-type]
            llm={  # type: ignore[arg-type]
                "base_url": base_url,
                "model": env["RAG_LLM__MODEL"],
                "max_model_len": LOCAL_BUDGET_TOKENS,
                "max_tokens": ANSWER_TOKENS,
                "read_timeout_s": 600,  # two shared cores: other tests may be busy
            },
        )
        svc = Services.create(settings)
        try:
            kb = svc.knowledge.create_kb("demo")
            for path in sorted(SAMPLES.iterdir()):
                if path.suffix.lower() in SUPPORTED_EXTENSIONS:
                    with path.open("rb") as fh:
                        staged = stage_upload(fh, path.name, Path(settings.data_dir), 10**7)
                    svc.knowledge.add_document(kb.id, staged)
            worker = svc.worker()
            while worker.run_once():
                pass
            yield svc, kb.id
        finally:
            svc.close()
    finally:
        stop(proc)


def _ask(demo: tuple[Services, str], question: str) -> Answer:
    svc, kb_id = demo
    answer = asyncio.run(svc.answerer.answer(AskSpec(kb_id, question)))
    print(f"\n{question} -> {answer.answer!r} ({answer.finish_reason})")
    return answer


def test_the_printed_question_gets_the_handbook_answer(demo: tuple[Services, str]) -> None:
    answer = _ask(demo, "年假有多少天？")
    text = "".join((answer.answer or "").split())
    assert "十天" in text or "10天" in text, answer.answer
    assert answer.model and answer.model.startswith(
        served_model_name(Path("Qwen2.5-Coder-0.5B-Instruct"))
    )
    assert answer.degenerate is None and not answer.truncated
    assert "你是" not in text  # not the system prompt echoed back


def test_an_english_question_gets_the_faq_answer(demo: tuple[Services, str]) -> None:
    answer = _ask(demo, "How long does the old access key keep working after I rotate it?")
    assert "24 hours" in (answer.answer or ""), answer.answer
    assert answer.degenerate is None and not answer.truncated

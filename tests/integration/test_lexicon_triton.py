"""The lexicon model on a real tritonserver, alone in a temporary repository: a batch of texts in
one request answered per text, exact Korean spans, obfuscations flagged, traps not, bad input
refused on its own."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
import tritonclient.grpc.aio as grpcclient
from tritonclient.grpc import InferInput
from tritonclient.utils import InferenceServerException

from scripts.bench.triton_stats import counts_reaching, model_counts
from scripts.export import export_lexicon
from scripts.service.launch import free_port
from scripts.service.serve_triton import Ports, TritonServer
from tests.integration.triton_calls import with_client


@pytest.fixture(scope="module")
def lexicon_triton(tmp_path_factory) -> str:
    """tritonserver serving only the lexicon, exported by its exporter (which copies the model code
    and the overrides file into the repository); yields its gRPC address."""
    repository = tmp_path_factory.mktemp("lexicon-repository")
    if export_lexicon.main(["--repository", str(repository), "--max-queue-delay-us", "20000"]) != 0:
        pytest.fail("export_lexicon failed: is badwords-ko installed (`npm ci`)?")
    ports = Ports(free_port(), free_port(), free_port())
    log_path = tmp_path_factory.mktemp("lexicon-triton") / "tritonserver.log"
    with open(log_path, "wb") as log, TritonServer(repository, ports, log_file=log):
        yield f"127.0.0.1:{ports.grpc}"


def text_input(texts: list[str | bytes]) -> InferInput:
    raw = [t.encode("utf-8") if isinstance(t, str) else t for t in texts]
    tensor = InferInput("TEXT", [len(raw), 1], "BYTES")
    tensor.set_data_from_numpy(np.array(raw, dtype=np.object_).reshape(-1, 1))
    return tensor


async def matches(client: grpcclient.InferenceServerClient, texts: list[str | bytes]) -> list[list[dict]]:
    result = await client.infer("lexicon", [text_input(texts)], client_timeout=60)
    out = result.as_numpy("MATCHES")
    assert out.shape == (len(texts), 1)
    return [json.loads(item.decode("utf-8")) for item in out.reshape(-1)]


def test_a_batch_of_texts_in_one_request_is_answered_per_text(lexicon_triton):
    texts = ["시1발 진짜 왜 이래", "ㅅㅂ 또 졌네", "씨 발 뭐하냐", "여기가 우리 여행의 시발점이야",
             "수박씨 발라 먹어야 돼", "", "저 개발자 지망생이에요", "Shut the fuck up"]
    found = with_client(lexicon_triton, lambda client: matches(client, texts))
    assert [[m["text"] for m in per_text] for per_text in found] == [
        ["시1발"], ["ㅅㅂ"], ["씨 발"], [], [], [], [], ["fuck"]]
    assert found[0][0]["term"] == "시발" and found[0][0]["sources"] and found[0][0]["category"]


def test_korean_spans_are_character_offsets_into_the_text(lexicon_triton):
    text = "야 이 개새끼야, 아 씨 발 진짜"
    (found,) = with_client(lexicon_triton, lambda client: matches(client, [text]))
    assert [(m["start"], m["end"], m["text"]) for m in found] == [(4, 7, "개새끼"), (12, 15, "씨 발")]
    assert all(text[m["start"]:m["end"]] == m["text"] for m in found)


def test_concurrent_requests_are_batched_answered_each_and_a_bad_one_fails_alone(lexicon_triton):
    texts = [f"{i}번 플레이어 ㅅㅂ 진짜" if i % 2 else f"{i}번 플레이어 안녕하세요" for i in range(8)]

    async def scenario(client):
        before = await model_counts(client, "lexicon")
        bad = client.infer("lexicon", [text_input([b"\xff\xfe broken"])], client_timeout=60)
        results = await asyncio.gather(bad, *(matches(client, [t]) for t in texts), return_exceptions=True)
        return results, before, await counts_reaching(client, "lexicon", before[0] + len(texts))

    (bad, *good), before, after = with_client(lexicon_triton, scenario)
    assert isinstance(bad, InferenceServerException) and "UTF-8" in bad.message()
    assert [bool(per_request[0]) for per_request in good] == [i % 2 == 1 for i in range(8)]
    executions = after[1] - before[1]
    assert executions < 9, f"{executions} executions for 9 concurrent requests: no dynamic batching"


def break_overrides(model_dir):
    (model_dir / "overrides.txt").write_text("add 씨발\nbogus directive here\n")


def remove_model_code(model_dir):
    (model_dir / "1" / "model.py").unlink()


@pytest.mark.parametrize(("breakage", "reason"), [
    (break_overrides, "overrides.txt:2"),  # Triton exits
    (remove_model_code, "Failed to preinitialize Python stub"),  # Triton would wait forever
])
def test_a_model_that_cannot_load_fails_the_start_at_once_saying_why(tmp_path, breakage, reason):
    # An operator's typo must not end in a bare "exited with 1", nor in "not ready" after the
    # 300 s timeout: the launcher reads Triton's log while it waits and reports why.
    assert export_lexicon.main(["--repository", str(tmp_path / "repo")]) == 0
    breakage(tmp_path / "repo" / "lexicon")
    ports = Ports(free_port(), free_port(), free_port())
    with open(tmp_path / "tritonserver.log", "wb") as log, pytest.raises(RuntimeError) as failure:
        TritonServer(tmp_path / "repo", ports, log_file=log).start(timeout_s=120)
    assert reason in str(failure.value)

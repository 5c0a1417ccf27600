"""KoELECTRA exporter: ONNX parity check passes on a good export and fails on corrupted files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from scripts.export import export_koelectra, triton_config


@pytest.fixture(scope="module")
def exported(tmp_path_factory, model_repository):
    repo = tmp_path_factory.mktemp("koelectra-repo")
    cache = model_repository.parent / ".cache"
    code = export_koelectra.main(["--untrained", "--repository", str(repo), "--cache-dir", str(cache)])
    assert code == 0
    return repo, cache


def verify(repo, cache) -> int:
    return export_koelectra.main(["--untrained", "--verify-only", "--repository", str(repo), "--cache-dir", str(cache)])


def test_export_writes_onnx_tokenizer_config_and_untrained_label(exported):
    repo, cache = exported
    files = {p.name for p in (repo / "koelectra" / "1").iterdir()}
    assert {"model.onnx", "tokenizer.json", "model_info.json"} <= files
    info = json.loads((repo / "koelectra" / "1" / "model_info.json").read_text(encoding="utf-8"))
    assert info["untrained"] is True and info["trained"] is False
    assert triton_config.read(repo / "koelectra", triton_config.KoelectraValues).trained is False
    assert verify(repo, cache) == 0


def test_trained_and_untrained_together_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        export_koelectra.parse_args(["--untrained", "--trained"])
    assert exc.value.code == 2 and "not allowed with argument --untrained" in capsys.readouterr().err


def test_parity_check_logs_the_difference(exported, caplog):
    repo, cache = exported
    caplog.set_level("INFO")
    assert verify(repo, cache) == 0
    assert "ONNX parity ok" in caplog.text


def test_perturbed_weights_fail_parity(exported, tmp_path):
    repo, cache = exported
    bad_repo = tmp_path / "repo"
    shutil.copytree(repo, bad_repo)
    path = bad_repo / "koelectra" / "1" / "model.onnx"
    model = onnx.load(str(path))
    largest = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    weights = numpy_helper.to_array(largest).copy()
    # Noise, not a constant shift: the LayerNorm after the embeddings would cancel a shift.
    weights += np.random.default_rng(0).normal(0.0, 0.05, weights.shape).astype(weights.dtype)
    largest.CopyFrom(numpy_helper.from_array(weights, largest.name))
    onnx.save(model, str(path))
    assert verify(bad_repo, cache) == 1


def test_truncated_onnx_file_fails(exported, tmp_path):
    repo, cache = exported
    bad_repo = tmp_path / "repo"
    shutil.copytree(repo, bad_repo)
    path = bad_repo / "koelectra" / "1" / "model.onnx"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert verify(bad_repo, cache) == 1

"""Language detection's pure pieces, without Triton or a checkpoint: the argmax over language
tokens, and how the edge sends "auto" and reads LANGUAGE_CODE (or its absence)."""

from __future__ import annotations

import sys

import numpy as np
import torch
from tritonclient.utils import deserialize_bytes_tensor

from moderation.triton import ensemble_inputs, parse_moderation
from scripts.cli import MODEL_REPOSITORY

sys.path.insert(0, str(MODEL_REPOSITORY / "whisper" / "1"))
from whisper_batch import detect_languages  # noqa: E402

VOCAB = 10
LANGUAGE_TOKENS = torch.tensor([5, 6, 7])


def test_detection_picks_the_likeliest_language_token_and_ignores_the_rest():
    logits = torch.zeros(2, VOCAB)
    logits[0, 6], logits[0, 2] = 3.0, 9.0  # token 2 is likelier but no language: ignored
    logits[1, 7], logits[1, 5] = 1.0, 0.5
    assert detect_languages(logits, LANGUAGE_TOKENS).tolist() == [6, 7]


class Response:
    """A Triton response with the ensemble's required outputs plus ``extra``."""

    def __init__(self, **extra: np.ndarray):
        self.values = {"TRANSCRIPT": np.array([[b"hola"]], dtype=np.object_),
                       "HARMFUL_PROB": np.array([[0.1]], np.float32),
                       "NO_SPEECH_PROB": np.array([[0.01]], np.float32), **extra}

    def as_numpy(self, name: str):
        return self.values.get(name)


def test_the_transcribed_language_is_read_when_the_model_reports_it():
    response = Response(LANGUAGE_CODE=np.array([[b"es"]], dtype=np.object_))
    assert parse_moderation(response).language == "es"


def test_a_model_without_language_code_leaves_the_language_unknown():
    assert parse_moderation(Response()).language is None


def test_auto_is_sent_to_the_model_as_given():
    inputs = {i.name(): i for i in ensemble_inputs(np.zeros(160, np.float32), "auto")}
    assert set(inputs) == {"AUDIO", "LANGUAGE"}
    assert inputs["LANGUAGE"].shape() == [1, 1]
    assert deserialize_bytes_tensor(inputs["LANGUAGE"]._get_content()).tolist() == [b"auto"]

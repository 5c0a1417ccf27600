"""The committed config.pbtxt templates render into valid Triton model configs."""

from __future__ import annotations

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from scripts.cli import REPO_ROOT
from scripts.export import export_koelectra, export_whisper, triton_config
from scripts.export.triton_config import EnsembleValues, KoelectraValues, LexiconValues, WhisperValues


def parse(text: str) -> model_config_pb2.ModelConfig:
    """Triton's own ModelConfig protobuf: unknown fields or bad syntax raise."""
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def parameters(config: model_config_pb2.ModelConfig) -> dict[str, str]:
    return {key: value.string_value for key, value in config.parameters.items()}


@pytest.fixture
def whisper() -> WhisperValues:
    return export_whisper.config_values(export_whisper.parse_args([]))


@pytest.fixture
def koelectra() -> KoelectraValues:
    return export_koelectra.config_values(export_koelectra.parse_args(["--untrained"]))


def test_the_exporters_defaults_render_the_documented_configs(whisper, koelectra):
    w, k = parse(triton_config.render(whisper)), parse(triton_config.render(koelectra))
    assert (w.name, w.backend, w.max_batch_size) == ("whisper", "python", 16)
    assert w.dynamic_batching.max_queue_delay_microseconds == 10000
    # finals, interims, bulk (moderation.triton.Priority); requests that name none are bulk
    assert (w.dynamic_batching.priority_levels, w.dynamic_batching.default_priority_level) == (3, 3)
    assert [i.name for i in w.input] == ["AUDIO", "LANGUAGE", "WORD_TIMESTAMPS", "ENCODER_FIT", "LONG_FORM", "PROMPT"]
    assert w.input[0].allow_ragged_batch and all(i.optional for i in w.input[1:])
    assert [o.name for o in w.output] == ["TRANSCRIPT", "NO_SPEECH_PROB", "WORDS", "LANGUAGE_CODE", "SEGMENTS"]
    assert parameters(w) == {"checkpoint": "ctranslate2", "default_language": "ko", "fp16": "false",
                             "cpu_threads": "0", "encoder_context": "full", "cpu_int8": "false",
                             "engine": "ctranslate2", "compute_type": "int8", "inter_threads": "2"}
    assert (k.name, k.max_batch_size, k.dynamic_batching.max_queue_delay_microseconds) == ("koelectra", 64, 2000)
    assert w.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU


def test_the_ensemble_takes_its_batch_size_and_language_from_its_members(whisper, koelectra):
    small = whisper.model_copy(update={"max_batch_size": 4, "default_language": "en"})
    config = parse(triton_config.render(EnsembleValues.of("ensemble", small, koelectra)))
    assert (config.platform, config.max_batch_size) == ("ensemble", 4)
    assert [step.model_name for step in config.ensemble_scheduling.step] == ["whisper", "koelectra"]
    assert parameters(config) == {"default_language": "en", "lexicon": "", "classifier": "koelectra",
                                  "classifier_trained": "false", "whisper": "whisper", "whisper_long_form": "true",
                                  "classifier_threshold": "", "classifier_categories": ""}
    assert [o.name for o in config.output] == ["TRANSCRIPT", "HARMFUL_PROB", "NO_SPEECH_PROB", "WORDS",
                                               "LANGUAGE_CODE"]
    assert config.ensemble_scheduling.step[0].output_map["LANGUAGE_CODE"] == "LANGUAGE_CODE"
    assert config.ensemble_scheduling.step[0].input_map["ENCODER_FIT"] == "ENCODER_FIT"


def test_an_ensemble_with_a_lexicon_runs_it_on_the_transcript_and_publishes_its_signals(whisper, koelectra):
    lexicon = LexiconValues(name="lexicon", max_batch_size=2, max_queue_delay_us=1000)
    trained = koelectra.model_copy(update={"trained": True})
    config = parse(triton_config.render(EnsembleValues.of("ensemble", whisper, trained, lexicon)))
    steps = {step.model_name: step for step in config.ensemble_scheduling.step}
    assert list(steps) == ["whisper", "lexicon", "koelectra"] and config.max_batch_size == 2
    assert dict(steps["lexicon"].input_map) == {"TEXT": "TRANSCRIPT"}
    assert dict(steps["lexicon"].output_map) == {"MATCHES": "MATCHES"}
    assert "MATCHES" in [o.name for o in config.output]
    assert parameters(config) == {"default_language": "ko", "lexicon": "lexicon", "classifier": "koelectra",
                                  "classifier_trained": "true", "whisper": "whisper", "whisper_long_form": "true",
                                  "classifier_threshold": "", "classifier_categories": ""}
    torch_engine = whisper.model_copy(update={"engine": "torch"})
    config = parse(triton_config.render(EnsembleValues.of("ensemble", torch_engine, trained, lexicon)))
    assert parameters(config)["whisper_long_form"] == "false"  # batch jobs send it segments


def test_flags_change_the_rendered_values(koelectra):
    args = export_whisper.parse_args(["--engine", "torch", "--max-queue-delay-us", "-1", "--instance-kind", "GPU",
                                      "--fp16",
                                      "--language", "ja", "--max-batch-size", "32"])
    config = parse(triton_config.render(export_whisper.config_values(args)))
    assert not config.HasField("dynamic_batching")
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert parameters(config)["fp16"] == "true" and parameters(config)["default_language"] == "ja"
    assert config.max_batch_size == 32


def test_each_whisper_engine_gets_its_own_options_and_refuses_the_others():
    gpu = export_whisper.config_values(export_whisper.parse_args(["--instance-kind", "GPU"]))
    assert (gpu.engine, gpu.compute_type, gpu.checkpoint, gpu.inter_threads) == ("ctranslate2", "float16",
                                                                                 "ctranslate2", 1)
    torch_engine = export_whisper.config_values(export_whisper.parse_args(["--engine", "torch", "--cpu-int8"]))
    assert (torch_engine.engine, torch_engine.checkpoint, torch_engine.cpu_int8) == ("torch", "whisper.pt", True)
    for refused in (["--fp16", "--instance-kind", "GPU"], ["--cpu-int8"], ["--encoder-context", "fit"],
                    ["--compute-type", "float16"], ["--compute-type", "int4"], ["--inter-threads", "0"],
                    ["--engine", "torch", "--compute-type", "int8"], ["--engine", "torch", "--inter-threads", "2"]):
        with pytest.raises(SystemExit):
            export_whisper.parse_args(refused)


def test_the_whisper_exporter_refuses_a_language_whisper_lacks():
    with pytest.raises(SystemExit):
        export_whisper.parse_args(["--language", "xx"])


def test_values_round_trip_and_variants_share_the_version_directory(whisper, tmp_path):
    source = tmp_path / "repo" / "whisper"
    (source / "1").mkdir(parents=True)
    (source / "1" / "whisper.pt").write_bytes(b"weights")
    triton_config.write(source, whisper)
    assert triton_config.read(source, WhisperValues) == whisper
    variant = whisper.model_copy(update={"name": "whisper_unbatched", "max_queue_delay_us": None})
    target = triton_config.write_variant(source, tmp_path / "variants", variant)
    assert (target / "1" / "whisper.pt").read_bytes() == b"weights"
    config = parse((target / "config.pbtxt").read_text())
    assert config.name == "whisper_unbatched" and not config.HasField("dynamic_batching")


def test_reading_values_of_a_model_never_exported_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="export"):
        triton_config.read(tmp_path / "whisper", WhisperValues)


def test_every_model_directory_has_a_template():
    models = [d for d in (REPO_ROOT / "model_repository").iterdir() if (d / "1").is_dir()]
    assert sorted(d.name for d in models) == ["ensemble", "koelectra", "lexicon", "whisper"]
    assert all((d / triton_config.TEMPLATE_NAME).is_file() for d in models)


def test_a_trained_classifiers_threshold_and_categories_are_published_and_an_untrained_ones_are_not(whisper,
                                                                                                  koelectra):
    calibrated = koelectra.model_copy(update={"trained": True, "threshold": 0.73, "categories": ("origin", "age")})
    config = parse(triton_config.render(EnsembleValues.of("ensemble", whisper, calibrated)))
    assert parameters(config)["classifier_trained"] == "true" and parameters(config)["classifier_threshold"] == "0.73"
    assert parameters(config)["classifier_categories"] == "origin,age"
    assert [(o.name, list(o.dims)) for o in config.output if o.name == "CATEGORY_PROBS"] == [("CATEGORY_PROBS", [2])]
    assert config.ensemble_scheduling.step[-1].output_map["CATEGORY_PROBS"] == "CATEGORY_PROBS"
    member = parse(triton_config.render(calibrated))
    assert [o.name for o in member.output] == ["HARMFUL_PROB", "CATEGORY_PROBS"]
    assert parameters(member)["categories"] == "origin,age"
    untrained = koelectra.model_copy(update={"threshold": 0.73, "categories": ("origin", "age")})
    published = EnsembleValues.of("ensemble", whisper, untrained)
    assert published.classifier_threshold is None and published.classifier_categories == ()
    assert "CATEGORY_PROBS" not in [o.name for o in parse(triton_config.render(published)).output]

"""Render each model's committed ``config.pbtxt.template`` into the ``config.pbtxt`` Triton loads.

The templates (Jinja2) sit beside the model code in ``model_repository/<kind>/``. The values an
exporter chose are written next to the rendered config as ``config.values.json``, so later steps
(the ensemble export, a benchmark variant with batching off) render the same template with
changed values instead of editing config text.
"""

from __future__ import annotations

import importlib
import logging
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import ClassVar, Literal, TypeVar

import jinja2
from pydantic import BaseModel, ConfigDict, Field

from scripts.cli import MODEL_REPOSITORY

logger = logging.getLogger(__name__)

TEMPLATE_NAME = "config.pbtxt.template"
VALUES_NAME = "config.values.json"
CONFIG_NAME = "config.pbtxt"


QUEUE_SAFE_INSTANCES = 2
"""Instances of the cheap python models (lexicon, koelectra). With priority levels or a queue
policy, Triton 2.51's dynamic batcher wakes up for a new request only if an instance is already
waiting for work; one that arrives while the only instance is finishing the previous request
waits out the batcher's 500 ms idle sleep (1 request in 12 to 25 sent back to back, measured in
docs/PERFORMANCE.md). A second instance is always waiting. Whisper keeps one: a second would
split the CPU between two decodes (measure before raising it there)."""


class ModelValues(BaseModel):
    """Values of one model's template; ``kind`` names the template directory."""

    model_config = ConfigDict(extra="forbid")
    kind: ClassVar[str]

    name: str
    """Model name in the repository (and in Triton)."""


class BatchedValues(ModelValues):
    max_batch_size: int = Field(ge=1)
    max_queue_delay_us: int | None = Field(ge=0)
    """Dynamic batching's queue delay; None turns dynamic batching off."""
    instance_count: int = Field(1, ge=1)
    instance_kind: Literal["CPU", "GPU"] = "CPU"


class WhisperValues(BatchedValues):
    kind: ClassVar[str] = "whisper"
    checkpoint: str
    default_language: str
    fp16: bool = False
    cpu_threads: int = 0
    encoder_context: Literal["full", "fit"] = "full"
    cpu_int8: bool = False
    engine: Literal["torch", "ctranslate2"] = "torch"
    """Which runtime runs Whisper: openai-whisper on torch, or CTranslate2 (``checkpoint`` is then a directory)."""
    compute_type: str = "int8"
    """CTranslate2's compute type: int8 or float32 on CPU, float16 or int8_float16 on GPU."""
    inter_threads: int = Field(1, ge=1)
    """CTranslate2 batches one instance may run at once (``cpu_threads`` is then each one's threads)."""


class KoelectraValues(BatchedValues):
    kind: ClassVar[str] = "koelectra"
    onnx: str = "model.onnx"
    tokenizer: str = "tokenizer.json"
    max_length: int = Field(128, ge=1)
    cpu_threads: int = 0
    trained: bool = False
    """The classification head was fine-tuned for harmful speech; an untrained one never decides a verdict."""
    threshold: float | None = Field(None, ge=0, le=1)
    """The harmful threshold its training calibrated on a dev set for a stated precision (None:
    not calibrated; the edge then uses 0.5 unless EDGE_HARMFUL_THRESHOLD says otherwise)."""
    categories: tuple[str, ...] = ()
    """Names of its category heads, in the order of its CATEGORY_PROBS output; () for a
    classifier without categories (then it has no such output)."""


class LexiconValues(BatchedValues):
    kind: ClassVar[str] = "lexicon"
    lexicon: str = "lexicon.json"
    """The assembled term list in the version directory (written by scripts/export/export_lexicon.py)."""
    overrides: str = "overrides.txt"
    """The operators' additions and removals, in the model directory (beside config.pbtxt)."""


class EnsembleValues(ModelValues):
    kind: ClassVar[str] = "ensemble"
    max_batch_size: int = Field(ge=1)
    """At most the smallest of its members' (Triton's rule)."""
    whisper: str
    whisper_long_form: bool = False
    """The whisper member decodes long-form windows (LONG_FORM: its ctranslate2 engine), published
    so batch jobs know they may send recordings' windows to it directly."""
    koelectra: str
    lexicon: str | None = None
    """The lexicon member, run beside koelectra on the transcript; None: no lexicon step."""
    default_language: str
    """The whisper member's default, published so the edge can report it."""
    classifier_trained: bool = False
    """The koelectra member's, published so the edge lets only a trained classifier decide."""
    classifier_threshold: float | None = None
    """The koelectra member's calibrated threshold, published as the edge's default."""
    classifier_categories: tuple[str, ...] = ()
    """The koelectra member's category names (a trained one's only): CATEGORY_PROBS's columns."""

    @classmethod
    def of(cls, name: str, whisper: WhisperValues, koelectra: KoelectraValues,
           lexicon: LexiconValues | None = None) -> EnsembleValues:
        members = [whisper, koelectra] + ([lexicon] if lexicon else [])
        return cls(name=name, max_batch_size=min(m.max_batch_size for m in members), whisper=whisper.name,
                   whisper_long_form=whisper.engine == "ctranslate2",
                   koelectra=koelectra.name, lexicon=lexicon.name if lexicon else None,
                   default_language=whisper.default_language, classifier_trained=koelectra.trained,
                   classifier_threshold=koelectra.threshold if koelectra.trained else None,
                   classifier_categories=koelectra.categories if koelectra.trained else ())


ValuesT = TypeVar("ValuesT", bound=ModelValues)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(MODEL_REPOSITORY), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)
    env.filters["pbtxt_bool"] = lambda value: "true" if value else "false"
    return env


def render(values: ModelValues) -> str:
    """The config.pbtxt text of ``values``, from ``model_repository/<kind>/config.pbtxt.template``."""
    return _environment().get_template(f"{values.kind}/{TEMPLATE_NAME}").render(values.model_dump())


def write(model_dir: Path, values: ModelValues) -> Path:
    """Render into ``model_dir/config.pbtxt`` and keep the values beside it."""
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / VALUES_NAME).write_text(values.model_dump_json(indent=2) + "\n")
    (model_dir / CONFIG_NAME).write_text(render(values))
    logger.info("rendered %s/%s", model_dir, CONFIG_NAME)
    return model_dir / CONFIG_NAME


def install_code(kind: str, model_dir: Path) -> None:
    """Copy the committed model code (``model_repository/<kind>/1/*.py``) into ``model_dir`` when
    it is another repository's, so every repository an exporter writes can be served."""
    source = MODEL_REPOSITORY / kind / "1"
    if model_dir.resolve() == source.parent.resolve():
        return
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    for code in source.glob("*.py"):
        shutil.copy2(code, model_dir / "1" / code.name)


def model_code(kind: str, module: str) -> ModuleType:
    """A module of a model's committed code (``model_repository/<kind>/1``; those the tools use
    have no Triton imports), imported the way Triton loads it: from the version directory."""
    path = str(MODEL_REPOSITORY / kind / "1")
    if path not in sys.path:
        sys.path.insert(0, path)
    return importlib.import_module(module)


def read(model_dir: Path, cls: type[ValuesT]) -> ValuesT:
    """The values a model was exported with."""
    path = model_dir / VALUES_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: export {model_dir.name} with scripts/export first")
    return cls.model_validate_json(path.read_text())


def write_variant(source_dir: Path, target_repository: Path, values: ModelValues) -> Path:
    """A model dir ``target_repository/<values.name>`` that shares ``source_dir``'s version dir 1/
    but has its own config, rendered from ``values``."""
    target = target_repository / values.name
    target.mkdir(parents=True)
    (target / "1").symlink_to((source_dir / "1").resolve(), target_is_directory=True)
    write(target, values)
    return target

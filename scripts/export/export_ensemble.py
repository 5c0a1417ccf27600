"""Write ``model_repository/ensemble/config.pbtxt``: AUDIO (+LANGUAGE) -> whisper -> koelectra.

Its max_batch_size is the smaller of its members', as Triton requires; run it after the
member exporters.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from scripts.export.pbtxt import read_max_batch_size

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]

_TEMPLATE = """name: "{name}"
platform: "ensemble"
max_batch_size: {max_batch_size}
input [
  {{ name: "AUDIO", data_type: TYPE_FP32, dims: [ -1 ] }},
  {{ name: "LANGUAGE", data_type: TYPE_STRING, dims: [ 1 ], optional: true }}
]
output [
  {{ name: "TRANSCRIPT", data_type: TYPE_STRING, dims: [ 1 ] }},
  {{ name: "HARMFUL_PROB", data_type: TYPE_FP32, dims: [ 1 ] }},
  {{ name: "NO_SPEECH_PROB", data_type: TYPE_FP32, dims: [ 1 ] }}
]
ensemble_scheduling {{
  step [
    {{
      model_name: "{whisper}"
      model_version: -1
      input_map {{ key: "AUDIO" value: "AUDIO" }}
      input_map {{ key: "LANGUAGE" value: "LANGUAGE" }}
      output_map {{ key: "TRANSCRIPT" value: "TRANSCRIPT" }}
      output_map {{ key: "NO_SPEECH_PROB" value: "NO_SPEECH_PROB" }}
    }},
    {{
      model_name: "{koelectra}"
      model_version: -1
      input_map {{ key: "TEXT" value: "TRANSCRIPT" }}
      output_map {{ key: "HARMFUL_PROB" value: "HARMFUL_PROB" }}
    }}
  ]
}}
"""


def export(repository: Path, name: str = "ensemble", whisper: str = "whisper", koelectra: str = "koelectra") -> Path:
    sizes = [read_max_batch_size(repository / member / "config.pbtxt") for member in (whisper, koelectra)]
    model_dir = repository / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    config = _TEMPLATE.format(name=name, max_batch_size=min(sizes), whisper=whisper, koelectra=koelectra)
    (model_dir / "config.pbtxt").write_text(config)
    logger.info("wrote %s (max_batch_size %d = min of members %s)", model_dir / "config.pbtxt", min(sizes), sizes)
    return model_dir


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repository", type=Path, default=REPO_ROOT / "model_repository")
    p.add_argument("--name", default="ensemble")
    p.add_argument("--whisper", default="whisper", help="name of the whisper model in the repository")
    p.add_argument("--koelectra", default="koelectra", help="name of the koelectra model in the repository")
    args = p.parse_args(argv)
    export(args.repository, args.name, args.whisper, args.koelectra)


if __name__ == "__main__":
    main()

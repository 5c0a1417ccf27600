"""Render Triton ``config.pbtxt`` fragments shared by the exporters."""

from __future__ import annotations

import re
from pathlib import Path


def instance_group(count: int, kind: str) -> str:
    """``instance_group`` block; kind is CPU or GPU."""
    return f"instance_group [ {{ count: {count}, kind: KIND_{kind.upper()} }} ]\n"


def dynamic_batching(max_queue_delay_us: int) -> str:
    """``dynamic_batching`` block, or nothing when the delay is negative (batching off)."""
    if max_queue_delay_us < 0:
        return ""
    return f"dynamic_batching {{ max_queue_delay_microseconds: {max_queue_delay_us} }}\n"


def parameters(values: dict[str, object]) -> str:
    """String ``parameters`` entries, which the python backend reads from its model config."""
    return "".join(
        f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}\n' for key, value in values.items()
    )


def read_max_batch_size(config: Path) -> int:
    """The ``max_batch_size`` of an existing config.pbtxt."""
    for line in config.read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "max_batch_size":
            return int(value.strip())
    raise ValueError(f"{config} has no max_batch_size")


def without_dynamic_batching(config: str) -> str:
    """The same config.pbtxt text with its dynamic_batching block removed (batching off)."""
    return re.sub(r"^dynamic_batching .*\n", "", config, flags=re.M)


def link_model(source: Path, target: Path, config: str) -> None:
    """A model dir at target that shares source's version dir 1/ but has its own config text."""
    target.mkdir(parents=True)
    (target / "1").symlink_to(source / "1", target_is_directory=True)
    (target / "config.pbtxt").write_text(config)

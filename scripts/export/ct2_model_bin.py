"""Reader for CTranslate2's ``model.bin`` (binary versions 5 and 6).

Layout, all little-endian: u32 version, string spec name, u32 revision, u32 variable count;
per variable: string name, u8 rank, u32 dims[rank], u8 dtype id, u32 byte count, raw data;
then u32 alias count and (alias, target) string pairs. A string is u16 length (with its
trailing NUL) followed by the bytes.
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

logger = logging.getLogger(__name__)

SUPPORTED_VERSIONS = (5, 6)
"""model.bin versions whose layout this reader knows; others are refused, not guessed at."""

# Order matches CTranslate2's DataType enum (include/ctranslate2/types.h).
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


class ModelBinError(ValueError):
    """The file is not a model.bin this reader can parse."""


def _read(stream: BinaryIO, fmt: str):
    size = struct.calcsize(fmt)
    data = stream.read(size)
    if len(data) != size:
        raise ModelBinError("model.bin is truncated")
    return struct.unpack("<" + fmt, data)


def _read_string(stream: BinaryIO) -> str:
    (length,) = _read(stream, "H")
    raw = stream.read(length)
    if len(raw) != length:
        raise ModelBinError("model.bin is truncated inside a string")
    return raw[:-1].decode("utf-8")


def _read_variable(stream: BinaryIO) -> tuple[str, np.ndarray]:
    name = _read_string(stream)
    (rank,) = _read(stream, "B")
    shape = _read(stream, "I" * rank) if rank else ()
    (type_id,) = _read(stream, "B")
    (num_bytes,) = _read(stream, "I")
    if type_id not in _DTYPES:
        raise ModelBinError(f"variable {name}: unsupported dtype id {type_id} (quantized model?)")
    data = stream.read(num_bytes)
    if len(data) != num_bytes:
        raise ModelBinError(f"variable {name}: data is truncated")
    return name, np.frombuffer(data, dtype=_DTYPES[type_id]).reshape(shape)


def read_model_bin(path: Path) -> tuple[str, dict[str, np.ndarray]]:
    """Return the spec name and every variable (aliases resolved) of a model.bin file."""
    with open(path, "rb") as stream:
        (version,) = _read(stream, "I")
        if version not in SUPPORTED_VERSIONS:
            raise ModelBinError(f"unsupported model.bin version {version}, expected {SUPPORTED_VERSIONS}")
        spec_name = _read_string(stream)
        _revision, count = _read(stream, "II")
        variables = dict(_read_variable(stream) for _ in range(count))
        (num_aliases,) = _read(stream, "I")
        for _ in range(num_aliases):
            alias, target = _read_string(stream), _read_string(stream)
            variables[alias] = variables[target]
    logger.info("read %s: spec %s, %d variables", path, spec_name, len(variables))
    return spec_name, variables

"""Write tensors in smdebug's on-disk trace format, without smdebug.

smdebug (SageMaker Debugger's library) is unmaintained and breaks on current PyTorch and
NumPy, but its reader, `smdebug.trials.create_trial(path)`, is what existing analysis
notebooks use. This writes exactly what smdebug 1.0.34's own writer writes (checked byte
for byte), so that reader works on our traces:

    events/<step:012d>/<step:012d>_<worker>.tfevents   TFRecord-framed Event protos
    index/<step // 1000:09d>/<step:012d>_<worker>.json  which tensor is where, the mode
    collections/000000000/<worker>_collections.json     collection -> tensor names
    training_job_end.ts                                 the end marker (empty)

One global step holds one mode (TRAIN or EVAL) and has its own mode step. The protobuf
messages are encoded by hand (a few fields), so no protobuf dependency; torch-free.
Traps found in the reader: the record footer must be smdebug's fixed checksum, reductions
must be stored (its fallback computes matrix norms), and "__" in a path garbles workers.
"""

from __future__ import annotations

import json
import os
import re
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

MODES = {"TRAIN": 1, "EVAL": 2, "PREDICT": 3, "GLOBAL": 4}
REDUCTIONS = ("min", "max", "mean", "std", "variance", "sum", "prod", "l1", "l2")
_DTYPES = {np.dtype(np.float16): 19, np.dtype(np.float32): 1, np.dtype(np.float64): 2,
           np.dtype(np.int32): 3, np.dtype(np.int64): 9, np.dtype(np.uint8): 4,
           np.dtype(np.bool_): 10}


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# smdebug writes no payload checksum: every record ends with this constant, and its reader
# refuses any other value.
_FOOTER = struct.pack("<I", masked_crc32c(b"0x12345678"))


def frame_record(payload: bytes) -> bytes:
    header = struct.pack("<Q", len(payload))
    return header + struct.pack("<I", masked_crc32c(header)) + payload + _FOOTER


# ---- protobuf, by hand (proto3 wire format, fields in ascending order) --------------------

def _varint(number: int) -> bytes:
    number &= (1 << 64) - 1
    out = bytearray()
    while True:
        low = number & 0x7F
        number >>= 7
        if number:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _field_varint(field: int, number: int) -> bytes:
    return _varint(field << 3) + _varint(number)


def _field_bytes(field: int, data: bytes) -> bytes:
    return _varint((field << 3) | 2) + _varint(len(data)) + data


def _tensor_proto(array: np.ndarray, tag: str) -> bytes:
    """TensorProto{dtype=1, tensor_shape=2 {dim=2 {size=1, name=2}}, tensor_content=4}."""
    shape = b"".join(_field_bytes(2, _field_varint(1, int(size)) +
                                  _field_bytes(2, f"{tag}_{int(size)}".encode()))
                     for size in array.shape)
    content = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes(order="C")
    return _field_varint(1, _DTYPES[array.dtype]) + _field_bytes(2, shape) + \
        _field_bytes(4, content)


def _event(tag: str, array: np.ndarray, step: int, mode: str, mode_step: int,
           wall_time: float) -> bytes:
    """Event{wall_time=1, step=2, summary=5 {value=1 {tag=1, tensor=8, metadata=9}}}."""
    metadata = (_field_bytes(1, _field_bytes(1, b"mode_step") +
                             _field_bytes(2, str(mode_step).encode())) +
                _field_bytes(1, _field_bytes(1, b"mode") +
                             _field_bytes(2, str(MODES[mode]).encode())))
    value = (_field_bytes(1, tag.encode()) + _field_bytes(8, _tensor_proto(array, tag)) +
             _field_bytes(9, metadata))
    event = b""
    if wall_time:
        event += _varint((1 << 3) | 1) + struct.pack("<d", wall_time)
    if step:
        event += _field_varint(2, step)
    return event + _field_bytes(5, _field_bytes(1, value))


# ---- names -----------------------------------------------------------------------------

def reduction_name(tensor: str, reduction: str, absolute: bool = False) -> str:
    """Where smdebug looks for a stored reduction: `smdebug/reductions/[abs_]l2/<tensor>`."""
    name = re.sub(r":\d+", "", f"{reduction}/{tensor}")
    return "smdebug/reductions/" + ("abs_" if absolute else "") + name


def reduce(array: np.ndarray, reduction: str, absolute: bool = False) -> np.ndarray:
    """As smdebug's framework hooks compute them: norms of the flattened tensor, 0-d."""
    values = np.abs(array) if absolute else array
    if reduction in ("l1", "l2"):
        return np.asarray(np.linalg.norm(values.ravel(), ord=int(reduction[1])))
    function = {"min": np.amin, "max": np.amax, "mean": np.mean, "std": np.std,
                "variance": np.var, "sum": np.sum, "prod": np.prod}[reduction]
    return np.asarray(function(values))


@dataclass
class TraceStep:
    """One saved step as the rules see it, online (from the writer) or read back."""
    step: int
    mode: str
    mode_step: int
    wall_time: float
    tensors: dict[str, np.ndarray]


class TraceWriter:
    """Writes one worker's trace; a step's files appear whole (written, then renamed)."""

    def __init__(self, out_dir: str | Path, worker: str = "worker_0", num_workers: int = 1):
        if "__" in str(out_dir) or "__" in worker:
            raise ValueError(f"smdebug's reader garbles paths with '__': {out_dir}")
        self.out_dir = Path(out_dir)
        self.worker = worker
        self.num_workers = num_workers
        self.collections: dict[str, dict] = {}
        self._records = bytearray()
        self._index: list[dict] = []
        self._step: tuple[int, str, int] | None = None
        self._tensors: dict[str, np.ndarray] = {}
        self.last_step: TraceStep | None = None  # what the last end_step wrote, for the rules

    def add_to_collection(self, collection: str, tensor: str, reductions: Iterable[str] = (),
                          save_raw: bool = True, save_interval: int = 1) -> None:
        entry = self.collections.setdefault(collection, {
            "name": collection, "include_regex": [], "tensor_names": [],
            # The config spells norms "l2_norm"; the stored tensors say "l2".
            "reduction_config": {"save_raw_tensor": save_raw, "save_shape": False,
                                 "reductions": ",".join(f"{r}_norm" if r in ("l1", "l2") else r
                                                        for r in reductions)},
            "save_config": {mode: {"save_interval": save_interval, "save_steps": [],
                                   "start_step": 0, "end_step": None} for mode in MODES},
            "save_histogram": True})
        if tensor not in entry["tensor_names"]:
            entry["tensor_names"].append(tensor)

    def begin_step(self, step: int, mode: str, mode_step: int) -> None:
        if self._step is not None:
            self.end_step()
        self._step = (step, mode, mode_step)

    def write(self, name: str, value) -> None:
        """A tensor (numpy array or 0-d scalar) in the current step."""
        step, mode, mode_step = self._step
        array = np.asarray(value)
        if array.dtype not in _DTYPES:
            array = array.astype(np.float32)
        if array.size == 0:
            return
        self._tensors[name] = array
        record = frame_record(_event(name, array, step, mode, mode_step, time.time()))
        self._index.append({"tensorname": name, "start_idx": len(self._records),
                            "length": len(record)})
        self._records += record

    def end_step(self) -> None:
        if self._step is None:
            return
        (step, mode, mode_step), self._step = self._step, None
        self.last_step = TraceStep(step, mode, mode_step, time.time(), self._tensors)
        self._tensors = {}
        if not self._index:
            return
        events = f"events/{step:012d}/{step:012d}_{self.worker}.tfevents"
        _write_atomic(self.out_dir / events, bytes(self._records))
        index = {"meta": {"mode": mode, "mode_step": mode_step, "event_file_name": events},
                 "tensor_payload": self._index, "shape_payload": []}
        _write_atomic(self.out_dir / f"index/{step // 1000:09d}/{step:012d}_{self.worker}.json",
                      json.dumps(index).encode())
        self._records, self._index = bytearray(), []

    def write_collections(self) -> None:
        document = {"collections": self.collections, "_meta": {"num_workers": self.num_workers}}
        _write_atomic(self.out_dir / f"collections/000000000/{self.worker}_collections.json",
                      json.dumps(document).encode())

    def close(self) -> None:
        """The step in progress, the collections, then the end-of-training marker."""
        self.end_step()
        self.write_collections()
        (self.out_dir / "training_job_end.ts").touch()


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")  # the reader skips *.tmp
    temporary.write_bytes(data)
    os.replace(temporary, path)


# ---- reading back (what `dogbreed.debugging.rules` evaluates offline) -----------------------------

def read_trace(out_dir: str | Path) -> list[TraceStep]:
    """Every saved step of a trace, in global-step order (one worker's, as written here)."""
    return list(iter_trace(out_dir))


def iter_trace(out_dir: str | Path) -> Iterator[TraceStep]:
    """The saved steps one at a time (a trace with raw tensors can outgrow memory)."""
    out_dir = Path(out_dir)
    if not (out_dir / "index").is_dir():
        raise FileNotFoundError(f"{out_dir} holds no smdebug trace (no index/ folder)")
    # Zero-padded names: sorting them sorts by global step.
    for index_file in sorted((out_dir / "index").glob("*/*.json")):
        index = json.loads(index_file.read_text())
        meta = index["meta"]
        data = (out_dir / meta["event_file_name"]).read_bytes()
        tensors, wall_time = {}, 0.0
        for entry in index["tensor_payload"]:
            record = data[entry["start_idx"]:entry["start_idx"] + entry["length"]]
            name, array, wall_time = _decode_event(record[12:-4])
            tensors[name] = array
        step = int(index_file.stem.split("_")[0])
        yield TraceStep(step, meta["mode"], int(meta["mode_step"]), wall_time, tensors)


_NUMPY_DTYPES = {code: dtype for dtype, code in _DTYPES.items()}


def _fields(message: bytes):
    """(field number, value) pairs of a protobuf message: ints, doubles or bytes."""
    position = 0
    while position < len(message):
        key, position = _read_varint(message, position)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, position = _read_varint(message, position)
        elif wire == 1:
            value, position = struct.unpack_from("<d", message, position)[0], position + 8
        elif wire == 2:
            size, position = _read_varint(message, position)
            value, position = message[position:position + size], position + size
        elif wire == 5:
            value, position = message[position:position + 4], position + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field, value


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    number, shift = 0, 0
    while True:
        byte = data[position]
        position += 1
        number |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return number, position
        shift += 7


def _decode_event(event: bytes) -> tuple[str, np.ndarray, float]:
    wall_time, name, array = 0.0, "", np.zeros(0)
    for field, value in _fields(event):
        if field == 1:
            wall_time = value
        elif field == 5:
            summary_value = dict(_fields(dict(_fields(value))[1]))
            name = summary_value[1].decode()
            tensor = dict(_fields(summary_value[8]))
            shape = [dict(_fields(dim)).get(1, 0) for f, dim in _fields(tensor.get(2, b""))
                     if f == 2]
            dtype = _NUMPY_DTYPES[tensor[1]].newbyteorder("<")
            array = np.frombuffer(tensor.get(4, b""), dtype=dtype).reshape(shape)
    return name, array, wall_time

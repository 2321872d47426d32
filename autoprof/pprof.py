"""pprof export: a pyinstrument Session as a gzipped ``profile.proto``, the format ``go tool
pprof``, Pyroscope, Grafana and Parca read (github.com/google/pprof, proto/profile.proto).

The protobuf wire format is written here (varints, length-delimited fields, packed repeated
integers): no dependency for a few dozen lines.

What a profile holds:

- two sample types, ``samples``/``count`` and ``wall``/``nanoseconds`` (the default): each
  pyinstrument frame record is one sample of the wall time it stands for; records with the same
  stack and labels are summed. No CPU sample type: a Session knows its CPU time only as a whole
  (it goes into a comment), never per sample;
- one location per (function, line): ``Function`` is the code object (name with pyinstrument's
  class name when it recorded one, file, first line), ``Line.line`` the line being run;
- pyinstrument's synthetic leaves are not functions: a stack ending in ``[await]`` (a request's
  coroutine awaiting, or in a process-wide profile a thread that barely ran in the interval)
  or ``[out-of-context]`` (another task running on the loop) is charged to the frame that
  waits, with a ``state`` label (``await``, ``out-of-context``), as pyinstrument counts it as
  that frame's self time; ``go tool pprof -tagignore state=await`` keeps the running stacks;
- a stack rooted in a thread (every stack of a process-wide profile) keeps that root frame
  (function = thread name, file ``<thread>``), and its sample has a ``thread`` label;
- one mapping (``python``) that says functions, file names and line numbers are all there, so
  no tool tries to symbolise addresses.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "SAMPLE_TYPES",
    "STATE_LABEL",
    "THREAD_LABEL",
    "PprofRenderer",
    "encode_session",
    "render_pprof",
]

SAMPLE_TYPES = (("samples", "count"), ("wall", "nanoseconds"))
"""The values of every sample, in order; the last (wall) is the default."""
THREAD_LABEL = "thread"
STATE_LABEL = "state"
THREAD_FILE = "<thread>"

_SYNTHETIC_LEAVES = {"[await]": "await", "[out-of-context]": "out-of-context"}
_DUMMY_ROOT = "[root]"
_MASK64 = (1 << 64) - 1
_MAPPING_ID = 1

# profile.proto field numbers
_P_SAMPLE_TYPE, _P_SAMPLE, _P_MAPPING, _P_LOCATION, _P_FUNCTION, _P_STRINGS = 1, 2, 3, 4, 5, 6
_P_TIME, _P_DURATION, _P_PERIOD_TYPE, _P_PERIOD, _P_COMMENT, _P_DEFAULT_TYPE = 9, 10, 11, 12, 13, 14


# -- wire format --------------------------------------------------------------------------------


def _varint(out: bytearray, value: int) -> None:
    value &= _MASK64  # int64 negatives as ten bytes of two's complement, as protobuf does
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _int(out: bytearray, field: int, value: int) -> None:
    """A varint field (int64, uint64 or bool); zero is the default and left out."""
    if value:
        _varint(out, field << 3)
        _varint(out, value)


def _bytes(out: bytearray, field: int, data: bytes | bytearray) -> None:
    """A length-delimited field: a string, a message or packed integers."""
    _varint(out, field << 3 | 2)
    _varint(out, len(data))
    out += data


def _packed(out: bytearray, field: int, values: Iterable[int]) -> None:
    body = bytearray()
    for value in values:
        _varint(body, value)
    if body:
        _bytes(out, field, body)


def _message(out: bytearray, field: int, *pairs: tuple[int, int]) -> None:
    """A message of varint fields only (ValueType, Label, Line, Function...)."""
    body = bytearray()
    for number, value in pairs:
        _int(body, number, value)
    _bytes(out, field, body)


# -- building ------------------------------------------------------------------------------------


class _Builder:
    """The tables of one profile: strings, functions, locations, and samples by stack."""

    def __init__(self) -> None:
        self.strings: dict[str, int] = {"": 0}
        self.functions: dict[tuple[str, str, int], int] = {}
        self.locations: dict[tuple[int, int], int] = {}
        #: frame info (pyinstrument's string, attributes included) -> location id
        self.by_frame: dict[str, int] = {}
        #: (location ids, leaf first; labels) -> [count, wall ns]
        self.samples: dict[tuple[tuple[int, ...], tuple[tuple[int, int], ...]], list[int]] = {}

    def string(self, text: str) -> int:
        found = self.strings.get(text)
        if found is None:
            found = self.strings[text] = len(self.strings)
        return found

    def location(self, frame_info: str) -> int:
        found = self.by_frame.get(frame_info)
        if found is not None:
            return found
        identifier, *attributes = frame_info.split("\x01")
        parts = identifier.split("\x00")
        name = parts[0]
        filename = parts[1] if len(parts) > 1 else ""
        first = _number(parts[2]) if len(parts) > 2 and filename != THREAD_FILE else 0
        line = first
        for attribute in attributes:
            if attribute.startswith("l"):
                line = _number(attribute[1:])
            elif attribute.startswith("c") and len(attribute) > 1:
                name = f"{attribute[1:]}.{name}"
        key = (name, filename, first)
        function = self.functions.get(key)
        if function is None:
            function = self.functions[key] = len(self.functions) + 1
        location = self.locations.get((function, line))
        if location is None:
            location = self.locations[(function, line)] = len(self.locations) + 1
        self.by_frame[frame_info] = location
        return location

    def add(self, stack: Sequence[str], seconds: float) -> None:
        labels: list[tuple[int, int]] = []
        end = len(stack)
        if end > 1 and stack[-1] in _SYNTHETIC_LEAVES:
            labels.append((self.string(STATE_LABEL), self.string(_SYNTHETIC_LEAVES[stack[-1]])))
            end -= 1
        start = 1 if stack and stack[0] == _DUMMY_ROOT and end > 1 else 0
        if start < end:
            root = stack[start].split("\x00")
            if len(root) > 1 and root[1] == THREAD_FILE:
                labels.append((self.string(THREAD_LABEL), self.string(root[0])))
        key = (tuple(self.location(stack[i]) for i in range(end - 1, start - 1, -1)),
               tuple(labels))
        values = self.samples.get(key)
        if values is None:
            values = self.samples[key] = [0, 0]
        values[0] += 1
        values[1] += max(0, round(seconds * 1e9))

    def encode(self, session: Any) -> bytes:
        out = bytearray()
        for kind, unit in SAMPLE_TYPES:
            _message(out, _P_SAMPLE_TYPE, (1, self.string(kind)), (2, self.string(unit)))
        for (locations, labels), values in self.samples.items():
            body = bytearray()
            _packed(body, 1, locations)
            _packed(body, 2, values)
            for key, value in labels:
                _message(body, 3, (1, key), (2, value))
            _bytes(out, _P_SAMPLE, body)
        _message(
            out, _P_MAPPING, (1, _MAPPING_ID), (5, self.string("python")),
            (7, 1), (8, 1), (9, 1),
        )
        for (function, line), location in self.locations.items():
            body = bytearray()
            _int(body, 1, location)
            _int(body, 2, _MAPPING_ID)
            _message(body, 4, (1, function), (2, line))
            _bytes(out, _P_LOCATION, body)
        for (name, filename, first), function in self.functions.items():
            name_index = self.string(name)
            _message(
                out, _P_FUNCTION, (1, function), (2, name_index), (3, name_index),
                (4, self.string(filename)), (5, first),
            )
        # Every string is interned by now but these, which go before the table is written.
        comments = [self.string(text) for text in _comments(session)]
        period_type = (self.string(SAMPLE_TYPES[-1][0]), self.string(SAMPLE_TYPES[-1][1]))
        for text in self.strings:
            _bytes(out, _P_STRINGS, text.encode("utf-8", "backslashreplace"))
        _int(out, _P_TIME, round(_float(session, "start_time") * 1e9))
        _int(out, _P_DURATION, round(_float(session, "duration") * 1e9))
        _message(out, _P_PERIOD_TYPE, (1, period_type[0]), (2, period_type[1]))
        _int(out, _P_PERIOD, round(_float(session, "min_interval") * 1e9))
        _packed(out, _P_COMMENT, comments)
        _int(out, _P_DEFAULT_TYPE, period_type[0])
        return bytes(out)


def _number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


def _float(session: Any, name: str) -> float:
    value = getattr(session, name, None)
    return float(value) if isinstance(value, (int, float)) and value > 0 else 0.0


def _comments(session: Any) -> list[str]:
    found = []
    description = getattr(session, "target_description", None)
    if isinstance(description, str) and description:
        found.append(description)
    cpu = _float(session, "cpu_time")
    if cpu:
        found.append(f"cpu_time {cpu:.3f} s (pyinstrument: the whole profile's, not per sample)")
    return found


def encode_session(session: Any) -> bytes:
    """``session`` as an uncompressed ``profile.proto`` message."""
    builder = _Builder()
    for stack, seconds in session.frame_records:
        if stack:
            builder.add(stack, seconds)
    return builder.encode(session)


def render_pprof(session: Any) -> bytes:
    """``session`` (a pyinstrument Session) as a gzipped ``profile.proto`` (``.pb.gz``)."""
    return gzip.compress(encode_session(session), compresslevel=6, mtime=0)


class PprofRenderer:
    """A renderer like pyinstrument's (``PprofRenderer().render(session)``), giving bytes."""

    output_is_binary = True

    def render(self, session: Any) -> bytes:
        return render_pprof(session)

"""profile.proto (github.com/google/pprof/proto/profile.proto) as message classes built at run
time from a FileDescriptorProto, and the views of a profile the pprof tests compare: the
top function by self (flat) time in a parsed pprof and in pyinstrument's text profile."""

from __future__ import annotations

import gzip
import re
from collections import defaultdict
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_I64 = descriptor_pb2.FieldDescriptorProto.TYPE_INT64
_U64 = descriptor_pb2.FieldDescriptorProto.TYPE_UINT64
_BOOL = descriptor_pb2.FieldDescriptorProto.TYPE_BOOL
_STR = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
_MSG = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
_ONE = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
_MANY = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED

# message -> [(field, number, type, repeated, message type)], as in profile.proto
MESSAGES: dict[str, list[tuple[str, int, int, bool, str | None]]] = {
    "Profile": [
        ("sample_type", 1, _MSG, True, "ValueType"),
        ("sample", 2, _MSG, True, "Sample"),
        ("mapping", 3, _MSG, True, "Mapping"),
        ("location", 4, _MSG, True, "Location"),
        ("function", 5, _MSG, True, "Function"),
        ("string_table", 6, _STR, True, None),
        ("drop_frames", 7, _I64, False, None),
        ("keep_frames", 8, _I64, False, None),
        ("time_nanos", 9, _I64, False, None),
        ("duration_nanos", 10, _I64, False, None),
        ("period_type", 11, _MSG, False, "ValueType"),
        ("period", 12, _I64, False, None),
        ("comment", 13, _I64, True, None),
        ("default_sample_type", 14, _I64, False, None),
    ],
    "ValueType": [("type", 1, _I64, False, None), ("unit", 2, _I64, False, None)],
    "Sample": [
        ("location_id", 1, _U64, True, None),
        ("value", 2, _I64, True, None),
        ("label", 3, _MSG, True, "Label"),
    ],
    "Label": [
        ("key", 1, _I64, False, None),
        ("str", 2, _I64, False, None),
        ("num", 3, _I64, False, None),
        ("num_unit", 4, _I64, False, None),
    ],
    "Mapping": [
        ("id", 1, _U64, False, None),
        ("memory_start", 2, _U64, False, None),
        ("memory_limit", 3, _U64, False, None),
        ("file_offset", 4, _U64, False, None),
        ("filename", 5, _I64, False, None),
        ("build_id", 6, _I64, False, None),
        ("has_functions", 7, _BOOL, False, None),
        ("has_filenames", 8, _BOOL, False, None),
        ("has_line_numbers", 9, _BOOL, False, None),
        ("has_inline_frames", 10, _BOOL, False, None),
    ],
    "Location": [
        ("id", 1, _U64, False, None),
        ("mapping_id", 2, _U64, False, None),
        ("address", 3, _U64, False, None),
        ("line", 4, _MSG, True, "Line"),
        ("is_folded", 5, _BOOL, False, None),
    ],
    "Line": [("function_id", 1, _U64, False, None), ("line", 2, _I64, False, None)],
    "Function": [
        ("id", 1, _U64, False, None),
        ("name", 2, _I64, False, None),
        ("system_name", 3, _I64, False, None),
        ("filename", 4, _I64, False, None),
        ("start_line", 5, _I64, False, None),
    ],
}
PACKAGE = "perftools.profiles.autoproftest"


def _profile_class() -> Any:
    file = descriptor_pb2.FileDescriptorProto(
        name="autoproftest/profile.proto", package=PACKAGE, syntax="proto3"
    )
    for name, fields in MESSAGES.items():
        message = file.message_type.add(name=name)
        for field, number, kind, repeated, type_name in fields:
            entry = message.field.add(
                name=field, number=number, type=kind, label=_MANY if repeated else _ONE
            )
            if type_name is not None:
                entry.type_name = f".{PACKAGE}.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.Profile"))


Profile = _profile_class()


def parse(data: bytes) -> Any:
    """A ``.pb.gz`` file's bytes as a Profile message (gzip, then protobuf, both strict)."""
    profile = Profile()
    profile.ParseFromString(gzip.decompress(data))
    return profile


def check_valid(profile: Any) -> None:
    """What ``go tool pprof`` (profile.CheckValid and its decoder) refuses, checked."""
    strings = profile.string_table
    assert strings[0] == ""
    assert len(profile.sample_type) >= 1
    functions = {f.id for f in profile.function}
    locations = {loc.id for loc in profile.location}
    mappings = {m.id for m in profile.mapping}
    assert 0 not in functions | locations | mappings
    assert len(functions) == len(profile.function)
    assert len(locations) == len(profile.location)
    for function in profile.function:
        assert 0 <= function.name < len(strings)
        assert 0 <= function.filename < len(strings)
    for location in profile.location:
        assert location.mapping_id in mappings
        assert location.line
        assert all(line.function_id in functions for line in location.line)
    for sample in profile.sample:
        assert len(sample.value) == len(profile.sample_type)
        assert sample.location_id
        assert set(sample.location_id) <= locations
        for label in sample.label:
            assert 0 < label.key < len(strings)
            assert 0 <= label.str < len(strings)
    for index in (*profile.comment, profile.default_sample_type, profile.period_type.type):
        assert 0 <= index < len(strings)


def value_index(profile: Any, kind: str) -> int:
    strings = profile.string_table
    return [strings[t.type] for t in profile.sample_type].index(kind)


def flat_by_function(
    profile: Any, kind: str = "wall", thread: str | None = None
) -> dict[tuple[str, str], int]:
    """Self (flat) value of each function, (name, file), as ``go tool pprof -top`` adds it;
    with ``thread``, of the samples labelled with that thread only (``-tagfocus``)."""
    strings = profile.string_table
    column = value_index(profile, kind)
    functions = {f.id: (strings[f.name], strings[f.filename]) for f in profile.function}
    leaf = {loc.id: functions[loc.line[0].function_id] for loc in profile.location}
    flat: dict[tuple[str, str], int] = defaultdict(int)
    for sample in profile.sample:
        labels = {strings[label.key]: strings[label.str] for label in sample.label}
        if thread is None or labels.get("thread") == thread:
            flat[leaf[sample.location_id[0]]] += sample.value[column]
    return dict(flat)


def top_pprof(profile: Any) -> tuple[str, str]:
    """The function with the most self wall time: (name, file base name)."""
    flat = flat_by_function(profile)
    name, file = max(flat, key=flat.__getitem__)
    return name, file.rsplit("/", 1)[-1]


_LINE = re.compile(r"^(?P<indent>[ │├└─]*?)(?P<time>\d+\.\d+) (?P<name>\S.*?)  (?P<where>.*)$")
SYNTHETIC = ("[await]", "[self]", "[out-of-context]")


_HIDDEN = re.compile(r"^[ │├└─]*\[\d+ frames hidden\]")


def text_self_times(text: str) -> dict[tuple[str, str], float]:
    """Self time of each function pyinstrument's text tree (ConsoleRenderer, unicode) shows,
    by (name, file base name): a node's time less its real children's ([await], [self],
    [out-of-context] count as the node's own, as pyinstrument's ``total_self_time`` counts
    them). A node with library frames hidden below it ("[N frames hidden]") is left out: what
    of its time is its own the text does not say."""
    nodes: list[tuple[int, float, str, str]] = []
    unknown: set[int] = set()
    for line in text.splitlines():
        if _HIDDEN.match(line) and nodes:
            unknown.add(len(nodes) - 1)
            continue
        match = _LINE.match(line)
        if match is None:
            continue
        where = match["where"].strip()
        file = where.rsplit(":", 1)[0] if re.search(r":\d+$", where) else where
        nodes.append((len(match["indent"]), float(match["time"]), match["name"].strip(),
                      file.rsplit("/", 1)[-1]))
    own: dict[tuple[str, str], float] = defaultdict(float)
    for i, (depth, seconds, name, file) in enumerate(nodes):
        if name in SYNTHETIC or name == "[root]" or i in unknown:
            continue
        below = []
        for child in nodes[i + 1:]:
            if child[0] <= depth:
                break
            below.append(child)
        level = min((d for d, *_ in below), default=0)
        children = sum(s for d, s, n, _ in below if d == level and n not in SYNTHETIC)
        own[(name, file)] += seconds - children
    return dict(own)


def text_resolution(text: str) -> float:
    """The smallest time step the text shows (it rounds to 10^-k s, k from the interval)."""
    for line in text.splitlines():
        match = _LINE.match(line)
        if match is not None:
            return float(10.0 ** -len(match["time"].split(".")[1]))
    return 0.001


def top_text(text: str) -> tuple[str, str]:
    times = text_self_times(text)
    return max(times, key=times.__getitem__)


def slack(profile: Any, text: str) -> float:
    """How far a function's self time in the text may be from pprof's: the text rounds each
    node, and folds children under 1 % of the total into their parent's own time."""
    total = sum(flat_by_function(profile).values()) / 1e9
    return max(3 * text_resolution(text), 0.03 * total)


def check_top_matches(pprof: bytes, text: str, where: str) -> tuple[str, str]:
    """The function with the most self time is the same in both, up to ties: 3 % of the
    profile (the text folds nodes under 1 % into their parent) or the text's rounding."""
    profile = parse(pprof)
    check_valid(profile)
    flat = {key: ns / 1e9 for key, ns in flat_by_function(profile).items()}
    flat_short = {(name, file.rsplit("/", 1)[-1]): s for (name, file), s in flat.items()}
    own = text_self_times(text)
    tolerance = slack(profile, text)
    # the text hides library frames under 20 % of the total: its top is one it shows
    shown = {key: value for key, value in flat_short.items() if key in own}
    top_p, top_t = max(shown, key=shown.__getitem__), top_text(text)
    assert own[top_p] >= own[top_t] - tolerance, (where, top_p, top_t, text)
    assert flat_short.get(top_t, 0.0) >= flat_short[top_p] - tolerance, (where, top_p, top_t)
    return top_p

"""Profiles added up per app function as they are rendered (see the package docstring:
*Profiles*): only sums are kept, never a session."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from autoprof.findings.classify import FOLDED, CodeClassifier
from autoprof.findings.evidence import to_int
from autoprof.findings.model import ITEMS_PER_SECTION, HotFunction, ProfileSummary

__all__ = ["HOT_PER_PROFILE", "MIN_HOT_SHARE", "ProfileSet", "profile_group"]

HOT_PER_PROFILE = 5
MIN_HOT_SHARE = 0.02

WAIT_FRAMES = frozenset({"[await]", "[out-of-context]"})
_MEASURES_CPU = frozenset({"requests", "all-threads"})
_PROFILE_ORDER = {"requests": 0, "before-trigger": 1, "all-threads": 2, "loop-blocked": 3}

_SYNTHETIC, _LIBRARY, _APP, _FOLDED_APP = range(4)
#: A parsed frame identifier: kind, (file, function, first line), current line.
_Frame = tuple[int, tuple[str, str, int], "int | None"]


@dataclass
class _Stats:
    name: str
    self_time: float = 0.0
    total_time: float = 0.0
    wait_time: float = 0.0
    lines: dict[int, float] = field(default_factory=dict)
    callees: dict[str, float] = field(default_factory=dict)


@dataclass
class _Profile:
    sessions: int = 0
    seconds: float = 0.0
    busy: float = 0.0
    cpu: float = 0.0
    app_busy: float = 0.0
    waiting: float = 0.0
    stats: dict[tuple[str, str, int], _Stats] = field(default_factory=dict)


def profile_group(kind: str) -> str:
    """The group a profile kind is added up in: every ``request-<n>`` in ``requests``."""
    return "requests" if kind.startswith("request-") else kind


class ProfileSet:
    """Sums per app function of the profiles added, by :func:`profile_group`; thread-safe."""

    def __init__(self, classifier: CodeClassifier) -> None:
        self.classifier = classifier
        self._profiles: dict[str, _Profile] = {}
        self._parsed: dict[str, _Frame] = {}
        self._lock = threading.Lock()

    def add(self, kind: str, session: Any) -> None:
        """Add one pyinstrument ``Session`` of ``kind``."""
        records = getattr(session, "frame_records", None)
        if not records:
            return
        with self._lock:
            profile = self._profiles.setdefault(profile_group(kind), _Profile())
            profile.sessions += 1
            cpu = getattr(session, "cpu_time", None)
            if isinstance(cpu, (int, float)):
                profile.cpu += cpu
            for stack, weight in records:
                self._add_record(profile, stack, float(weight))

    def summaries(self) -> tuple[list[ProfileSummary], dict[tuple[str, int], str]]:
        """Each group's summary (requests first), and which function each (short file, line)
        seen running belongs to."""
        short = self.classifier.short
        with self._lock:
            profiles = [self._summarise(kind, p) for kind, p in self._profiles.items()]
            owners = {
                (short(file), line): name
                for p in self._profiles.values()
                for (file, name, _), stats in p.stats.items()
                for line in stats.lines
            }
        profiles.sort(key=lambda p: _PROFILE_ORDER.get(p.kind, 9))
        return profiles, owners

    def _add_record(self, profile: _Profile, stack: Sequence[str], weight: float) -> None:
        profile.seconds += weight
        waiting = bool(stack) and stack[-1] in WAIT_FRAMES
        if waiting:
            profile.waiting += weight
        else:
            profile.busy += weight
        parsed = self._parsed
        innermost: _Stats | None = None
        line: int | None = None
        callee: str | None = None  # the first library call under the innermost app frame
        seen: set[tuple[str, str, int]] = set()
        for info in stack:
            frame = parsed.get(info)
            if frame is None:
                frame = self._parse(info)
            kind, key, current = frame
            if kind == _SYNTHETIC:
                continue
            if kind == _LIBRARY:
                if callee is None and innermost is not None:
                    callee = key[1]
                continue
            callee = None
            if kind == _FOLDED_APP and innermost is not None:
                line = current if current is not None else line
                continue
            stats = profile.stats.get(key)
            if stats is None:
                stats = profile.stats[key] = _Stats(key[1])
            if not waiting and key not in seen:
                seen.add(key)
                stats.total_time += weight
            innermost, line = stats, current
        if innermost is None:
            return
        if waiting:
            innermost.wait_time += weight
            return
        profile.app_busy += weight
        innermost.self_time += weight
        if line is not None:
            innermost.lines[line] = innermost.lines.get(line, 0.0) + weight
        if callee is not None:
            innermost.callees[callee] = innermost.callees.get(callee, 0.0) + weight

    def _parse(self, info: str) -> _Frame:
        """What a frame identifier says, cached (a profile repeats the same few strings)."""
        identifier, _, attributes = info.partition("\x01")
        parts = identifier.split("\x00")
        current = _attribute(attributes, "l")
        if len(parts) != 3:  # a synthetic frame: [await], [self], [root]...
            frame: _Frame = (_SYNTHETIC, ("", "", 0), None)
        else:
            function, file, first = parts
            line = to_int(current) or None
            if not self.classifier.is_app(file):
                frame = (_LIBRARY, (file, _callee_name(function, file), 0), line)
            else:
                class_name = _attribute(attributes, "c")
                if class_name and "." not in function:
                    function = f"{class_name}.{function}"
                kind = _FOLDED_APP if function.rsplit(".", 1)[-1] in FOLDED else _APP
                frame = (kind, (file, function, to_int(first)), line)
        if len(self._parsed) >= 100_000:
            self._parsed.clear()
        self._parsed[info] = frame
        return frame

    def _summarise(self, kind: str, p: _Profile) -> ProfileSummary:
        short = self.classifier.short
        busy = p.busy or 1.0
        hot: list[HotFunction] = []
        for (file, name, first), s in p.stats.items():
            if s.total_time / busy < MIN_HOT_SHARE and s.wait_time / (p.seconds or 1.0) < 0.1:
                continue
            callee = None
            if s.callees:
                top, spent = max(s.callees.items(), key=lambda item: item[1])
                if spent >= 0.3 * s.self_time:
                    callee = top
            hot.append(HotFunction(
                function=name, file=short(file), line=first, profile=kind,
                self_share=s.self_time / busy, total_share=s.total_time / busy,
                wait_share=s.wait_time / (p.seconds or 1.0),
                hot_line=max(s.lines.items(), key=lambda item: item[1])[0] if s.lines else None,
                calls_into=callee,
            ))
        ranked = sorted(hot, key=lambda h: (-h.self_share, -h.total_share, h.function))
        waits = sorted((h for h in hot if h.wait_share >= 0.1), key=lambda h: -h.wait_share)
        return ProfileSummary(
            kind=kind, sessions=p.sessions, seconds=p.seconds, busy_seconds=p.busy,
            cpu_seconds=p.cpu if kind in _MEASURES_CPU else None,
            app_share=p.app_busy / busy if p.busy else 0.0,
            hot=[h for h in ranked if h.self_share >= MIN_HOT_SHARE or h.total_share >= 0.2][
                :HOT_PER_PROFILE],
            waits=waits[:ITEMS_PER_SECTION],
        )


def _callee_name(function: str, file: str) -> str:
    if file.startswith("<"):
        return function
    return f"{function} ({'/'.join(file.replace(os.sep, '/').split('/')[-2:])})"


def _attribute(attributes: str, prefix: str) -> str | None:
    """The value of pyinstrument's frame attribute starting with ``prefix`` (``l``: line,
    ``c``: class name)."""
    for attribute in attributes.split("\x01") if attributes else ():
        if attribute.startswith(prefix):
            return attribute[1:] or None
    return None

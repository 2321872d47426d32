"""The :class:`Findings` builder a capture feeds (see the package docstring)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from autoprof.findings.classify import CodeClassifier, default_classifier
from autoprof.findings.evidence import (
    EvidenceReader,
    as_mapping,
    fired_texts,
    request_summary,
    types_grown,
)
from autoprof.findings.model import FindingsResult
from autoprof.findings.profiles import ProfileSet
from autoprof.findings.rank import RELEVANCE, rank

__all__ = ["Findings"]


class Findings:
    """Collects a capture's profiles as they are rendered, then builds its findings.

    :meth:`add_profile` may be called from any thread; it keeps only sums per app function,
    never the session.
    """

    def __init__(self, classifier: CodeClassifier | None = None) -> None:
        self.classifier = classifier or default_classifier()
        self._profiles = ProfileSet(self.classifier)
        self._evidence = EvidenceReader(self.classifier)

    def add_profile(self, kind: str, session: Any) -> None:
        """Add one pyinstrument ``Session`` of ``kind`` (``request-<n>``, ``all-threads``,
        ``before-trigger``, ``loop-blocked``)."""
        self._profiles.add(kind, session)

    def build(
        self,
        *,
        trigger: Any,
        fired: Sequence[Any] = (),
        requests: Sequence[Any] = (),
        heap: Mapping[str, Any] | None = None,
        exceptions: Sequence[Mapping[str, Any]] = (),
        loop_block: Mapping[str, Any] | None = None,
    ) -> FindingsResult:
        """The findings, from what was added and the rest of the capture's evidence.

        ``trigger``: the opening rule (a ``Trigger`` or its dict); ``fired``: every rule
        that fired into the capture (``Fired``, ``Trigger`` or dicts; the opening one may be
        among them); ``requests``: the profiled requests (``RequestRecord`` or dicts);
        ``heap``: the heap document (``census``, ``growth``, ``grew_since``, each optional);
        ``exceptions``: the kept exceptions; ``loop_block``: ``BlockEvent.as_dict()``.
        """
        trig = as_mapping(trigger)
        metric = str(trig.get("metric") or "")
        heap = heap or {}
        growth = as_mapping(heap.get("growth"))
        profiles, owners = self._profiles.summaries()
        allocations = self._evidence.allocations(growth)
        for site in allocations:
            site.function = owners.get((site.file, site.line))
        largest, holders = self._evidence.largest(as_mapping(heap.get("census")))
        total = growth.get("total_growth_bytes")
        result = FindingsResult(
            headline=f"Why: {trig.get('description') or metric or 'unknown trigger'}",
            fired=fired_texts(trig, fired),
            suspects=[],
            profiles=profiles,
            allocations=allocations,
            growth_bytes=total if isinstance(total, int) and growth else None,
            types=types_grown(as_mapping(heap.get("grew_since"))),
            largest=largest,
            exceptions=self._evidence.exceptions(exceptions),
            exception_count=len(exceptions),
            loop_block=self._evidence.loop_block(loop_block),
            requests=[request_summary(r) for r in requests],
            holders=holders,
        )
        result.suspects = rank(result, RELEVANCE.get(metric, RELEVANCE["*"]))
        return result

"""The kinds of evidence a capture holds, one class each, behind one protocol
(:class:`~autoprof.capture.evidence.base.Evidence`; its module says when each hook runs).

Adding a kind is one new class: implement the hooks it needs and add it to the list the
:class:`~autoprof.capture.Capture` builds (its order is the order of the manifest's words).
"""

from autoprof.capture.evidence.base import Evidence, Host, LoopBlock, Offer, Sink, TextFile
from autoprof.capture.evidence.exceptions import Exceptions
from autoprof.capture.evidence.loop import LoopBlockEvidence
from autoprof.capture.evidence.memory import HeapEvidence
from autoprof.capture.evidence.requests import RequestProfiles, RequestSink
from autoprof.capture.evidence.stacks import ThreadStacks
from autoprof.capture.evidence.threads import ThreadProfiles

__all__ = [
    "Evidence",
    "Exceptions",
    "HeapEvidence",
    "Host",
    "LoopBlock",
    "LoopBlockEvidence",
    "Offer",
    "RequestProfiles",
    "RequestSink",
    "Sink",
    "TextFile",
    "ThreadProfiles",
    "ThreadStacks",
]

"""A capture's findings: the few suspects a person reads first, drawn from all its evidence.

The capture feeds a :class:`Findings` builder each profile as it is rendered
(:meth:`Findings.add_profile`; request profiles are added up together, the others kept
apart), so no session outlives its rendering. At finalize :meth:`Findings.build` adds the
heap reports, the exceptions, the event-loop block, the requests and the rules that fired,
and returns a :class:`FindingsResult`: ``as_dict()`` for the manifest's ``findings``,
``render_text()`` for ``summary.txt``.

Only the app's own code is named. A frame is the app's unless its file is in the standard
library, in site-packages / dist-packages (or the sysconfig purelib / platlib paths), in
autoprof, pyinstrument or a web framework / server package, or is not a file at all
(``<frozen ...>``, ``<built-in>``, ``<thread>``). Generator expressions and comprehensions
count as part of the function that runs them. A module is the app's when its file is.

Profiles. Each sample is charged to the innermost app frame on its stack: that function's
*self* share is the time spent in its own lines and in the library calls it makes directly
(``json.dumps`` under ``render`` is ``render``'s cost; the callee that took most of it is
named); its *total* share counts every sample with the function anywhere on the stack.
Shares are of the profile's samples that are not waiting: samples that end in pyinstrument's
``[await]`` or ``[out-of-context]`` frames (an awaiting coroutine, or in the all-threads
profiles a thread that used almost no CPU) are counted apart, as the share of all samples a
function spent waiting under it. A sync call that sleeps or blocks (``time.sleep``, a sync
driver) is not waiting to pyinstrument's request profiler: it is time spent in that call,
which is why the summary names the call and the profile's process CPU seconds.

Heap. Growth is told by the innermost app line of each tracemalloc traceback; the census's
largest objects are grouped by what holds them (a local variable of a running function, a
module's global, another object), so one list holding many of them is one entry.

Suspects are ranked across all of it: see :mod:`autoprof.findings.rank`. Each is one line of
``summary.txt``: the function (or holder) and its file:line in full, then as much of the
detail as fits (:data:`~autoprof.findings.model.SUSPECT_WIDTH`).

Modules: ``classify`` (where code lives), ``profiles`` (profiles added up), ``evidence``
(the other evidence read), ``rank`` (suspects), ``model`` (result types and the text),
``builder`` (:class:`Findings`).
"""

from autoprof.findings.builder import Findings
from autoprof.findings.classify import CodeClassifier, default_classifier
from autoprof.findings.model import (
    AllocationSite,
    ExceptionGroup,
    FindingsResult,
    Holder,
    HotFunction,
    LargeObject,
    LoopBlock,
    ProfileSummary,
    RequestSummary,
    Suspect,
    TypeGrowth,
)
from autoprof.findings.profiles import profile_group
from autoprof.findings.rank import MAX_SUSPECTS, MIN_SCORE, MIN_SUSPECT_SELF, RELEVANCE

__all__ = [
    "MAX_SUSPECTS",
    "MIN_SCORE",
    "MIN_SUSPECT_SELF",
    "RELEVANCE",
    "AllocationSite",
    "CodeClassifier",
    "ExceptionGroup",
    "Findings",
    "FindingsResult",
    "Holder",
    "HotFunction",
    "LargeObject",
    "LoopBlock",
    "ProfileSummary",
    "RequestSummary",
    "Suspect",
    "TypeGrowth",
    "default_classifier",
    "profile_group",
]

"""The event loop's blocked stack (and task dump) behind a loop-lag rule."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from autoprof.capture.evidence.base import Evidence, Host, LoopBlock, Offer, Sink, TextFile
from autoprof.capture.model import safe_text
from autoprof.rules import Trigger


class LoopBlockEvidence(Evidence):
    """The worst block of the event loop: at the open, or brought by a loop-lag rule joining.

    It may still be going on when the capture opens: ``final`` (the watchdog's) gives its
    finished version at finalisation, when it is rendered (``loop-blocked`` profile,
    ``loop-stack.txt``). ``inflight`` (``RequestTracker.snapshot()`` at ``at``, the capture's
    open) names the requests on the loop thread that were in flight since before the block
    began: the one that blocked it is among them."""

    def __init__(
        self,
        host: Host,
        block: LoopBlock | None,
        final: Callable[[Any], Any] | None,
        inflight: list[dict[str, Any]] | None = None,
        at: float | None = None,
    ) -> None:
        super().__init__(host)
        self.block = block
        self._final = final
        self._profiled = False
        self._inflight = inflight or []
        self._at = at

    def requests(self) -> list[dict[str, Any]]:
        """The requests in flight on the loop thread from before the block began to the
        capture's open (none known when the block began after it)."""
        found = self._as_dict()
        if found is None or self._at is None:
            return []
        since = self._at - float(found.get("started") or self._at)
        if since < 0:
            return []
        return [
            {k: r.get(k) for k in ("method", "path", "route", "age_s")}
            for r in self._inflight
            if r.get("thread_ident") == found.get("thread_ident")
            and float(r.get("age_s") or 0.0) >= since
        ]

    def _which(self) -> str:
        return ", ".join(f"{r['method']} {r['route'] or r['path']}" for r in self.requests())

    def join(self, trigger: Trigger, offer: Offer) -> list[str]:
        if trigger.metric != "loop_lag":
            return []
        if self.block is None and offer.loop_block is not None:
            self.block = offer.loop_block
            return ["event loop's blocked stack and task dump"]
        if self.block is not None:
            return ["event loop's blocked stack (the block already in this capture)"]
        return []

    def collect(self, sink: Sink) -> None:
        if self.block is not None:
            self.host.guarded("loop_block", lambda: self._take(sink))

    def _take(self, sink: Sink) -> None:
        if self._final is not None:  # the block may have ended since the trigger
            self.block = self._final(self.block)
        assert self.block is not None
        which = self._which()
        which = f" ({which})" if which else ""
        session = self.block.session(safe_text(
            f"event loop thread while blocked{which}, before autoprof capture {self.host.id}"
        ))
        if session is not None:
            sink.add_profile("loop-blocked", session)
            self._profiled = True

    def _as_dict(self) -> dict[str, Any] | None:
        return self.block.as_dict() if self.block is not None else None

    def files(self) -> list[TextFile]:
        if self.block is None:
            return []
        head, _, rest = self.block.render_text().partition("\n")
        lines = [head]
        for r in self.requests():
            route = f" (route {r['route']})" if r["route"] and r["route"] != r["path"] else ""
            lines.append(f"In flight on the loop thread since before the block: {r['method']} "
                         f"{r['path']}{route}, {r['age_s']:.2f} s old at the capture's open")
        return [("loop-stack", "txt", "\n".join([*lines, rest]))]

    def manifest(self) -> dict[str, Any]:
        found = self._as_dict()
        if found is not None:
            found["requests"] = self.requests()
        return {"loop_block": found}

    def held(self, trigger: Trigger) -> list[str]:
        return ["loop-blocked profile"] if self._profiled else []

    def findings(self) -> dict[str, Any]:
        return {"loop_block": self._as_dict()}

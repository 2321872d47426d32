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
    ``loop-stack.txt``)."""

    def __init__(
        self,
        host: Host,
        block: LoopBlock | None,
        final: Callable[[Any], Any] | None,
    ) -> None:
        super().__init__(host)
        self.block = block
        self._final = final
        self._profiled = False

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
        session = self.block.session(
            safe_text(f"event loop thread while blocked, before autoprof capture {self.host.id}")
        )
        if session is not None:
            sink.add_profile("loop-blocked", session)
            self._profiled = True

    def _as_dict(self) -> dict[str, Any] | None:
        return self.block.as_dict() if self.block is not None else None

    def files(self) -> list[TextFile]:
        if self.block is None:
            return []
        return [("loop-stack", "txt", self.block.render_text())]

    def manifest(self) -> dict[str, Any]:
        return {"loop_block": self._as_dict()}

    def held(self, trigger: Trigger) -> list[str]:
        return ["loop-blocked profile"] if self._profiled else []

    def findings(self) -> dict[str, Any]:
        return {"loop_block": self._as_dict()}

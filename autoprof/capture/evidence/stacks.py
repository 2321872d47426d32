"""Every thread's stack at the trigger."""

from __future__ import annotations

from typing import Any

from autoprof import stacks
from autoprof.capture.evidence.base import Evidence, TextFile
from autoprof.rules import Trigger


class ThreadStacks(Evidence):
    """Thread stacks taken at the trigger (``thread_stacks``), written to ``threads.txt``."""

    stacks: list[dict[str, Any]] | None = None

    def at_trigger(self) -> None:
        if self.host.settings.thread_stacks:
            self.host.guarded("stacks", self._take)

    def _take(self) -> None:
        self.stacks = stacks.thread_stacks()

    def files(self) -> list[TextFile]:
        if self.stacks is None:
            return []
        return [("threads", "txt", stacks.render_thread_stacks(self.stacks))]

    def held(self, trigger: Trigger) -> list[str]:
        return ["thread stacks at the trigger"] if self.stacks is not None else []

"""Exceptions that escaped the app just before the trigger (and while the capture was open,
brought by an error-rate rule joining), with their tracebacks."""

from __future__ import annotations

from typing import Any

from autoprof.capture.evidence.base import Evidence, Host, Offer, TextFile
from autoprof.rules import Trigger
from autoprof.traffic import render_exceptions


class Exceptions(Evidence):
    """The kept exceptions, written to ``exceptions.txt`` and listed in the manifest."""

    def __init__(self, host: Host, exceptions: list[dict[str, Any]] | None) -> None:
        super().__init__(host)
        self.exceptions = exceptions or []

    def join(self, trigger: Trigger, offer: Offer) -> list[str]:
        if not offer.exceptions:
            return []
        seen = {(e["time"], e["type"], e["path"]) for e in self.exceptions}
        new = [e for e in offer.exceptions if (e["time"], e["type"], e["path"]) not in seen]
        self.exceptions.extend(new)
        return [f"{len(new)} exceptions that escaped the app"] if new else []

    def files(self) -> list[TextFile]:
        if not self.exceptions:
            return []
        return [("exceptions", "txt", render_exceptions(self.exceptions))]

    def manifest(self) -> dict[str, Any]:
        return {"exceptions": self.exceptions}

    def held(self, trigger: Trigger) -> list[str]:
        if not self.exceptions:
            return []
        return [f"{len(self.exceptions)} exceptions that escaped the app"]

    def findings(self) -> dict[str, Any]:
        return {"exceptions": self.exceptions}

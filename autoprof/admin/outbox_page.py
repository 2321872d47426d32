"""The status page's lines on uploads to the sink and ``on_capture`` notifications."""

from __future__ import annotations

import time
from html import escape

from autoprof.status import Status


def outbox_section(status: Status) -> str:
    """HTML for the sink and the notifications ("" when neither is configured)."""
    out = ""
    sink = status.sink
    if sink is not None:
        state = ('<span class="bad">failing</span>' if sink.failing
                 else '<span class="ok">ok</span>')
        rows = [
            ("sink", f"<code>{escape(sink.url)}</code> ({state})"),
            ("uploaded", escape(f"{sink.uploaded} captures"
                                + (f", last {_ago(sink.last_upload_at)}"
                                   if sink.last_upload_at else ""))),
            ("waiting", escape(f"{sink.queued} queued here, {sink.waiting_on_disk} on disk "
                               "(any worker)")),
            ("failed attempts", escape(str(sink.failed_attempts))
             + (f' <span class="bad">{escape(sink.last_error or "")}</span> '
                + escape(_ago(sink.last_error_at)) if sink.last_error else "")),
            ("next retry", escape(f"in {sink.next_retry_in:.0f} s"
                                  if sink.next_retry_in is not None else "none due")),
            ("lost before upload", escape(str(sink.lost))),
            ("local copy", escape("kept" if sink.keep_local else "dropped once uploaded")),
        ]
        out += "<h2>Sink</h2>" + _pairs(rows)
    notify = status.notify
    if notify is not None:
        rows = [
            ("on_capture", f"<code>{escape(notify.callable or 'none')}</code>"),
            ("webhook", f"<code>{escape(notify.webhook or 'none')}</code>"),
            ("sent", escape(str(notify.sent))),
            ("failed", escape(str(notify.failed))
             + (f' <span class="bad">{escape(notify.last_error or "")}</span>'
                if notify.last_error else "")),
            ("dropped (queue full)", escape(str(notify.dropped))),
        ]
        out += "<h2>Notifications</h2>" + _pairs(rows)
    return out


def _pairs(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _ago(epoch: float | None) -> str:
    return "" if epoch is None else f"{max(0.0, time.time() - epoch):.0f} s ago"

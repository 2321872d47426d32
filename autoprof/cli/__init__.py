"""The ``autoprof`` command: find, read, browse, compare and prune captures, and trigger one.

Every command works on a local dump directory or a sink URL alike (``s3://bucket/prefix``,
``gs://``, ``az://``, ``file://``); see ``autoprof --help`` and :mod:`autoprof.cli.app`.
Exit codes: 0 done, 1 nothing found (no such capture, no capture matched, the app refused
to open one now), 2 usage error, 3 the source or app could not be reached or refused the
credentials.
"""

from autoprof.cli.app import main

__all__ = ["main"]

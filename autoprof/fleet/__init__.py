"""Every worker of an app: the processes that share a dump directory (gunicorn or uvicorn
workers) see each other in ``{dump_dir}/.workers/``.

Each worker publishes its status there (:mod:`autoprof.fleet.members`); a manual trigger
(``ap.trigger()``, the admin route) opens a capture in the worker it reached and leaves a
request (:mod:`autoprof.fleet.request`) that every other worker's monitor picks up at its next
wake-up. Idle cost: one ``stat`` per monitor wake-up and one small file write per heartbeat;
no thread, no wake-up of its own, nothing on the request path.
"""

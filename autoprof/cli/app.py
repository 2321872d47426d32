"""The ``autoprof`` command line: argument parsing, the default source, exit codes.

Exit codes: 0 done; 1 nothing found (no such capture or file, no capture matched, the app
opened none); 2 usage error; 3 the source or app is unreachable, missing, or refused the
credentials (or a storage package is missing). 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import IO

from autoprof.cli import commands, diff, serve, trigger
from autoprof.cli.base import EXIT_USAGE, CliError, Progress, UsageError
from autoprof.cli.sources import default_source, open_source
from autoprof.cli.text import ProgressLine, parse_age, parse_moment

SOURCE_HELP = ("a dump directory or a sink URL (s3://bucket/prefix, gs://..., file://...); "
               "default: $AUTOPROF_SINK, else $AUTOPROF_DUMP_DIR, else the default dump "
               "directory")
EPILOG = """exit codes: 0 done, 1 nothing found, 2 usage error, 3 source or app unreachable,
missing, or credentials refused. Credentials for a bucket come from the provider's usual
chain (AWS_* variables, AWS_ENDPOINT_URL, profiles, instance metadata); the admin token for
serve and trigger from AUTOPROF_ADMIN_TOKEN."""


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def _nonneg(text: str) -> int:
    return 0 if text == "0" else _positive(text)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="autoprof", description="Find, read, browse and prune autoprof captures, on a "
        "dump directory or a storage bucket, and trigger a capture on a running app.",
        epilog=EPILOG,
    )
    top.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    top.add_argument("--progress", action="store_true",
                     help="progress on stderr for every transfer, however small")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("ls", help="list captures, newest first", epilog=EPILOG)
    p.add_argument("source", nargs="?", metavar="DIR|URL", help=SOURCE_HELP)
    p.add_argument("--host", action="append", default=[],
                   help="only this host (shell pattern: 'web-*'); repeatable")
    p.add_argument("--metric", action="append", default=[],
                   help="only captures opened by this metric (cpu, mem, latency, manual...); "
                   "repeatable")
    p.add_argument("--since", help="only captures from then on: an age (2h, 7d) or a UTC "
                   "time (2026-12-01T10:00)")
    p.add_argument("--until", help="only captures up to then (same forms)")
    p.add_argument("-n", "--limit", type=_positive, help="at most this many")
    p.add_argument("--json", action="store_true", help="the index entries as JSON")

    p = sub.add_parser("show", help="one capture's findings and manifest", epilog=EPILOG)
    p.add_argument("id", metavar="ID", help="a capture id, HOST/ID, a unique start of one, "
                   "or 'latest'")
    p.add_argument("-s", "--source", metavar="DIR|URL", help=SOURCE_HELP)
    p.add_argument("--json", action="store_true", help="the whole manifest as JSON")

    p = sub.add_parser("open", help="fetch a capture's file and open it in the browser",
                       epilog=EPILOG)
    p.add_argument("id", metavar="ID")
    p.add_argument("file", nargs="?", metavar="FILE",
                   help="a file name, or its part after the id (all-threads.html, heap.txt, "
                   "summary); default: the first request's HTML profile")
    p.add_argument("-s", "--source", metavar="DIR|URL", help=SOURCE_HELP)
    p.add_argument("--print", dest="print_only", action="store_true",
                   help="print the local path instead of opening a browser")

    p = sub.add_parser("serve", help="the admin pages, read-only, over a directory or bucket",
                       epilog=EPILOG)
    p.add_argument("source", nargs="?", metavar="DIR|URL", help=SOURCE_HELP)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; any other needs "
                   "AUTOPROF_ADMIN_TOKEN)")
    p.add_argument("--port", type=_nonneg, default=8321, help="port (default 8321; 0: any)")

    p = sub.add_parser("diff", help="what grew in the heap between two captures",
                       epilog=EPILOG)
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    p.add_argument("-s", "--source", metavar="DIR|URL", help=SOURCE_HELP)
    p.add_argument("--by", choices=("bytes", "count"), default="bytes")
    p.add_argument("--top", type=_positive, default=20, help="types shown (default 20)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("prune", help="delete old captures (a dry run without --yes)",
                       epilog=EPILOG)
    p.add_argument("source", nargs="?", metavar="DIR|URL", help=SOURCE_HELP)
    p.add_argument("--keep", type=_nonneg, help="keep the N newest captures (of each host "
                   "with --per-host)")
    p.add_argument("--older-than", help="delete captures older than this (30m, 12h, 7d, 2w)")
    p.add_argument("--per-host", action="store_true", help="apply --keep to each host")
    p.add_argument("--yes", action="store_true", help="delete; without it, only list")

    p = sub.add_parser("trigger", help="open a capture now on a running app (its admin route)",
                       epilog=EPILOG)
    p.add_argument("url", metavar="URL", help="the app's URL (http://host:port) or its admin "
                   "root; the token comes from AUTOPROF_ADMIN_TOKEN")
    p.add_argument("--prefix", default="/_autoprof", help="admin prefix (default /_autoprof)")
    p.add_argument("--wait", type=float, metavar="SECONDS",
                   help="wait at most this long for the capture to be written")
    p.add_argument("--json", action="store_true", help="the app's answer as JSON")
    return top


def run(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    command = args.command
    if command == "trigger":
        return trigger.trigger(args.url, out, err, prefix=args.prefix, wait=args.wait,
                               as_json=args.json)
    source = open_source(args.source, prefetch_manifests=command == "serve")
    if command == "ls":
        return commands.ls(
            source, out, err, as_json=args.json, limit=args.limit, hosts=args.host,
            metrics=args.metric,
            since=parse_moment(args.since) if args.since else None,
            until=parse_moment(args.until) if args.until else None,
        )
    if command == "show":
        return commands.show(source, args.id, out, as_json=args.json)
    if command == "open":
        progress: Progress | None = None
        if not args.quiet:
            progress = ProgressLine(args.file or args.id, stream=err,
                                    threshold=0 if args.progress else 256 * 1024)
        return commands.open_file(source, args.id, args.file, out, print_only=args.print_only,
                                  progress=progress)
    if command == "diff":
        return diff.diff(source, args.a, args.b, out, by=args.by, top=args.top,
                         as_json=args.json)
    if command == "prune":
        if args.keep is None and args.older_than is None:
            raise UsageError("say what to delete: --keep N and/or --older-than AGE")
        return commands.prune(
            source, out, keep=args.keep, per_host=args.per_host, yes=args.yes,
            older_than=parse_age(args.older_than) if args.older_than else None,
        )
    assert command == "serve"
    return serve.serve(source, err, host=args.host, port=args.port,
                       token=os.environ.get("AUTOPROF_ADMIN_TOKEN") or None)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``autoprof`` command; returns its exit code."""
    out, err = sys.stdout, sys.stderr
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return run(args, out, err)
    except CliError as exc:
        err.write(f"autoprof {args.command}: {exc}\n")
        return exc.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


__all__ = ["default_source", "main", "parser"]

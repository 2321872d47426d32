"""Tests for autoprof.store: real files in tmp_path, opened and parsed."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import re
import stat
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from autoprof.store import CaptureInfo, CaptureWriter, DumpStore, validate_name

BAD_NAMES = ["../x", "a/b", "", "A", "x" * 40, "x" * 33, "a--b", "-a", "a-", "a b", "é", "a\x00"]
ID_RE = re.compile(r"\d{8}T\d{6}\.\d{3}Z-p\d+-[a-z0-9-]+-[0-9a-f]{4}")
T0 = datetime(2026, 11, 25, 15, 8, 36, 123000, tzinfo=timezone.utc).timestamp()


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def commit_one(
    store: DumpStore,
    *,
    created: float | None = None,
    pid: int | None = None,
    payload: bytes = b"profile",
    metric: str = "mem",
    reason: str = "abs",
) -> CaptureInfo:
    writer = store.begin(metric=metric, reason=reason, created=created, pid=pid)
    writer.write_bytes("request-1", "html", payload)
    writer.write_json("heap", {"top": [1, 2, 3]})
    return writer.commit({"trigger": {"metric": metric}})


def entries(directory: Path) -> list[str]:
    """What the directory holds, besides the lock file shared by all writers."""
    return sorted(name for name in os.listdir(directory) if name != ".lock")


def check_capture(store: DumpStore, info: CaptureInfo) -> dict[str, Any]:
    """The manifest parses, names the capture and lists files that exist."""
    manifest = store.read_manifest(info.id)
    assert manifest is not None
    assert manifest["id"] == info.id
    manifest_name = f"{info.id}_manifest.json"
    assert set(info.files) == {*manifest["files"], manifest_name}
    for name in manifest["files"]:
        path = store.file_path(info.id, name)
        assert path is not None
        assert path.read_bytes()
    return manifest


# --- ids and names ----------------------------------------------------------------------------


def test_capture_id_format_and_parsed_fields(tmp_path: Path) -> None:
    store = DumpStore(tmp_path / "dumps")
    writer = store.begin(metric="mem", reason="abs", created=T0, pid=1234)
    assert re.fullmatch(r"20261125T150836\.123Z-p1234-mem-abs-[0-9a-f]{4}", writer.id)
    assert writer.staging == store.directory / f".staging-{writer.id}"
    name = writer.write_text("threads", "txt", "Thread main\n")
    assert name == f"{writer.id}_threads.txt"
    info = writer.commit({})
    assert info.id == writer.id
    assert info.path == store.directory / writer.id
    assert info.created == pytest.approx(T0, abs=1e-6)
    assert (info.pid, info.metric, info.reason) == (1234, "mem", "abs")
    assert store.captures() == [info]


def test_default_time_and_pid(tmp_path: Path) -> None:
    store = DumpStore(tmp_path)
    before = time.time()
    info = commit_one(store)
    assert info.pid == os.getpid()
    assert before - 0.001 <= info.created <= time.time() + 0.001


def test_ids_are_unique(tmp_path: Path) -> None:
    store = DumpStore(tmp_path)
    writers = [store.begin(metric="cpu", reason="diff", created=T0, pid=1) for _ in range(50)]
    assert len({w.id for w in writers}) == 50
    for writer in writers:
        writer.abort()
    assert entries(tmp_path) == []


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_bad_metric_and_reason_rejected(tmp_path: Path, bad: str) -> None:
    store = DumpStore(tmp_path)
    with pytest.raises(ValueError, match="invalid metric"):
        store.begin(metric=bad, reason="abs")
    with pytest.raises(ValueError, match="invalid reason"):
        store.begin(metric="mem", reason=bad)
    assert entries(tmp_path) == []


@pytest.mark.parametrize("bad", [*BAD_NAMES, "manifest"])
def test_bad_kind_rejected(tmp_path: Path, bad: str) -> None:
    writer = DumpStore(tmp_path).begin(metric="mem", reason="abs")
    with pytest.raises(ValueError, match="kind"):
        writer.write_text(bad, "txt", "x")
    with pytest.raises(ValueError, match="kind"):
        writer.write_json(bad, {})
    assert os.listdir(writer.staging) == []


@pytest.mark.parametrize("bad", ["exe", "", "JSON", ".json", "../json", "json/x", "speedscope"])
def test_bad_extension_rejected(tmp_path: Path, bad: str) -> None:
    writer = DumpStore(tmp_path).begin(metric="mem", reason="abs")
    with pytest.raises(ValueError, match="extension"):
        writer.write_bytes("heap", bad, b"x")
    assert os.listdir(writer.staging) == []


def test_name_validation_limits() -> None:
    assert validate_name("x" * 32) == "x" * 32
    assert validate_name("request-12") == "request-12"
    with pytest.raises(ValueError, match="invalid name"):
        validate_name("x" * 33)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pid": -1}, "pid"),
        ({"created": -5.0}, "created"),
        ({"created": float("nan")}, "created"),
        ({"created": 1e12}, "created"),
    ],
)
def test_bad_pid_and_created_rejected(tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DumpStore(tmp_path).begin(metric="mem", reason="abs", **kwargs)


def test_all_extensions_and_hyphenated_names(tmp_path: Path) -> None:
    store = DumpStore(tmp_path)
    writer = store.begin(metric="cpu-pct", reason="abs-limit", created=T0, pid=7)
    names = [
        writer.write_text("request-1", "html", "<html></html>"),
        writer.write_text("request-1", "speedscope.json", "{}"),
        writer.write_text("request-1", "txt", "text"),
        writer.write_json("request-1", {"when": datetime(2026, 1, 1), "path": Path("/x")}),
    ]
    assert all(name is not None for name in names)
    writer.commit({})
    (info,) = store.captures()
    assert (info.metric, info.reason) == ("cpu-pct", "abs-limit")
    assert f"{info.id}_request-1.speedscope.json" in info.files
    path = store.file_path(info.id, f"{info.id}_request-1.json")
    assert path is not None
    assert json.loads(path.read_text()) == {"when": "2026-01-01 00:00:00", "path": "/x"}


def test_duplicate_file_rejected(tmp_path: Path) -> None:
    writer = DumpStore(tmp_path).begin(metric="mem", reason="abs")
    writer.write_text("heap", "txt", "a")
    with pytest.raises(ValueError, match="already written"):
        writer.write_text("heap", "txt", "b")


# --- layout, permissions, visibility --------------------------------------------------------


def test_permissions(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "b" / "dumps"
    store = DumpStore(directory)
    for path in (tmp_path / "a", tmp_path / "a" / "b", directory):
        assert mode(path) == 0o700
    writer = store.begin(metric="mem", reason="abs")
    assert mode(writer.staging) == 0o700
    writer.write_text("heap", "txt", "heap report")
    writer.write_bytes("request-1", "html", b"<html/>")
    info = writer.commit({"note": "x"})
    assert mode(info.path) == 0o700
    assert len(info.files) == 3
    for name in info.files:
        assert mode(info.path / name) == 0o600
    assert mode(directory / ".lock") == 0o600


def test_invisible_until_commit(tmp_path: Path) -> None:
    store = DumpStore(tmp_path)
    writer = store.begin(metric="mem", reason="abs")
    heap = writer.write_json("heap", {"a": 1})
    threads = writer.write_text("threads", "txt", "stacks")
    assert writer.written == [heap, threads]
    assert store.captures() == []
    assert store.get(writer.id) is None
    assert store.read_manifest(writer.id) is None
    assert store.usage()[1] == 0
    assert entries(tmp_path) == [writer.staging.name]

    info = writer.commit({"trigger": {"value": 81.5}})
    assert entries(tmp_path) == [writer.id]
    assert store.captures() == [info]
    assert store.get(writer.id) == info
    manifest = check_capture(store, info)
    assert manifest["files"] == [heap, threads]
    assert manifest["skipped"] == []
    assert manifest["trigger"] == {"value": 81.5}
    assert (manifest["metric"], manifest["reason"], manifest["pid"]) == ("mem", "abs", os.getpid())
    assert info.size == sum((tmp_path / writer.id / n).stat().st_size for n in info.files)
    assert store.usage() == (info.size, 1)


def test_atomic_writes_leave_no_temp_files(tmp_path: Path) -> None:
    store = DumpStore(tmp_path)
    writer = store.begin(metric="mem", reason="abs")
    for i in range(5):
        writer.write_bytes(f"request-{i}", "html", os.urandom(1000))
    assert not [n for n in os.listdir(writer.staging) if n.startswith(".")]
    info = writer.commit({})
    assert not [n for n in os.listdir(info.path) if n.startswith(".")]
    assert len(info.files) == 6


def test_failed_write_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DumpStore(tmp_path)
    writer = store.begin(metric="mem", reason="abs")

    def no_space(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "write", no_space)
        with pytest.raises(OSError, match="No space") as caught:
            writer.write_text("heap", "txt", "x" * 10_000)
    assert caught.value.errno == errno.ENOSPC
    assert os.listdir(writer.staging) == []
    assert writer.written == []
    assert writer.size == 0

    name = writer.write_text("heap", "txt", "retry")
    assert name is not None
    info = writer.commit({})
    assert info.files == tuple(sorted([name, f"{writer.id}_manifest.json"]))


def test_write_many_writes_together_and_keeps_what_landed_when_one_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DumpStore(tmp_path)
    writer = store.begin(metric="cpu", reason="diff")
    names = writer.write_many([("request-1", "html", b"a" * 10), ("request-1", "txt", b"b")])
    assert names == [f"{writer.id}_request-1.html", f"{writer.id}_request-1.txt"]
    assert writer.size == 11

    real_write = os.write
    calls = []

    def second_fails(fd: int, data: Any) -> int:
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    with monkeypatch.context() as patch:
        patch.setattr(os, "write", second_fails)
        with pytest.raises(OSError, match="No space"):
            writer.write_many([("heap", "txt", b"c" * 5), ("heap", "json", b"{}")])
    assert writer.written[-1] == f"{writer.id}_heap.txt"  # the one that landed is on record
    assert writer.size == 16
    assert sorted(os.listdir(writer.staging)) == sorted(writer.written)  # no partial file left
    info = writer.commit({})
    assert len(info.files) == 4


def test_write_many_that_does_not_fit_keeps_the_files_that_do(tmp_path: Path) -> None:
    store = DumpStore(tmp_path, max_bytes=2**16)
    writer = store.begin(metric="cpu", reason="diff")
    room = 2**16 - 2**16 // 8  # what a file may take beside the manifest's reserve
    names = writer.write_many([("small", "txt", b"s" * 100), ("big", "txt", b"b" * room)])
    assert names == [f"{writer.id}_small.txt", None]
    assert writer.skipped == ["big"]


def test_failed_commit_leaves_nothing_visible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DumpStore(tmp_path)
    writer = store.begin(metric="mem", reason="abs")
    writer.write_text("heap", "txt", "x")

    def broken_rename(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "rename", broken_rename)
    with pytest.raises(OSError, match="I/O error"):
        writer.commit({})
    assert store.captures() == []
    assert entries(tmp_path) == []
    writer.abort()
    with pytest.raises(RuntimeError):
        writer.commit({})


def test_failed_manifest_write_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DumpStore(tmp_path)
    writer = store.begin(metric="mem", reason="abs")
    writer.write_text("heap", "txt", "x")

    def no_space(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", no_space)
    with pytest.raises(OSError, match="No space"):
        writer.commit({})
    assert entries(tmp_path) == []


def test_capture_is_synced_after_it_is_visible_not_file_by_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DumpStore(tmp_path)
    writer = store.begin(metric="cpu", reason="diff")
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    writer.write_many([("request-1", "html", b"<html>"), ("request-1", "txt", b"t")])
    with pytest.raises(RuntimeError, match="not committed"):
        writer.sync()
    info = writer.commit({"k": 1})
    assert synced == []  # nothing waits on the disk on the way to a visible capture
    writer.sync()
    assert synced == [
        *(str(info.path / name) for name in writer.written),
        str(info.path / f"{info.id}_manifest.json"),
        str(info.path),
        str(tmp_path),
    ]
    assert json.loads((info.path / f"{info.id}_manifest.json").read_text())["k"] == 1

    store.quota.delete(info)  # retention removed it before the sync ran: nothing to do
    synced.clear()
    writer.sync()
    assert synced == []


def test_abort_and_state(tmp_path: Path) -> None:
    store = DumpStore(tmp_path)
    writer = store.begin(metric="mem", reason="abs")
    writer.write_text("heap", "txt", "x")
    writer.abort()
    writer.abort()
    assert entries(tmp_path) == []
    with pytest.raises(RuntimeError, match="aborted"):
        writer.write_text("threads", "txt", "x")

    done = store.begin(metric="mem", reason="abs")
    info = done.commit({})
    done.abort()
    assert store.captures() == [info]
    with pytest.raises(RuntimeError, match="committed"):
        done.write_text("heap", "txt", "x")
    with pytest.raises(RuntimeError, match="committed"):
        done.commit({})


def test_context_manager_aborts_uncommitted(tmp_path: Path) -> None:
    store = DumpStore(tmp_path)

    def fail_midway() -> None:
        with store.begin(metric="mem", reason="abs") as writer:
            writer.write_text("heap", "txt", "x")
            raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        fail_midway()
    assert entries(tmp_path) == []
    with store.begin(metric="mem", reason="abs") as writer:
        writer.commit({})
    assert len(store.captures()) == 1


# --- retention ----------------------------------------------------------------------------


def test_retention_by_count(tmp_path: Path) -> None:
    store = DumpStore(tmp_path, max_captures=3)
    infos = [commit_one(store, created=T0 + i) for i in range(5)]
    remaining = store.captures()
    assert [c.id for c in remaining] == [i.id for i in reversed(infos[2:])]
    assert entries(tmp_path) == sorted(i.id for i in infos[2:])
    for info in remaining:
        check_capture(store, info)


def test_retention_keeps_captures_a_sink_still_waits_for_while_others_can_go(
    tmp_path: Path,
) -> None:
    store = DumpStore(tmp_path, max_captures=2)
    oldest = commit_one(store, created=T0)
    waiting = tmp_path / ".uploads"
    waiting.mkdir()
    (waiting / oldest.id).touch()
    second = commit_one(store, created=T0 + 1)
    third = commit_one(store, created=T0 + 2)
    assert [c.id for c in store.captures()] == [third.id, oldest.id]  # second went instead
    fourth = commit_one(store, created=T0 + 3)
    assert [c.id for c in store.captures()] == [fourth.id, oldest.id]
    assert second.id not in entries(tmp_path)
    (waiting / fourth.id).touch()  # every capture waits: the cap still holds, oldest first
    fifth = commit_one(store, created=T0 + 4)
    assert [c.id for c in store.captures()] == [fifth.id, fourth.id]


def test_retention_by_bytes_removes_oldest_first(tmp_path: Path) -> None:
    max_bytes = 10_000
    store = DumpStore(tmp_path, max_bytes=max_bytes)
    infos: list[CaptureInfo] = []
    for i in range(6):
        infos.append(commit_one(store, created=T0 + i, payload=os.urandom(3000)))
        assert store.usage()[0] <= max_bytes
    remaining = [c.id for c in store.captures()]
    assert 1 <= len(remaining) < 6
    assert remaining == [i.id for i in reversed(infos[-len(remaining) :])]


def test_file_over_budget_is_skipped(tmp_path: Path) -> None:
    store = DumpStore(tmp_path, max_bytes=2000)
    writer = store.begin(metric="mem", reason="abs")
    assert writer.write_bytes("request-1", "html", b"x" * 2001) is None
    small = writer.write_text("heap", "txt", "small")
    assert writer.write_bytes("request-2", "html", b"y" * 1999) is None
    assert writer.skipped == ["request-1", "request-2"]
    assert writer.written == [small]
    info = writer.commit({})
    manifest = check_capture(store, info)
    assert manifest["skipped"] == ["request-1", "request-2"]
    assert manifest["files"] == [small]
    assert not [n for n in info.files if "request" in n]


def test_same_millisecond_orders_by_pid_numerically(tmp_path: Path) -> None:
    store = DumpStore(tmp_path, max_captures=2)
    late = commit_one(store, created=T0, pid=1000)
    early = commit_one(store, created=T0, pid=99)
    assert [c.id for c in store.captures()] == [late.id, early.id]
    newest = commit_one(store, created=T0, pid=5000)
    assert [c.id for c in store.captures()] == [newest.id, late.id]


def test_stale_staging_and_trash_removed_at_commit(tmp_path: Path) -> None:
    store = DumpStore(tmp_path)
    old = time.time() - 2 * 3600
    stale = [tmp_path / ".staging-old", tmp_path / ".trash-old-1234"]
    for path in stale:
        path.mkdir()
        (path / "leftover.html").write_text("x")
        os.utime(path, (old, old))
    fresh = tmp_path / ".staging-fresh"
    fresh.mkdir()
    (tmp_path / ".other").write_text("kept")
    commit_one(store)
    for path in stale:
        assert not path.exists()
    assert fresh.is_dir()
    assert (tmp_path / ".other").exists()


def test_in_flight_staging_counts_toward_bytes(tmp_path: Path) -> None:
    store = DumpStore(tmp_path, max_bytes=10_000)
    first = commit_one(store, created=T0, payload=b"a" * 3000)
    busy = store.begin(metric="cpu", reason="diff")
    busy.write_bytes("request-1", "html", b"b" * 5000)
    second = commit_one(store, created=T0 + 1, payload=b"c" * 3000)
    assert [c.id for c in store.captures()] == [second.id]
    assert store.get(first.id) is None
    busy.abort()


# --- listing and lookup -------------------------------------------------------------------


def test_listing_ignores_foreign_entries_and_symlinks(tmp_path: Path) -> None:
    store = DumpStore(tmp_path / "dumps")
    info = commit_one(store)
    secret = tmp_path / "secret.txt"
    secret.write_text("do not serve")
    planted = info.path / f"{info.id}_evil.txt"
    planted.symlink_to(secret)
    (info.path / ".hidden").write_text("x")
    (info.path / f"{info.id}_sub").mkdir()

    other = commit_one(DumpStore(tmp_path / "elsewhere"))
    linked = store.directory / other.id
    linked.symlink_to(other.path)
    no_manifest = store.directory / "20261125T150836.123Z-p1-mem-abs-0000"
    no_manifest.mkdir()
    (no_manifest / f"{no_manifest.name}_heap.txt").write_text("x")
    (store.directory / "20261125T150836.123Z-p2-mem-abs-0000").write_text("a file")
    (store.directory / "notes").mkdir()

    (listed,) = store.captures()
    assert listed.id == info.id
    assert listed.files == info.files
    assert planted.name not in listed.files
    assert store.file_path(info.id, planted.name) is None
    assert store.file_path(info.id, ".hidden") is None
    assert store.get(other.id) is None
    assert store.get(no_manifest.name) is None
    assert store.usage()[1] == 1


def test_lookups_reject_unlisted_names(tmp_path: Path) -> None:
    store = DumpStore(tmp_path / "dumps")
    info = commit_one(store)
    name = info.files[0]
    assert store.file_path(info.id, name) == info.path / name
    for bad_id in ["../dumps", "", "..", info.id + "/", f"../dumps/{info.id}", info.id.upper()]:
        assert store.get(bad_id) is None
        assert store.file_path(bad_id, name) is None
        assert store.read_manifest(bad_id) is None
    for bad_name in ["../" + name, "/etc/passwd", "", ".", name + "x"]:
        assert store.file_path(info.id, bad_name) is None


def test_listing_is_newest_first(tmp_path: Path) -> None:
    store = DumpStore(tmp_path)
    ids = [commit_one(store, created=T0 + offset).id for offset in (5, 1, 3)]
    assert [c.id for c in store.captures()] == [ids[0], ids[2], ids[1]]
    assert all(ID_RE.fullmatch(i) for i in ids)


def test_corrupt_manifest_reads_as_none(tmp_path: Path) -> None:
    store = DumpStore(tmp_path)
    info = commit_one(store)
    (info.path / f"{info.id}_manifest.json").write_text("{not json")
    assert store.get(info.id) is not None
    assert store.read_manifest(info.id) is None


# --- the dump directory ---------------------------------------------------------------------


def test_symlinked_dump_dir_rejected(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(ValueError, match="symbolic link"):
        DumpStore(link)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "missing")
    with pytest.raises(ValueError, match="symbolic link"):
        DumpStore(dangling)
    assert not (tmp_path / "missing").exists()


def test_dump_dir_that_is_a_file_rejected(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        DumpStore(path)


def test_dump_dir_owned_by_someone_else_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: owner + 4242)
    with pytest.raises(ValueError, match=rf"owned by uid {owner}, not by this process") as caught:
        DumpStore(tmp_path)
    assert "fix its owner" in str(caught.value)


def test_readable_by_others_is_tightened(tmp_path: Path) -> None:
    directory = tmp_path / "dumps"
    directory.mkdir()
    os.chmod(directory, 0o755)
    DumpStore(directory)
    assert mode(directory) == 0o700


@pytest.mark.parametrize("loose", [0o777, 0o770, 0o702, 0o1777])
def test_dump_dir_writable_by_others_is_refused_not_repaired(tmp_path: Path, loose: int) -> None:
    directory = tmp_path / "dumps"
    directory.mkdir()
    os.chmod(directory, loose)
    with pytest.raises(ValueError, match="writable by others") as caught:
        DumpStore(directory)
    assert f"chmod 700 {directory}" in str(caught.value)
    assert mode(directory) == loose  # left as found: what is in it is for a person to check


OTHER_UID = 65534


def test_captures_and_files_of_another_uid_are_neither_listed_nor_served(tmp_path: Path) -> None:
    """What another user planted (while the directory was writable, or as root) stays out."""
    if os.getuid() != 0:
        pytest.skip("needs root to give files to another uid")
    store = DumpStore(tmp_path / "dumps")
    mine = commit_one(store)
    planted = commit_one(DumpStore(tmp_path / "elsewhere"), created=T0 + 60)
    moved = store.directory / planted.id
    os.rename(planted.path, moved)
    for path in [moved, *moved.iterdir()]:
        os.chown(path, OTHER_UID, OTHER_UID)
    extra = mine.path / f"{mine.id}_planted.html"
    extra.write_text("<script>steal()</script>")
    os.chown(extra, OTHER_UID, OTHER_UID)

    assert [c.id for c in store.captures()] == [mine.id]
    assert store.get(planted.id) is None
    assert store.file_path(planted.id, f"{planted.id}_manifest.json") is None
    assert store.read_manifest(planted.id) is None
    (listed,) = store.captures()
    assert extra.name not in listed.files
    assert store.file_path(mine.id, extra.name) is None
    assert store.read_manifest(mine.id) is not None  # its own files still are
    assert store.usage()[1] == 1


@pytest.mark.parametrize("kwargs", [{"max_bytes": 0}, {"max_captures": 0}, {"max_bytes": 1.5}])
def test_bad_limits_rejected(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="positive integer"):
        DumpStore(tmp_path, **kwargs)


# --- several processes ----------------------------------------------------------------------


def _worker(directory: str, max_captures: int, count: int) -> None:
    store = DumpStore(directory, max_captures=max_captures)
    for i in range(count):
        writer: CaptureWriter = store.begin(metric="cpu", reason="abs")
        writer.write_bytes(f"request-{i}", "html", os.urandom(2000))
        writer.write_text("threads", "txt", f"pid {os.getpid()} capture {i}\n" * 50)
        writer.commit({"worker": os.getpid(), "n": i})


def test_concurrent_processes_share_the_directory(tmp_path: Path) -> None:
    max_captures = 3
    store = DumpStore(tmp_path, max_captures=max_captures)
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_worker, args=(str(tmp_path), max_captures, 5)) for _ in range(4)]
    for process in workers:
        process.start()
    while any(process.is_alive() for process in workers):
        for info in store.captures():
            # A listed capture is always whole, even if it is deleted right after.
            assert len(info.files) == 3
    for process in workers:
        process.join(timeout=60)
        assert process.exitcode == 0

    remaining = store.captures()
    assert len(remaining) == max_captures
    for info in remaining:
        manifest = check_capture(store, info)
        assert manifest["worker"] == info.pid
    assert [n for n in entries(tmp_path) if n.startswith(".")] == []
    assert store.usage()[1] == len(remaining)


def test_caps_hold_at_every_moment_while_a_capture_is_written(tmp_path: Path) -> None:
    """Staging files count: writing a new capture evicts old ones *before* each write, so
    the directory never holds more than max_bytes, even between two files of a capture."""
    store = DumpStore(tmp_path, max_bytes=100_000, max_captures=10)
    for i in range(4):
        commit_one(store, created=T0 + i, payload=b"o" * 20_000)
    writer = store.begin(metric="cpu", reason="diff", created=T0 + 10)
    for i in range(1, 5):
        assert writer.write_bytes(f"request-{i}", "html", b"n" * 20_000) is not None
        used, _ = store.usage()
        assert used <= store.max_bytes
    writer.commit({})
    used, count = store.usage()
    assert used <= store.max_bytes
    assert store.captures()[0].id == writer.id
    assert count < 5  # old captures made room


def test_capture_larger_than_the_cap_is_refused_file_by_file(tmp_path: Path) -> None:
    store = DumpStore(tmp_path, max_bytes=50_000)
    writer = store.begin(metric="mem", reason="abs")
    assert writer.write_bytes("request-1", "html", b"x" * 30_000) is not None
    assert writer.write_bytes("request-2", "html", b"x" * 30_000) is None
    assert writer.skipped == ["request-2"]
    info = writer.commit({})
    assert info.size <= store.max_bytes

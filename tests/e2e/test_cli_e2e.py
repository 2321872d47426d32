"""The ``autoprof`` command end to end, over a dump directory and a real S3 server.

One FastAPI app under uvicorn (module-scoped) with the admin route on and a sink to a moto S3
server the suite starts on 127.0.0.1: ``autoprof trigger`` opens two captures on it (the
second after the app grew its heap by 16 MiB of bytearrays); the app's uploader ships them to
the bucket, and the test copies them, under the sink layout's names, to a second prefix under
two hosts. Every command then runs against the app's dump directory and the bucket: in this
process through ``main(argv)`` (the console script's function), or as a real process where
the process matters (``serve`` over HTTP, the console script, a browser, credentials).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from autoprof.cli import main
from autoprof.sink.layout import IndexEntry, file_key, index_key
from autoprof.store import DumpStore
from tests.e2e.conftest import (
    FAST_SETTINGS,
    REPO_ROOT,
    CaptureDir,
    Server,
    free_port,
    server_command,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

TOKEN = "cli-e2e-admin-token-0123456789"
BUCKET = "caps"
FLEET = f"s3://{BUCKET}/fleet"
LIVE = f"s3://{BUCKET}/live"
HOSTS = ("web-a", "web-b")
GROWTH_MIB = 16
AUTOPROF = str(Path(sys.executable).with_name("autoprof"))


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A moto S3 server on 127.0.0.1 with bucket ``caps``; the AWS environment pointing at it
    (set in this process for the module, and returned for child processes)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path_factory.mktemp("aws") / "none"),
        "AWS_CONFIG_FILE": str(tmp_path_factory.mktemp("aws") / "none"),
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        for key in [k for k in os.environ if k.startswith("AUTOPROF_") or k == "AWS_PROFILE"]:
            mp.delenv(key)
        bucket_fs().mkdir(BUCKET)
        yield env
    server.stop()


def bucket_fs() -> Any:
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True)


def child_env(s3: dict[str, str], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOPROF_", "AWS_"))}
    return {**env, **s3, **extra}


def cli(*argv: str, env: dict[str, str] | None = None,
        timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """The console script as a real process."""
    return subprocess.run([AUTOPROF, *argv], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO_ROOT)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``main(argv)`` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def app(s3: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    run_dir = tmp_path_factory.mktemp("cli-app")
    dump_dir = run_dir / "dumps"
    settings = {
        **FAST_SETTINGS,
        "AUTOPROF_ADMIN": "true",
        "AUTOPROF_ADMIN_TOKEN": TOKEN,
        "AUTOPROF_COOLDOWN": "1",
        "AUTOPROF_CAPTURE_TIMEOUT": "2",
        "AUTOPROF_SINK": LIVE,
    }
    for rule in ("CPU", "MEM", "RSS", "RSS_GROWTH", "LATENCY", "ERROR_RATE", "LOOP_LAG"):
        settings[f"AUTOPROF_{rule}_RULE"] = "off"
    env = child_env(s3, **settings, AUTOPROF_DUMP_DIR=str(dump_dir), PYTHONUNBUFFERED="1")
    port = free_port()
    server = Server.spawn("fastapi-admin", server_command("fastapi-admin", port), env=env,
                          port=port, dump_dir=dump_dir, log_path=run_dir / "server.log",
                          settings=settings)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def captures(app: Server, s3: dict[str, str]) -> tuple[CaptureDir, CaptureDir]:
    """Two captures opened by ``autoprof trigger``: A, then B after the app holds 16 MiB more;
    copied to the bucket's ``fleet`` prefix, A as host web-a and B as web-b."""
    env = child_env(s3, AUTOPROF_ADMIN_TOKEN=TOKEN)
    first = cli("trigger", app.base_url, env=env)
    assert first.returncode == 0, (first.stdout, first.stderr, app.log_tail())
    id_a = first.stdout.strip()
    assert re.fullmatch(r"\d{8}T\d{6}\.\d{3}Z-p\d+-manual-manual-[0-9a-f]{4}", id_a), first.stdout
    for _ in range(2):
        assert app.get("/cpu", seconds=0.05).status_code == 200
    a = app.wait_for_capture(lambda c: c.id == id_a, timeout=15)
    assert a is not None, app.diagnose("capture A was not written")
    assert app.get("/mem", mb=GROWTH_MIB).status_code == 200
    time.sleep(1.1)  # the manual cooldown
    second = cli("trigger", app.base_url + "/_autoprof/", "--wait", "15", "--json", env=env)
    assert second.returncode == 0, (second.stdout, second.stderr, app.log_tail())
    answer = json.loads(second.stdout)
    assert answer["written"] is True
    assert answer["state"] == "open"
    b = app.find_capture(lambda c: c.id == answer["capture"])
    assert b is not None, app.diagnose("capture B was not written")
    fs = bucket_fs()
    for host, capture in zip(HOSTS, (a, b), strict=True):
        upload(fs, FLEET.removeprefix("s3://"), host, capture.path)
    return a, b


def upload(fs: Any, root: str, host: str, folder: Path) -> None:
    """A capture directory into a bucket under the sink layout's names, its index entry last."""
    capture_id = folder.name
    total = 0
    for path in sorted(folder.iterdir()):
        fs.put_file(str(path), file_key(root, host, capture_id, path.name))
        total += path.stat().st_size
    manifest = json.loads((folder / f"{capture_id}_manifest.json").read_text())
    entry = IndexEntry.from_manifest(manifest, host=host, size=total)
    fs.pipe_file(index_key(root, host, capture_id), entry.to_json())


@pytest.fixture(params=["dir", "s3"])
def source(request: pytest.FixtureRequest, app: Server,
           captures: tuple[CaptureDir, CaptureDir]) -> str:
    return str(app.dump_dir) if request.param == "dir" else FLEET


# -- ls ---------------------------------------------------------------------------------------


def test_ls_lists_newest_first_with_filters(capsys: pytest.CaptureFixture[str], source: str,
                                            captures: tuple[CaptureDir, CaptureDir]) -> None:
    a, b = captures
    code, out, _ = run(capsys, "ls", source)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["TIME", "(UTC)", "HOST", "PID"]
    assert b.id in lines[1], out
    assert a.id in lines[2], out
    assert str(a.manifest["pid"]) in lines[2]
    assert "manual" in lines[2]
    code, out, _ = run(capsys, "ls", source, "--json")
    entries = json.loads(out)
    assert [e["id"] for e in entries] == [b.id, a.id]
    assert entries[1]["requests_profiled"] == len(a.requests) >= 1
    assert entries[0]["size"] > 0
    assert entries[0]["metric"] == "manual"
    host = "web-a" if source.startswith("s3") else entries[1]["host"]
    code, out, _ = run(capsys, "ls", source, "--json", "--host", host, "--since", "1h")
    expected = [a.id] if source.startswith("s3") else [b.id, a.id]
    assert code == 0
    assert [e["id"] for e in json.loads(out)] == expected
    code, out, err = run(capsys, "ls", source, "--metric", "cpu")
    assert (code, out) == (1, "")
    assert "no captures matched" in err
    code, out, _ = run(capsys, "ls", source, "--until", "2h")
    assert code == 1


# -- show -------------------------------------------------------------------------------------


def test_show_prints_findings_and_manifest(capsys: pytest.CaptureFixture[str], source: str,
                                           captures: tuple[CaptureDir, CaptureDir]) -> None:
    a, _ = captures
    code, out, _ = run(capsys, "show", a.id[:22], "--source", source)
    assert code == 0, out
    assert out.startswith(f"Capture {a.id}\n")
    assert f"pid {a.manifest['pid']}" in out
    assert f"requests  {len(a.requests)} profiled" in out
    assert re.search(r"GET /cpu\S* -> 200", out), out
    assert "\nFindings\n" in out
    assert "Why: manual trigger" in out
    code, out, _ = run(capsys, "show", a.id, "-s", source, "--json")
    assert code == 0
    assert json.loads(out) == a.manifest
    code, out, err = run(capsys, "show", "20991231T000000.000Z-p1-cpu-abs-ffff", "-s", source)
    assert code == 1
    assert out == ""
    assert "no capture" in err


# -- open -------------------------------------------------------------------------------------


def test_open_fetches_a_private_copy(capsys: pytest.CaptureFixture[str], source: str,
                                     captures: tuple[CaptureDir, CaptureDir]) -> None:
    a, _ = captures
    code, out, _ = run(capsys, "open", a.id, "--print", "-s", source)
    assert code == 0
    path = Path(out.strip())
    html = a.requests[0]["files"]["html"]
    assert path.name == html
    assert path.read_bytes() == (a.path / html).read_bytes()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    if source.startswith("s3"):
        assert path.parent != a.path
    code, out, _ = run(capsys, "open", a.id, "heap.txt", "--print", "-s", source)
    assert code == 0
    assert Path(out.strip()).read_text() == a.kind("heap.txt").read_text()
    code, _, err = run(capsys, "open", a.id, "nothing.txt", "--print", "-s", source)
    assert code == 1
    assert "heap.json" in err


def test_open_starts_the_browser_with_progress(s3: dict[str, str], tmp_path: Path,
                                               captures: tuple[CaptureDir, CaptureDir]) -> None:
    _, b = captures
    record = tmp_path / "browser.txt"
    script = tmp_path / "browser.py"
    script.write_text(f"import sys; open({str(record)!r}, 'w').write(sys.argv[1])\n")
    env = child_env(s3, BROWSER=f"{sys.executable} {script} %s")
    done = cli("--progress", "open", f"web-b/{b.id}", "all-threads.html", "-s", FLEET, env=env)
    assert done.returncode == 0, done.stderr
    assert "100% (" in done.stderr
    assert "fetching all-threads.html" in done.stderr
    opened = record.read_text()
    assert opened.startswith("file://")
    assert opened.endswith(f"{b.id}_all-threads.html")
    assert Path(opened.removeprefix("file://")).read_bytes() == b.kind("all-threads.html"
                                                                       ).read_bytes()


# -- serve ------------------------------------------------------------------------------------


@contextlib.contextmanager
def serving(argv: list[str], env: dict[str, str]) -> Iterator[str]:
    """``autoprof serve`` as a process; yields its base URL once it listens."""
    process = subprocess.Popen([AUTOPROF, "serve", *argv], env=env, cwd=REPO_ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        found = re.search(r"on (http://\S+?)/", line)
        assert found, line + (process.stderr.read() if process.poll() is not None else "")
        yield found[1]
    finally:
        process.terminate()
        process.wait(10)


def test_serve_browses_read_only_over_http(s3: dict[str, str], source: str,
                                           captures: tuple[CaptureDir, CaptureDir]) -> None:
    a, b = captures
    with serving([source, "--port", "0"], child_env(s3)) as url, httpx.Client(
        base_url=url, timeout=20
    ) as client:
        index = client.get("/")
        assert index.status_code == 200, index.text
        assert a.id in index.text
        assert b.id in index.text
        assert "default-src 'none'" in index.headers["content-security-policy"]
        listed = client.get("/", params={"format": "json"}).json()
        assert [c["id"] for c in listed["captures"]] == [b.id, a.id]
        assert listed["captures"][1]["requests"] == len(a.requests)
        page = client.get(f"/captures/{a.id}")
        assert page.status_code == 200
        assert "Why: manual trigger" in page.text
        html = a.requests[0]["files"]["html"]
        profile = client.get(f"/captures/{a.id}/{html}")
        assert profile.status_code == 200
        assert "pyinstrumentHTMLRenderer" in profile.text
        assert "sandbox" in profile.headers["content-security-policy"]
        heap = client.get(f"/captures/{b.id}/{b.id}_heap.json", params={"download": "1"})
        assert heap.json() == json.loads(b.kind("heap.json").read_text())
        assert client.get(f"/captures/{a.id}/{b.id}_heap.json").status_code == 404
        assert client.get("/status").status_code == 404
        assert client.post("/trigger").status_code in (404, 405)
        rebound = client.get("/", headers={"Host": "attacker.example"})
        assert rebound.status_code == 403
        assert a.id not in rebound.text


def test_serve_elsewhere_needs_the_token(s3: dict[str, str], app: Server,
                                         captures: tuple[CaptureDir, CaptureDir]) -> None:
    a, _ = captures
    refused = cli("serve", FLEET, "--host", "0.0.0.0", "--port", "0", env=child_env(s3))
    assert refused.returncode == 2
    assert "AUTOPROF_ADMIN_TOKEN" in refused.stderr
    env = child_env(s3, AUTOPROF_ADMIN_TOKEN=TOKEN)
    with serving([str(app.dump_dir), "--host", "0.0.0.0", "--port", "0"], env) as url:
        port = url.rsplit(":", 1)[1]
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(base + "/", headers={"Accept": "application/json"}).status_code == 401
        ok = httpx.get(base + "/?format=json", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
        assert a.id in ok.text
        with httpx.Client(base_url=base) as client:
            login = client.post("/login", data={"token": TOKEN})
            assert login.status_code == 303
            assert client.get(f"/captures/{a.id}").status_code == 200


# -- diff -------------------------------------------------------------------------------------


def test_diff_names_what_grew(capsys: pytest.CaptureFixture[str], source: str,
                              captures: tuple[CaptureDir, CaptureDir]) -> None:
    a, b = captures
    code, out, _ = run(capsys, "diff", a.id, b.id, "-s", source)
    assert code == 0, out
    grew = out.split("grew most (by bytes):\n", 1)[1].splitlines()
    assert grew[0].split()[0] == "TYPE"
    assert grew[1].split()[0] == "bytearray", out
    code, out, _ = run(capsys, "diff", a.id, b.id, "-s", source, "--json")
    rows = {r["type"]: r for r in json.loads(out)["types"]}
    assert rows["bytearray"]["bytes_diff"] >= GROWTH_MIB * 2**20
    assert rows["bytearray"]["count_diff"] >= 1


# -- prune ------------------------------------------------------------------------------------


def synthetic_captures(directory: Path, ages_days: list[float]) -> list[str]:
    """Small complete captures written through the store, created ``ages_days`` ago."""
    store = DumpStore(directory)
    now = time.time()
    ids = []
    for age in ages_days:
        writer = store.begin(metric="cpu", reason="abs", created=now - age * 86400)
        writer.write_text("summary", "txt", f"Why: cpu {age} days ago\n")
        ids.append(writer.commit({"trigger": {"metric": "cpu", "reason": "abs"}}).id)
    return ids


def test_prune_a_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    ids = synthetic_captures(tmp_path, [10, 9, 3, 0.5, 0.1])
    code, out, _ = run(capsys, "prune", str(tmp_path), "--older-than", "7d")
    assert code == 0
    assert "would delete 2 captures" in out
    assert "--yes" in out
    assert {line.split()[2].split("/")[1] for line in out.splitlines()[:2]} == set(ids[:2])
    assert len(DumpStore(tmp_path).captures()) == 5
    code, out, _ = run(capsys, "prune", str(tmp_path), "--keep", "2", "--older-than", "7d",
                       "--yes")
    assert code == 0
    assert "deleted 3 captures" in out
    assert [c.id for c in DumpStore(tmp_path).captures()] == ids[:-3:-1]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == sorted(
        ids[3:])
    code, _, err = run(capsys, "prune", str(tmp_path))
    assert code == 2
    assert "--keep" in err


def test_prune_a_bucket_per_host(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                 s3: dict[str, str]) -> None:
    ids = synthetic_captures(tmp_path, [5, 4, 3, 2, 1])
    fs = bucket_fs()
    root = f"{BUCKET}/prune"
    hosts = ["web-a", "web-a", "web-a", "web-b", "web-b"]
    for host, capture_id in zip(hosts, ids, strict=True):
        upload(fs, root, host, tmp_path / capture_id)
    code, out, _ = run(capsys, "prune", f"s3://{root}", "--keep", "1", "--per-host")
    assert code == 0
    assert "would delete 3 captures" in out
    assert len(fs.ls(f"{root}/index")) == 5
    code, out, _ = run(capsys, "prune", f"s3://{root}", "--keep", "1", "--per-host", "--yes")
    assert code == 0
    assert "deleted 3 captures" in out
    code, out, _ = run(capsys, "ls", f"s3://{root}", "--json")
    assert {(e["host"], e["id"]) for e in json.loads(out)} == {("web-a", ids[2]),
                                                               ("web-b", ids[4])}
    fs.invalidate_cache()
    assert not fs.exists(f"{root}/web-a/{ids[0]}/{ids[0]}_summary.txt")
    assert fs.exists(f"{root}/web-a/{ids[2]}/{ids[2]}_summary.txt")


# -- trigger ----------------------------------------------------------------------------------


def test_trigger_capture_reaches_the_dir_and_the_bucket(
    capsys: pytest.CaptureFixture[str], app: Server, captures: tuple[CaptureDir, CaptureDir]
) -> None:
    """The captures ``autoprof trigger`` opened are in the app's directory and, uploaded by
    the app's sink, in the bucket; a busy app, no token and a wrong token are told apart."""
    a, b = captures
    code, out, _ = run(capsys, "ls", str(app.dump_dir), "--json")
    assert {a.id, b.id} <= {e["id"] for e in json.loads(out)}
    deadline = time.monotonic() + 15
    while True:
        code, out, _ = run(capsys, "ls", LIVE, "--json")
        uploaded = {e["id"] for e in json.loads(out)} if code == 0 else set()
        if {a.id, b.id} <= uploaded or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert {a.id, b.id} <= uploaded, app.log_tail()
    code, out, _ = run(capsys, "show", b.id, "-s", LIVE, "--json")
    assert code == 0
    assert json.loads(out)["id"] == b.id
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("AUTOPROF_ADMIN_TOKEN", raising=False)
        code, _, err = run(capsys, "trigger", app.base_url)
        assert code == 3
        assert "AUTOPROF_ADMIN_TOKEN" in err
        mp.setenv("AUTOPROF_ADMIN_TOKEN", "wrong-token-" + "x" * 20)
        code, _, err = run(capsys, "trigger", app.base_url)
        assert code == 3
        assert "refused the token" in err
        mp.setenv("AUTOPROF_ADMIN_TOKEN", TOKEN)
        code, out, _ = run(capsys, "trigger", app.base_url)
        assert code == 0
        code, _, err = run(capsys, "trigger", app.base_url)  # the capture is open
        assert code == 1
        assert "no capture opened" in err
        code, _, err = run(capsys, "trigger", "ftp://127.0.0.1/")
        assert code == 2


# -- sources that cannot be read ----------------------------------------------------------------


def test_wrong_sources_and_credentials_exit_3(capsys: pytest.CaptureFixture[str],
                                              s3: dict[str, str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "ls", f"s3://no-such-bucket-{os.getpid()}/x")
    assert code == 3
    assert "does not exist" in err
    code, _, err = run(capsys, "ls", "nosuch://bucket/x")
    assert code == 3
    assert "not a storage URL" in err
    code, _, err = run(capsys, "ls", str(tmp_path / "missing"))
    assert code == 3
    assert "no such directory" in err
    code, _, err = run(capsys, "ls", "--bogus")
    assert code == 2
    no_keys = {k: v for k, v in child_env(s3).items()
               if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    done = subprocess.run([sys.executable, "-m", "autoprof.cli", "ls", FLEET], env=no_keys,
                          capture_output=True, text=True, timeout=30, cwd=REPO_ROOT)
    assert done.returncode == 3, done.stderr
    assert "no credentials" in done.stderr
    closed = child_env(s3, AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")
    done = cli("ls", FLEET, env=closed)
    assert done.returncode == 3, done.stderr
    assert "cannot reach" in done.stderr

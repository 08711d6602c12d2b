"""Downloads that survive crashes and concurrency, against a loopback HTTP server started here.

Real processes: the children import only ``keras_visrec.zoo`` (a stub parent package skips
``keras_visrec/__init__``'s TensorFlow import), so each starts in a fraction of a second. The server
speaks ``Range`` / ``If-Range`` / ``Content-Range`` like a static file host, can drop a connection
mid-body, ignore ``Range``, answer it wrongly, or trickle the body so that processes overlap.
"""

import hashlib
import http.server
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import keras_visrec.files
from keras_visrec import zoo
from keras_visrec.zoo.download import DownloadError, download

PAYLOAD = os.urandom(2 * 1024 * 1024 + 77)
SHA = hashlib.sha256(PAYLOAD).hexdigest()
OTHER = os.urandom(len(PAYLOAD))  # a newer version of the same file


class _Handler(http.server.BaseHTTPRequestHandler):
    log = []  # (path, Range header, If-Range header, status)
    served = {}  # path -> full-body requests started
    halfway = threading.Event()  # set when a /slow body is half sent

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802 (http.server API)
        kind, name = self.path.strip("/").split("/", 1)
        body, etag = (OTHER, '"v2"') if kind == "changed" and self.headers.get("If-Range") else (PAYLOAD, '"v1"')
        wanted = self.headers.get("Range")
        start = 0
        if wanted and kind not in ("norange",):
            start = int(wanted.split("=")[1].rstrip("-"))
            if self.headers.get("If-Range") not in (None, etag):
                start = 0  # the file changed: send it whole
        if start >= len(body):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(body)}")
            self.end_headers()
            _Handler.log.append((self.path, wanted, self.headers.get("If-Range"), 416))
            return
        status = 206 if start else 200
        if kind == "badrange" and wanted:
            status, start = 206, 0  # claims a range but starts at byte 0
        _Handler.log.append((self.path, wanted, self.headers.get("If-Range"), status))
        if status == 200:
            _Handler.served[self.path] = _Handler.served.get(self.path, 0) + 1
        self.send_response(status)
        if kind != "noval":
            self.send_header("ETag", etag)
        self.send_header("Content-Length", str(len(body) - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        rest = body[start:]
        first_try = sum(1 for entry in _Handler.log if entry[0] == self.path) == 1
        if kind in ("cut", "noval", "changed") and first_try:
            self.wfile.write(rest[: len(rest) // 3])
            self.wfile.flush()
            self.connection.shutdown(2)  # the server drops the connection mid-body
            return
        if kind == "slow" and not wanted:
            step = 64 * 1024
            try:
                for offset in range(0, len(rest), step):
                    self.wfile.write(rest[offset: offset + step])
                    self.wfile.flush()
                    if offset >= len(rest) // 2:
                        _Handler.halfway.set()
                    time.sleep(0.03)
            except (BrokenPipeError, ConnectionResetError):  # the client was killed
                pass
            return
        self.wfile.write(rest)


@pytest.fixture(scope="module")
def server(http_server):
    return http_server(_Handler)


def _requests(path):
    return [entry for entry in _Handler.log if entry[0] == path]


def _work(directory):
    return os.path.join(directory, ".downloads")


def _child(script, *args):
    """A Python process running ``script`` with ``keras_visrec.zoo`` importable and TensorFlow not."""
    package = os.path.dirname(keras_visrec.files.__file__)
    zoo_parent = os.path.dirname(os.path.dirname(zoo.__file__))  # keras_visrec.zoo is the top-level zoo/
    stub = textwrap.dedent(f"""
        import sys, types
        package = types.ModuleType("keras_visrec")
        package.__path__ = [{package!r}, {zoo_parent!r}]
        sys.modules["keras_visrec"] = package
    """)
    return subprocess.Popen([sys.executable, "-c", stub + textwrap.dedent(script), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# ---- resumption --------------------------------------------------------------------------------

def test_cut_transfer_resumes_with_range_and_checks_the_whole_file(server, tmp_path):
    url = f"{server}/cut/a.pth"
    with pytest.raises(DownloadError, match="cut short"):
        download(url, SHA, directory=str(tmp_path), progress=False)
    kept = os.path.getsize(os.path.join(_work(tmp_path), "a.pth.part"))
    assert 0 < kept < len(PAYLOAD) and not (tmp_path / "a.pth").exists()
    path = download(url, SHA, directory=str(tmp_path), progress=True)
    assert open(path, "rb").read() == PAYLOAD
    (_, first, _, _), (_, resumed, if_range, status) = _requests("/cut/a.pth")
    assert first is None and resumed == f"bytes={kept}-" and if_range == '"v1"' and status == 206
    assert sorted(os.listdir(_work(tmp_path))) == ["a.pth.lock"]  # part and its record are gone


def test_server_that_ignores_range_restarts_from_zero(server, tmp_path):
    work = tmp_path / ".downloads"
    work.mkdir()
    (work / "b.pth.part").write_bytes(PAYLOAD[:1000])
    (work / "b.pth.part.json").write_text('{"url": "%s/norange/b.pth", "validator": "\\"v1\\"", "size": %d}'
                                          % (server, len(PAYLOAD)))
    path = download(f"{server}/norange/b.pth", SHA, directory=str(tmp_path), progress=False)
    assert open(path, "rb").read() == PAYLOAD  # not 1000 bytes + the whole file again
    assert _requests("/norange/b.pth")[-1][1:] == ("bytes=1000-", '"v1"', 200)


def test_wrong_content_range_and_a_stale_part_are_fetched_again(server, tmp_path):
    work = tmp_path / ".downloads"
    work.mkdir()
    record = '{"url": "%s/%s/%s", "validator": null, "size": %d}'
    (work / "c.pth.part").write_bytes(PAYLOAD[:5000])
    (work / "c.pth.part.json").write_text(record % (server, "badrange", "c.pth", len(PAYLOAD)))
    assert open(download(f"{server}/badrange/c.pth", SHA, directory=str(tmp_path), progress=False), "rb").read() \
        == PAYLOAD
    assert [e[1] for e in _requests("/badrange/c.pth")] == ["bytes=5000-", None]
    # bytes kept from another version of the file: the resumed whole fails sha256, so once more from 0
    (work / "d.pth.part").write_bytes(OTHER[:7000])
    (work / "d.pth.part.json").write_text(record % (server, "ok", "d.pth", len(PAYLOAD)))
    assert open(download(f"{server}/ok/d.pth", SHA, directory=str(tmp_path), progress=False), "rb").read() == PAYLOAD
    assert [e[1] for e in _requests("/ok/d.pth")] == ["bytes=7000-", None]


def test_changed_file_restarts_through_if_range(server, tmp_path):
    url = f"{server}/changed/e.pth"
    with pytest.raises(DownloadError, match="cut short"):
        download(url, None, allow_unverified=True, directory=str(tmp_path), progress=False)
    path = download(url, None, allow_unverified=True, directory=str(tmp_path), progress=False)
    assert open(path, "rb").read() == OTHER  # the new version, whole: never old bytes + new bytes
    assert _requests("/changed/e.pth")[-1][1:] == ("bytes=%d-" % (len(PAYLOAD) // 3), '"v1"', 200)


def test_unverified_without_validator_is_not_resumed(server, tmp_path):
    url = f"{server}/noval/f.pth"
    with pytest.raises(DownloadError, match="cut short"):
        download(url, None, allow_unverified=True, directory=str(tmp_path), progress=False)
    path = download(url, None, allow_unverified=True, directory=str(tmp_path), progress=False)
    assert open(path, "rb").read() == PAYLOAD
    assert [e[1] for e in _requests("/noval/f.pth")] == [None, None]  # no hash, no validator: from byte 0


def test_complete_part_answered_416_is_checked_and_kept(server, tmp_path):
    work = tmp_path / ".downloads"
    work.mkdir()
    (work / "g.pth.part").write_bytes(PAYLOAD)
    (work / "g.pth.part.json").write_text('{"url": "%s/ok/g.pth", "validator": "\\"v1\\"", "size": %d}'
                                          % (server, len(PAYLOAD)))
    assert open(download(f"{server}/ok/g.pth", SHA, directory=str(tmp_path), progress=False), "rb").read() == PAYLOAD
    assert _requests("/ok/g.pth") == [("/ok/g.pth", f"bytes={len(PAYLOAD)}-", '"v1"', 416)]


# ---- sha256 prefixes (torch.hub's check_hash) --------------------------------------------------

def test_sha256_prefix_is_checked(server, tmp_path):
    good, bad = SHA[:8], ("0" if SHA[0] != "0" else "1") + SHA[1:8]
    path = download(f"{server}/ok/h-{good}.pth", None, sha256_prefix=good.upper(), allow_unverified=True,
                    directory=str(tmp_path), progress=False)
    assert open(path, "rb").read() == PAYLOAD
    with pytest.raises(DownloadError, match=f"sha256 prefix mismatch.*promises {bad}"):
        download(f"{server}/ok/h-{bad}.pth", None, sha256_prefix=bad, allow_unverified=True,
                 directory=str(tmp_path), progress=False)
    assert not (tmp_path / f"h-{bad}.pth").exists()
    assert sorted(os.listdir(_work(tmp_path))) == sorted([f"h-{bad}.pth.lock", f"h-{good}.pth.lock"])  # no part left
    with pytest.raises(ValueError, match="only the name's sha256 prefix"):  # a prefix is not a published hash
        download(f"{server}/ok/h2.pth", None, sha256_prefix=good, directory=str(tmp_path), progress=False)
    with pytest.raises(ValueError, match="sha256_prefix"):
        download(f"{server}/ok/h3.pth", None, sha256_prefix="xyz", allow_unverified=True, directory=str(tmp_path))
    with pytest.raises(ValueError, match="contradicts"):
        download(f"{server}/ok/h4.pth", SHA, sha256_prefix=bad, directory=str(tmp_path))


def test_fetch_weights_checks_the_entry_prefix(server, tmp_path, monkeypatch):
    import dataclasses

    entry = zoo.get_weights("convnext_v2_atto.fb_fcmae_ft_in1k")
    fake = dataclasses.replace(entry, url=f"{server}/ok/atto-{SHA[:8]}.pt", sha256=None, sha256_prefix=SHA[:8])
    monkeypatch.setattr(zoo, "get_weights", lambda zoo_id: fake)
    path = zoo.fetch_weights(fake.id, allow_unverified=True, directory=str(tmp_path), progress=False)
    assert os.path.basename(path) == f"atto-{SHA[:8]}.pt"
    wrong = dataclasses.replace(fake, url=f"{server}/ok/atto-x.pt", sha256_prefix="abcdef12")
    monkeypatch.setattr(zoo, "get_weights", lambda zoo_id: wrong)
    with pytest.raises(DownloadError, match="prefix mismatch"):
        zoo.fetch_weights(wrong.id, allow_unverified=True, directory=str(tmp_path), progress=False)


# ---- processes: at once, killed, holding the lock ----------------------------------------------

_DOWNLOAD_WHEN_GO = """
    import os, sys, time
    from keras_visrec.zoo.download import download
    url, sha, directory, barrier, index = sys.argv[1:]
    open(os.path.join(barrier, f"ready-{index}"), "w").close()
    while not os.path.exists(os.path.join(barrier, "go")):
        time.sleep(0.005)
    print(download(url, sha, directory=directory, progress=False))
"""


def test_processes_asking_at_once_download_once(server, tmp_path):
    cache, barrier = tmp_path / "cache", tmp_path / "barrier"
    barrier.mkdir()
    url = f"{server}/slow/shared.pth"
    children = [_child(_DOWNLOAD_WHEN_GO, url, SHA, cache, barrier, i) for i in range(3)]
    deadline = time.monotonic() + 60
    while len(os.listdir(barrier)) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    (barrier / "go").touch()
    results = [child.communicate(timeout=120) for child in children]
    assert [child.returncode for child in children] == [0, 0, 0], results
    assert {out.strip() for out, _ in results} == {str(cache / "shared.pth")}
    assert _Handler.served["/slow/shared.pth"] == 1  # one transfer for three processes
    assert sum("waiting for process" in err for _, err in results) >= 1  # they really overlapped
    assert open(cache / "shared.pth", "rb").read() == PAYLOAD
    assert sorted(os.listdir(cache)) == [".downloads", "shared.pth"]


_DOWNLOAD = """
    import sys
    from keras_visrec.zoo.download import download
    print(download(sys.argv[1], sys.argv[2], directory=sys.argv[3], progress=False))
"""


def test_sigkill_mid_download_leaves_a_part_the_next_call_resumes(server, tmp_path):
    url = f"{server}/slow/killed.pth"
    _Handler.halfway.clear()
    child = _child(_DOWNLOAD, url, SHA, tmp_path)
    assert _Handler.halfway.wait(60)
    os.kill(child.pid, signal.SIGKILL)  # while it holds the lock and writes the part
    child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed.pth").exists()  # nothing a later call could take for the file
    kept = os.path.getsize(os.path.join(_work(tmp_path), "killed.pth.part"))
    assert 0 < kept < len(PAYLOAD)
    path = download(url, SHA, directory=str(tmp_path), progress=False, lock_timeout=30)  # the dead lock is free
    assert open(path, "rb").read() == PAYLOAD
    assert _requests("/slow/killed.pth")[-1][1:] == (f"bytes={kept}-", '"v1"', 206)


_HOLD_LOCK = """
    import sys, time
    from keras_visrec.files import exclusive_lock
    with exclusive_lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(120)
"""


def test_a_live_holder_makes_us_wait_and_a_killed_one_frees_the_lock(server, tmp_path):
    (tmp_path / ".downloads").mkdir()
    holder = _child(_HOLD_LOCK, tmp_path / ".downloads" / "held.pth.lock")
    assert holder.stdout.readline().strip() == "locked"
    url = f"{server}/ok/held.pth"
    with pytest.raises(DownloadError, match=f"held by process {holder.pid}"):
        download(url, SHA, directory=str(tmp_path), progress=False, lock_timeout=0.3)
    assert _requests("/ok/held.pth") == []  # it waited; it did not download behind the holder's back
    holder.kill()  # SIGKILL: the lock file stays, naming a dead process
    holder.communicate(timeout=60)
    assert open(tmp_path / ".downloads" / "held.pth.lock").read().strip() == str(holder.pid)
    path = download(url, SHA, directory=str(tmp_path), progress=False, lock_timeout=30)
    assert open(path, "rb").read() == PAYLOAD


def test_exclusive_lock_times_out_naming_the_holder(tmp_path):
    lock = str(tmp_path / "x.lock")
    seen = []
    with keras_visrec.files.exclusive_lock(lock):
        # a second open file description conflicts with the first, as another process's would
        with pytest.raises(keras_visrec.files.LockTimeout, match=f"held by process {os.getpid()}"):
            with keras_visrec.files.exclusive_lock(lock, timeout=0.1, on_wait=seen.append):
                pass
    assert seen == [os.getpid()]
    with keras_visrec.files.exclusive_lock(lock, timeout=0):
        assert open(lock).read().strip() == str(os.getpid())

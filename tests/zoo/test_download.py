"""Download, verify and cache against a real HTTP server on 127.0.0.1 (started by the test).

Resumption, concurrent processes, SIGKILL and stale locks: ``test_download_faults.py``."""

import hashlib
import http.server
import os

import pytest

from keras_visrec import zoo
from keras_visrec.zoo.download import DownloadError, download

PAYLOAD = os.urandom(3 * 1024 * 1024 + 123)
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    hits = {}

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802 (http.server API)
        _Handler.hits[self.path] = _Handler.hits.get(self.path, 0) + 1
        if self.path.startswith("/missing"):
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        if self.path.startswith("/cut"):
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 3])
            self.wfile.flush()
            self.connection.shutdown(2)  # the server drops the connection mid-transfer
            return
        self.wfile.write(PAYLOAD)


@pytest.fixture(scope="module")
def server(http_server):
    return http_server(_Handler)


def _leftovers(directory):
    """Files under a final name (the work folder holds locks and partial transfers)."""
    return sorted(name for name in os.listdir(directory) if name != ".downloads")


def _partials(directory):
    work = os.path.join(directory, ".downloads")
    return sorted(name for name in os.listdir(work) if not name.endswith(".lock")) if os.path.isdir(work) else []


def test_success_then_cached_without_second_download(server, tmp_path):
    url = f"{server}/ok/weights.pth"
    path = download(url, SHA, directory=str(tmp_path), progress=False)
    assert open(path, "rb").read() == PAYLOAD
    assert _leftovers(tmp_path) == ["weights.pth"]
    again = download(url, SHA, directory=str(tmp_path), progress=False)
    assert again == path
    assert _Handler.hits["/ok/weights.pth"] == 1


def test_wrong_hash_removes_file_and_raises(server, tmp_path):
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        download(f"{server}/ok/bad.pth", "0" * 64, directory=str(tmp_path), progress=False)
    assert _leftovers(tmp_path) == [] and _partials(tmp_path) == []


def test_transfer_cut_short_leaves_no_file_under_its_name(server, tmp_path):
    with pytest.raises(DownloadError, match="cut short.*next call resumes"):
        download(f"{server}/cut/w.pth", SHA, directory=str(tmp_path), progress=False)
    assert _leftovers(tmp_path) == []
    assert _partials(tmp_path) == ["w.pth.part", "w.pth.part.json"]  # kept for the next call to resume


def test_404_leaves_nothing(server, tmp_path):
    with pytest.raises(DownloadError, match="404"):
        download(f"{server}/missing/w.pth", SHA, directory=str(tmp_path), progress=False)
    assert _leftovers(tmp_path) == [] and _partials(tmp_path) == []


def test_corrupted_cache_entry_is_fetched_again(server, tmp_path):
    (tmp_path / "w2.pth").write_bytes(b"stale")
    path = download(f"{server}/ok/w2.pth", SHA, directory=str(tmp_path), progress=False)
    assert open(path, "rb").read() == PAYLOAD


def test_unverified_needs_explicit_opt_in(server, tmp_path, monkeypatch):
    monkeypatch.delenv(zoo.UNVERIFIED_ENV, raising=False)
    with pytest.raises(ValueError, match="allow_unverified"):
        download(f"{server}/ok/u.pth", None, directory=str(tmp_path), progress=False)
    assert _leftovers(tmp_path) == []
    path = download(f"{server}/ok/u.pth", None, directory=str(tmp_path), allow_unverified=True, progress=False)
    assert open(path, "rb").read() == PAYLOAD


def test_cache_dir_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / "cache"))
    assert zoo.cache_dir() == str(tmp_path / "cache")
    assert os.path.isdir(tmp_path / "cache")


def test_fetch_weights_refuses_unverified_entry_without_opt_in(monkeypatch, tmp_path):
    monkeypatch.delenv(zoo.UNVERIFIED_ENV, raising=False)
    entry = zoo.get_weights("convnext_v2_atto.fb_fcmae_ft_in1k")
    assert not entry.verified
    with pytest.raises(ValueError, match="no published sha256"):
        zoo.fetch_weights(entry.id, directory=str(tmp_path))


def test_progress_bar_path_runs(server, tmp_path):
    path = download(f"{server}/ok/p.pth", SHA, directory=str(tmp_path), progress=True)
    assert os.path.getsize(path) == len(PAYLOAD)

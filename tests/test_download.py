"""`distillbench data download` against a small HTTP server on 127.0.0.1 that the test starts.

It serves the official MNIST test files from ../shared (so the real md5s are checked), can cut
a response short to simulate a dropped connection, and honours Range requests for resuming.
"""

import http.server
import socket
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from distillbench.cli import main
from distillbench_builtin.datasets.download import DownloadError, download

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"
pytestmark = pytest.mark.skipif(not (SHARED_MNIST / "t10k-labels-idx1-ubyte.gz").exists(),
                                reason="shared MNIST test files not present")


class Server:
    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.cut_next = set()       # names whose next response is cut in half
        self.requests = []          # (name, Range header)
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                outer.requests.append((name, self.headers.get("Range")))
                body = outer.files.get(name)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].rstrip("-"))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                chunk = body[start:]
                self.send_header("Content-Length", str(len(chunk)))
                self.end_headers()
                if name in outer.cut_next:
                    outer.cut_next.discard(name)
                    self.wfile.write(chunk[: len(chunk) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(chunk)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def official():
    return {name: (SHARED_MNIST / name).read_bytes()
            for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def test_download_verifies_and_resumes_a_dropped_transfer(tmp_path, official):
    with Server(official) as server:
        server.cut_next.add("t10k-images-idx3-ubyte.gz")
        with pytest.raises(DownloadError, match="partial file kept"):
            download("mnist-t10k", str(tmp_path), mirror=server.url, log=lambda _: None, timeout=10)
        part = tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz.part"
        assert 0 < part.stat().st_size < len(official["t10k-images-idx3-ubyte.gz"])
        download("mnist-t10k", str(tmp_path), mirror=server.url, log=lambda _: None, timeout=10)
        resumed = [r for name, r in server.requests if name == "t10k-images-idx3-ubyte.gz" and r]
        assert resumed and resumed[0] != "bytes=0-", server.requests  # the second call used a Range request
    for name, body in official.items():
        assert (tmp_path / "mnist" / name).read_bytes() == body
    assert not part.exists()
    runner = CliRunner().invoke(main, ["data", "download", "mnist-t10k", "--data-dir", str(tmp_path)])
    assert runner.exit_code == 0 and "present, checksum ok" in runner.output  # no network needed now


def test_checksum_mismatch_removes_the_partial_file(tmp_path, official):
    tampered = dict(official)
    body = bytearray(official["t10k-labels-idx1-ubyte.gz"])
    body[len(body) // 2] ^= 0xFF
    tampered["t10k-labels-idx1-ubyte.gz"] = bytes(body)
    with Server(tampered) as server:
        with pytest.raises(DownloadError, match="checksum mismatch"):
            download("mnist-t10k", str(tmp_path), mirror=server.url, log=lambda _: None, timeout=10)
    assert not (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz.part").exists()
    assert not (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").exists()


def test_offline_is_one_clear_line(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = CliRunner().invoke(main, ["data", "download", "mnist-t10k", "--data-dir", str(tmp_path),
                                       "--mirror", f"http://127.0.0.1:{port}"])
    assert result.exit_code == 1
    lines = [x for x in result.output.splitlines() if x.startswith("Error:")]
    assert len(lines) == 1 and "cannot download" in lines[0] and "offline?" in lines[0]
    assert "Traceback" not in result.output


def test_unknown_dataset_name_exit_2(tmp_path):
    result = CliRunner().invoke(main, ["data", "download", "mnsit", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "did you mean 'mnist'" in result.output

"""Downloads against an HTTP server on 127.0.0.1: never the real network."""

import hashlib
import http.server
import io
import threading
import urllib.request

import pytest

from vggcifar import download, fixtures
from vggcifar.data import DataError, load_cifar

BODY = bytes(range(256)) * 4096  # 1 MiB, several read chunks' worth
SHA = hashlib.sha256(BODY).hexdigest()
MD5 = hashlib.md5(BODY).hexdigest()


class Server:
    """Serves a script of responses per path: ("ok", body), ("status", code),
    ("truncate", body); the last entry repeats. Records every request."""

    def __init__(self):
        self.routes, self.requests = {}, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                script = server.routes.get(self.path, [("status", 404)])
                kind, value = script.pop(0) if len(script) > 1 else script[0]
                if kind == "status":
                    self.send_error(value)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(value)))
                self.end_headers()
                self.wfile.write(value if kind == "ok" else value[:len(value) // 3])
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def url(self, path):
        return f"http://127.0.0.1:{self.httpd.server_port}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def sleeps():
    return []


def fetch(url, target, sleeps, **kwargs):
    kwargs.setdefault("sha256", SHA)
    return download.fetch(url, target, sleep=sleeps.append, progress=False, timeout=10, **kwargs)


def only(folder, *names):
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)


def test_good_download(server, tmp_path, sleeps):
    server.routes["/f.tar.gz"] = [("ok", BODY)]
    target = tmp_path / "cache" / "f.tar.gz"
    assert fetch(server.url("/f.tar.gz"), target, sleeps, md5=MD5) == target
    assert target.read_bytes() == BODY
    only(target.parent, "f.tar.gz")
    assert sleeps == []


def test_truncated_body_is_retried_then_given_up(server, tmp_path, sleeps):
    server.routes["/f"] = [("truncate", BODY)]
    target = tmp_path / "f"
    with pytest.raises(download.DownloadError, match=r"cannot download .* \(after 3 attempts\)"):
        fetch(server.url("/f"), target, sleeps, retries=3, backoff=0.5)
    assert len(server.requests) == 3 and sleeps == [0.5, 1.0]
    only(tmp_path)


def test_truncated_then_good(server, tmp_path, sleeps):
    server.routes["/f"] = [("truncate", BODY), ("ok", BODY)]
    assert fetch(server.url("/f"), tmp_path / "f", sleeps).read_bytes() == BODY
    only(tmp_path, "f")


def test_500_then_200(server, tmp_path, sleeps):
    server.routes["/f"] = [("status", 500), ("status", 503), ("ok", BODY)]
    assert fetch(server.url("/f"), tmp_path / "f", sleeps, backoff=2.0).read_bytes() == BODY
    assert len(server.requests) == 3 and sleeps == [2.0, 4.0]


@pytest.mark.parametrize("hashes", [{"sha256": "0" * 64}, {"sha256": None, "md5": "0" * 32}])
def test_wrong_hash_leaves_nothing(server, tmp_path, sleeps, hashes):
    server.routes["/f"] = [("ok", BODY)]
    target = tmp_path / "f"
    with pytest.raises(download.DownloadError, match="does not match the expected") as err:
        fetch(server.url("/f"), target, sleeps, **hashes)
    assert "nothing was saved" in str(err.value)
    only(tmp_path)
    assert len(server.requests) == 1  # a wrong file is not fetched again


def test_404_is_not_retried(server, tmp_path, sleeps):
    with pytest.raises(download.DownloadError, match="HTTP 404"):
        fetch(server.url("/missing"), tmp_path / "f", sleeps)
    assert len(server.requests) == 1
    only(tmp_path)


def test_offline_error_says_where_to_put_the_file(tmp_path, sleeps):
    s = Server()
    url = s.url("/f")
    s.close()  # nothing listens there now: connection refused
    with pytest.raises(download.DownloadError, match=r"\(after 2 attempts\); put it at /somewhere") as err:
        fetch(url, tmp_path / "f", sleeps, retries=2, hint="put it at /somewhere")
    assert "refused" in str(err.value).lower()
    only(tmp_path)


def test_https_to_http_redirect_is_refused():
    handler = download._NoDowngrade()
    req = urllib.request.Request("https://mirror.invalid/cifar.tar.gz")
    with pytest.raises(download.DownloadError, match="downgrade from https"):
        handler.redirect_request(req, io.BytesIO(), 302, "Found", {}, "http://mirror.invalid/cifar.tar.gz")
    same = handler.redirect_request(req, io.BytesIO(), 302, "Found", {}, "https://other.invalid/cifar.tar.gz")
    assert same.full_url == "https://other.invalid/cifar.tar.gz"
    assert any(isinstance(h, download._NoDowngrade) for h in download.build_opener().handlers)


def test_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="http"):
        download.fetch("file:///etc/passwd", tmp_path / "f", sha256=SHA)
    with pytest.raises(ValueError, match="checksum"):
        download.fetch("https://x.invalid/f", tmp_path / "f")


def test_progress_bar(server, tmp_path, sleeps, capsys):
    server.routes["/f"] = [("ok", BODY)]
    bar = io.StringIO()
    download.fetch(server.url("/f"), tmp_path / "f", sha256=SHA, progress=bar, sleep=sleeps.append)
    assert "downloading f" in bar.getvalue() and "100%" in bar.getvalue()
    (tmp_path / "f").unlink()
    fetch(server.url("/f"), tmp_path / "f", sleeps)  # progress=False
    download.fetch(server.url("/f"), tmp_path / "g", sha256=SHA, progress=True)  # stderr is not a terminal
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------ through load_cifar
@pytest.fixture
def archive(tmp_path_factory):
    arrays = fixtures.random_arrays(11, 4, seed=5)
    path = fixtures.write_archive(tmp_path_factory.mktemp("src") / "a.tar.gz", *arrays)
    return arrays, path.read_bytes()


def test_load_cifar_downloads_into_the_keras_cache(server, tmp_path, monkeypatch, archive):
    arrays, blob = archive
    server.routes["/cifar-10-python.tar.gz"] = [("ok", blob)]
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setenv("VGGCIFAR_CIFAR10_URL", server.url("/cifar-10-python.tar.gz"))
    monkeypatch.setenv("VGGCIFAR_CIFAR10_SHA256", hashlib.sha256(blob).hexdigest())
    d = load_cifar(progress=False)
    assert d.source == str(tmp_path / "datasets" / "cifar-10-python.tar.gz")
    assert (d.x_train == arrays[0]).all() and d.sha256 == hashlib.sha256(blob).hexdigest()
    only(tmp_path / "datasets", "cifar-10-python.tar.gz")
    load_cifar(progress=False)
    assert len(server.requests) == 1  # the second load reads the cache


def test_mirror_without_hash_must_match_the_official_checksum(server, tmp_path, monkeypatch, archive):
    server.routes["/m.tar.gz"] = [("ok", archive[1])]
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.delenv("VGGCIFAR_CIFAR10_SHA256", raising=False)
    with pytest.raises(DataError, match="6d958be0.*VGGCIFAR_CIFAR10_SHA256"):
        load_cifar(url=server.url("/m.tar.gz"), progress=False)
    only(tmp_path / "datasets")
    # The argument beats the environment variable.
    monkeypatch.setenv("VGGCIFAR_CIFAR10_SHA256", "0" * 64)
    d = load_cifar(url=server.url("/m.tar.gz"), sha256=hashlib.sha256(archive[1]).hexdigest(), progress=False)
    assert d.x_train.shape == (11, 32, 32, 3)


def test_load_cifar_offline_names_the_cache_path(tmp_path, monkeypatch):
    s = Server()
    url = s.url("/cifar-100-python.tar.gz")
    s.close()
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(DataError) as err:
        load_cifar(dataset="cifar100", url=url, progress=False, retries=1)
    message = str(err.value)
    assert str(tmp_path / "datasets" / "cifar-100-python.tar.gz") in message and "--data PATH" in message
    only(tmp_path / "datasets")

"""A loopback HTTP server (stdlib, in a thread) that serves good and bad images on fixed routes."""

from __future__ import annotations

import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import media


class Routes:
    """path -> handler(request) ; handlers return (status, headers, body) or do their own thing."""

    def __init__(self) -> None:
        self.static: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.hits: Counter[str] = Counter()  # per path (incl. query)
        self.served = 0  # completed responses, all paths
        self.lock = threading.Lock()
        self.delay_s = 0.0  # extra delay for /slowok/ routes (the kill test)
        self.drips_completed = 0  # /drip.jpg bodies sent to the end
        self.peers: list[tuple[str, int]] = []  # client address of each request: one per connection when kept alive

    def add(self, path: str, body: bytes, status: int = 200, ctype: str = "image/jpeg", **headers: str) -> None:
        self.static[path] = (status, {"Content-Type": ctype, **headers}, body)


def _handler(routes: Routes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep test output clean
            pass

        def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def do_GET(self) -> None:  # noqa: N802
            path = self.path
            base = path.split("?")[0]
            with routes.lock:
                routes.hits[path] += 1
                routes.peers.append(self.client_address[:2])
                n = routes.hits[path]
            try:
                if base == "/flaky.jpg":  # 500 on the first request of each distinct URL, then the image
                    if n == 1:
                        self._send(500, {"Content-Type": "text/plain"}, b"try again")
                    else:
                        self._send(200, {"Content-Type": "image/jpeg"}, media.jpeg(150, 100, seed=21))
                elif base == "/always500":
                    self._send(503, {"Content-Type": "text/plain"}, b"down")
                elif base == "/slow.jpg":
                    time.sleep(2.0)
                    self._send(200, {"Content-Type": "image/jpeg"}, media.jpeg(seed=22))
                elif base.startswith("/slowok/"):  # a good image after a delay (kill test)
                    time.sleep(routes.delay_s)
                    seed = int(base.split("/")[-1].split(".")[0])
                    self._send(200, {"Content-Type": "image/jpeg"}, media.jpeg(96, 80, seed=1000 + seed))
                elif base == "/loop-a":
                    self._send(302, {"Location": "/loop-b"}, b"")
                elif base == "/loop-b":
                    self._send(302, {"Location": "http://%s:%d/loop-a" % self.server.server_address[:2]}, b"")
                elif base.startswith("/chain/"):  # /chain/5 -> /chain/4 -> ... -> /chain/0 (an image)
                    k = int(base.split("/")[-1])
                    if k == 0:
                        self._send(200, {"Content-Type": "image/jpeg"}, media.jpeg(seed=23))
                    else:
                        self._send(302, {"Location": f"/chain/{k - 1}"}, b"")
                elif base == "/ratelimited":
                    self._send(429, {"Content-Type": "text/plain", "Retry-After": "1"}, b"slow down")
                elif base == "/drip.jpg":  # headers at once, then 100 bytes every 0.1 s for 5 s: each read is quick
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Content-Length", "5000")
                    self.end_headers()
                    try:
                        for _ in range(50):
                            self.wfile.write(b"x" * 100)
                            self.wfile.flush()
                            time.sleep(0.1)
                        with routes.lock:
                            routes.drips_completed += 1  # the client read it all: its deadline did not work
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                elif base == "/huge-stream.jpg":  # no Content-Length: the cap must stop the stream itself
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.close_connection = True
                    try:
                        for _ in range(60):
                            self.wfile.write(bytes(50_000))
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                elif base == "/redirect-once":
                    self._send(301, {"Location": "/redir-target.jpg"}, b"")
                elif base == "/to-file":
                    self._send(302, {"Location": "file:///etc/passwd"}, b"")
                elif base in routes.static:
                    self._send(*routes.static[base])
                else:
                    self._send(404, {"Content-Type": "text/html"}, b"<html>404</html>")
            finally:
                with routes.lock:
                    routes.served += 1

    return Handler


class LoopbackServer:
    def __init__(self, routes: Routes):
        self.routes = routes
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(routes))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base + path

    def __enter__(self) -> "LoopbackServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def default_routes() -> Routes:
    r = Routes()
    r.add("/ok.jpg", media.jpeg(seed=1))
    r.add("/ok-copy.jpg", media.jpeg(seed=1))  # same bytes at another URL: a content duplicate
    r.add("/ok.png", media.png(), ctype="image/png")
    r.add("/ok.webp", media.webp(), ctype="image/webp")
    r.add("/wrong-type.png", media.jpeg(seed=3), ctype="text/plain")  # a JPEG, whatever the header says
    r.add("/cmyk.jpg", media.cmyk_jpeg())
    r.add("/gray16.png", media.gray16_png(), ctype="image/png")
    r.add("/rgba.png", media.rgba_png(), ctype="image/png")
    r.add("/palette.png", media.palette_png(), ctype="image/png")
    r.add("/exif.jpg", media.exif_rotated_jpeg())
    r.add("/redir-target.jpg", media.jpeg(seed=4))
    r.add("/truncated.jpg", media.truncated_jpeg())
    r.add("/html.jpg", media.HTML)  # HTML served as image/jpeg
    r.add("/empty.jpg", b"")
    r.add("/huge.jpg", bytes(3_000_000))  # over the tests' 2 MB cap
    r.add("/bomb.png", media.bomb_png(), ctype="image/png")
    r.add("/gone", b"gone", status=410, ctype="text/plain")
    r.add("/bad-gzip.jpg", b"this is not gzip data", **{"Content-Encoding": "gzip"})
    return r


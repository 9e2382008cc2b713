"""A command worker for TQServer's tests: Python's http.server on
127.0.0.1:$WORKER_PORT with /health, plus a few paths tests use."""
import os
import sys
import time
from urllib.parse import parse_qs, urlparse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

if os.path.exists("crash.flag"):
    print("crashing at start: crash.flag exists", flush=True)
    sys.exit(3)

port = int(os.environ["WORKER_PORT"])
print(f"python worker {os.environ.get('WORKER_NAME')} on port {port}", flush=True)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/health":
            # Unhealthy when UNHEALTHY_FILE names this process.
            flag = os.environ.get("UNHEALTHY_FILE", "")
            sick = False
            if flag and os.path.exists(flag):
                with open(flag) as f:
                    sick = f.read().strip() == str(os.getpid())
            self.send_response(500 if sick else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        route = urlparse(self.path).path
        if route.endswith("/chunked"):
            # Chunked by hand, with a trailer.
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            for part in (b"hello ", b"chunked ", b"world"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\nX-Trailer: yes\r\n\r\n")
            return
        if route.endswith("/close"):
            # No length: the body ends when the connection does.
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"read until close")
            self.close_connection = True
            return
        if route.endswith("/stall"):
            # 10 of 100 bytes, then silence for 30 s.
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"0123456789")
            time.sleep(30)
            self.close_connection = True
            return
        if route.endswith("/nocontent"):
            self.send_response(204)
            self.end_headers()
            return
        if route.endswith("/big"):
            n = int(parse_qs(urlparse(self.path).query).get("n", ["2000000"])[0])
            body = bytes(i % 251 for i in range(n))
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        sleep = parse_qs(urlparse(self.path).query).get("sleep")
        if sleep:
            time.sleep(float(sleep[0]))
        body = (
            f"py pid={os.getpid()} name={os.environ.get('WORKER_NAME')} "
            f"route={os.environ.get('WORKER_ROUTE')} path={self.path} "
            f"greeting={os.environ.get('GREETING')} "
            f"xff={self.headers.get('X-Forwarded-For')} "
            f"xfp={self.headers.get('X-Forwarded-Proto')}\n"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "1234")
        self.end_headers()

    def handle_expect_100(self):
        # Expect: 100-continue: /early refuses before the body comes.
        if self.path.endswith("/early"):
            self.refuse(close=True)
            return False
        return super().handle_expect_100()

    def refuse(self, close):
        body = b"too big for me\n"
        self.send_response(413)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def read_chunks(self):
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return
            data = self.rfile.read(size)
            self.rfile.readline()
            yield data

    def do_POST(self):
        if self.path.endswith("/refuse-open"):
            # Refuses before reading the body, keeps the connection open
            # without reading for 3 s, then closes.
            self.refuse(close=False)
            time.sleep(3)
            return
        if self.path.endswith("/deaf"):
            # Reads nothing and answers nothing for 30 s.
            time.sleep(30)
            self.close_connection = True
            return
        if self.path.endswith("/echo"):
            # Answers at once, then echoes each chunk as it arrives.
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for data in self.read_chunks():
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.write(b"0\r\n\r\n")
            return
        if self.path.endswith("/early"):
            # Refuses before reading the body, then closes.
            body = b"too big for me\n"
            self.send_response(413)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True
            return
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b"".join(self.read_chunks())
        else:
            n = int(self.headers.get("Content-Length", "0"))
            data = self.rfile.read(n)
        body = f"got {len(data)} bytes\n".encode()
        self.send_response(201)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()

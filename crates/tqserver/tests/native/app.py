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
        sleep = parse_qs(urlparse(self.path).query).get("sleep")
        if sleep:
            time.sleep(float(sleep[0]))
        body = (
            f"py pid={os.getpid()} name={os.environ.get('WORKER_NAME')} "
            f"route={os.environ.get('WORKER_ROUTE')} path={self.path} "
            f"greeting={os.environ.get('GREETING')} "
            f"xff={self.headers.get('X-Forwarded-For')}\n"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
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

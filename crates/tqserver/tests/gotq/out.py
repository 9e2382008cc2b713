"""A command worker whose outgoing calls go through TQServer's SOCKS5
proxy: /fetch?url=U[&cacert=F] runs curl --socks5-hostname to U and
answers what curl printed."""
import os
import subprocess
from urllib.parse import parse_qs, urlparse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

proxy = os.environ["SOCKS5_PROXY"].removeprefix("socks5://")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        q = parse_qs(urlparse(self.path).query)
        if self.path == "/health":
            body = b""
        else:
            args = ["curl", "-sS", "--max-time", "10", "--socks5-hostname", proxy]
            if "cacert" in q:
                args += ["--cacert", q["cacert"][0]]
            if "data" in q:
                args += ["--data-binary", q["data"][0]]
            r = subprocess.run(args + [q["url"][0]], capture_output=True)
            body = r.stdout + r.stderr
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ["WORKER_PORT"])), Handler).serve_forever()

#!/usr/bin/env python3
"""A load balancer at its most careless: each request to a random node.

For tests of presenced's cluster mode: clients talk to one address, and no
two requests, not even a /sync long-poll and the next, need land on the same
node. Standard library only; one thread per request (long-polls hold one).

    random_proxy.py PORT http://127.0.0.1:8001 http://127.0.0.1:8002 ...
"""

from __future__ import annotations

import http.client
import random
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Headers that belong to one hop, not to the request or response.
HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "host",
    "content-length",
}


def make_handler(nodes: list[str], counts: dict[str, int], lock: threading.Lock):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args) -> None:  # noqa: A002
            pass  # quiet: the tests print what matters

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
            # A random node; one that refuses the connection (killed) is
            # skipped, as a load balancer's redispatch does. A node that
            # accepted the request and then failed is not retried: the
            # request may have been carried out.
            order = random.sample(nodes, len(nodes))
            resp = None
            for node in order:
                target = urllib.parse.urlsplit(node)
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=300)
                try:
                    conn.connect()
                except OSError:
                    conn.close()
                    continue
                with lock:
                    counts[node] = counts.get(node, 0) + 1
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    payload = resp.read()
                except OSError as e:
                    resp = None
                    payload = f'{{"errcode":"M_UNKNOWN","error":"node {node}: {e}"}}'.encode()
                finally:
                    conn.close()
                break
            else:
                payload = b'{"errcode":"M_UNKNOWN","error":"no node accepts connections"}'
            if resp is None:
                try:
                    self.send_response(502)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                return
            try:
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in HOP:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client went away (a cancelled long-poll)

        do_GET = do_POST = do_PUT = do_DELETE = do_OPTIONS = _forward

    return Handler


class RandomProxy:
    """Runs the proxy on a thread of this process (tests) until `stop`."""

    def __init__(self, nodes: list[str], port: int = 0) -> None:
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(
            ("127.0.0.1", port), make_handler(nodes, self.counts, self._lock)
        )
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> "RandomProxy":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def main() -> None:
    port, nodes = int(sys.argv[1]), sys.argv[2:]
    proxy = RandomProxy(nodes, port)
    print(f"random proxy on {proxy.base_url} -> {' '.join(nodes)}", flush=True)
    proxy.server.serve_forever()


if __name__ == "__main__":
    main()

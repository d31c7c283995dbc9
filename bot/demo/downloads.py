"""Where the demo's download links lead: a tiny file server on 127.0.0.1.

Asana's real link is a presigned S3 URL valid about an hour. The demo's is shaped like one (a fresh
signature per request) but points here, so the link the bot posts can be opened and answers with a
small gzipped JSON document instead of leading nowhere.
"""

from __future__ import annotations

import gzip
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PREFIX = "/exports/"


class _Handler(BaseHTTPRequestHandler):
    server_version = "demo-downloads"

    def do_GET(self) -> None:
        if not self.path.startswith(PREFIX):
            self.send_error(404, "not a demo export")
            return
        gid = self.path[len(PREFIX) :].split("/", 1)[0]
        body = gzip.compress(
            json.dumps(
                {"demo": True, "export": gid, "note": "a demo export: no real data"}
            ).encode()
        )
        self.send_response(200)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # the demo's screen stays clean
        return


class DemoDownloads:
    """A threaded HTTP server on a free 127.0.0.1 port that serves every demo export."""

    def __init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="demo-downloads", daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def link(self, organization_gid: str, export_gid: str) -> str:
        """A presigned-looking link, new per call like Asana's."""
        return (
            f"{self.base_url}{PREFIX}{export_gid}/domain_export_{organization_gid}_{export_gid}"
            f".json.gz?X-Amz-Expires=3600&X-Amz-Signature=demo{uuid.uuid4().hex}"
        )

    def __enter__(self) -> DemoDownloads:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

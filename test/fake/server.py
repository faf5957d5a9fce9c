"""The HTTP side of the fake: the request plumbing every service shares
(BaseHandler) and the threaded server (FakeHTTPServer).  Which service
answers a path is decided by the table __main__ hands the server."""

import datetime
import json
import os
import socket
import socketserver
import ssl
import struct
import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import faults
from .common import HTTPError, Reply, is_json_content_type


class BaseHandler(BaseHTTPRequestHandler):
    """HTTP plumbing shared by every service: reading the request, recording
    it, fault injection, finding the route, answering.  __main__ composes it
    with the services' route classes into the request handler."""

    protocol_version = "HTTP/1.1"
    server_version = "dfe-airbyte-fake/1.0"
    # A request line or header block slower than this is dropped.
    timeout = 300

    # Set per request in _dispatch.
    path_only = ""
    query = ""
    args = {}
    hdrs = {}
    raw_body = b""
    record = None

    # ---------------------------------------------------------------- plumbing

    def log_message(self, fmt, *args):  # silence the default stderr log
        pass

    def setup(self):
        super().setup()
        # The headers and the body go out in separate writes: without
        # TCP_NODELAY, Nagle holds the body back until the client's delayed
        # ACK (40-200 ms) on every request of a kept-alive connection.
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def do_GET(self):
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    def _read_body(self):
        te = self.headers.get("Transfer-Encoding", "").lower()
        if "chunked" in te:
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    # trailers until blank line
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self):
        state = self.server.state
        self.record = None  # the connection may have served requests before
        split = urllib.parse.urlsplit(self.path)
        self.path_only = split.path
        self.query = split.query
        self.args = {k: v[-1] for k, v in
                     urllib.parse.parse_qs(split.query,
                                           keep_blank_values=True).items()}
        self.hdrs = {k.lower(): v for k, v in self.headers.items()}
        try:
            self.raw_body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return

        if self.path_only.startswith("/_fake/") or self.path_only == "/_fake":
            routes = self.server.routes_for(self.path_only, control=True)
            self._send(self._call(routes, self.path_only))
            return

        if self.server.control_only:
            self._send(Reply(404, {"message": "control listener: only /_fake/"}))
            return

        routes = self.server.routes_for(self.path_only, control=False)
        handler, template, match = self._find(routes, self.path_only)
        with state.lock:
            state.seq += 1
            try:
                parsed = json.loads(self.raw_body) if self.raw_body else None
            except ValueError:
                parsed = None
            self.record = {
                "seq": state.seq, "time": time.time(),
                "method": self.command, "path": self.path_only,
                "query": self.query, "args": self.args,
                "headers": dict(self.hdrs),
                "body": self.raw_body.decode("utf-8", "replace"),
                "json": parsed, "status": None}
            state.requests.append(self.record)
            key = "%s %s" % (self.command, template or self.path_only)
            state.stats[key] = state.stats.get(key, 0) + 1
            fault = faults.take_fault(state.faults, self.command,
                                      self.path_only)

        if fault is not None and self._apply_fault(fault, routes):
            return

        self._send(self._call(routes, self.path_only))

    def _apply_fault(self, fault, routes):
        """Act out a fault rule; True when that answered the request (a
        "latency" fault only delays the real answer)."""
        kind = fault.get("kind", "status")
        self.record["fault"] = kind
        if kind == "latency":
            time.sleep(float(fault.get("latency_ms", 50)) / 1000.0)
        elif kind == "hang":
            self.server.stopping.wait(faults.HANG_SECONDS)
            self._abort(rst=False)
            return True
        elif kind == "reset":
            self._abort(rst=True)
            return True
        elif kind in ("accept_hang", "accept_reset"):
            # the server does the work, then the answer is lost: a
            # timeout or a reset after the request was accepted
            reply = self._call(routes, self.path_only)
            self.record["accepted_status"] = reply.status
            if kind == "accept_hang":
                self.server.stopping.wait(faults.HANG_SECONDS)
            self._abort(rst=kind == "accept_reset")
            return True
        elif kind == "malformed":
            self._send(Reply(200, faults.MALFORMED_BODY,
                             {"Content-Type": "application/json"}))
            return True
        else:  # "status"
            status = int(fault.get("status", 503))
            body = fault.get("body")
            if body is None:
                body = {"message": "injected %d" % status}
            headers = {}
            if fault.get("retry_after") is not None:
                headers["Retry-After"] = str(fault["retry_after"])
            self._send(Reply(status, body, headers))
            return True
        return False

    @staticmethod
    def _find(routes, path):
        for fn in routes:
            _, rx, template = fn.route
            m = rx.fullmatch(path)
            if m:
                return fn, template, m
        return None, None, None

    def _call(self, routes, path):
        allowed = []
        for fn in routes:
            method, rx, _ = fn.route
            m = rx.fullmatch(path)
            if not m:
                continue
            if method != self.command:
                allowed.append(method)
                continue
            try:
                return fn(self, *[urllib.parse.unquote(g) for g in m.groups()])
            except HTTPError as e:
                return e.reply
            except Exception as e:  # a bug in the fake: say so loudly
                import traceback
                traceback.print_exc()
                return Reply(500, {"message": "fake server bug: %r" % e})
        if allowed:
            return Reply(405, {"message": "method not allowed"},
                         {"Allow": ", ".join(sorted(set(allowed)))})
        return Reply(404, {"message": "no such endpoint in the fake: %s"
                           % path})

    def _send(self, reply):
        body = reply.body
        headers = dict(reply.headers)
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            data = body.encode()
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        elif body is None:
            data = b""
        else:
            data = body
        # record the status before answering: a client that reads the
        # request log right after its answer must see it
        if self.record is not None:
            self.record["status"] = reply.status
        try:
            self.send_response(reply.status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            self.close_connection = True
        self._finish_log(reply.status)

    def _abort(self, rst):
        """Close the connection without answering (RST when rst=True)."""
        self.close_connection = True
        try:
            if rst:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass
        self._finish_log(None)

    def _finish_log(self, status):
        """Set the recorded status; log it ("-(hang)" etc. when unanswered)."""
        shown = status
        if self.record is not None:
            self.record["status"] = status
            if status is None:
                shown = "-(%s)" % self.record.get("fault")
        self.server.log_line(self.command, self.path_only, shown)

    # -------------------------------------------------------------- utilities

    @property
    def state(self):
        return self.server.state

    @property
    def cfg(self):
        return self.server.state.config

    def body_json(self, required=True):
        """Request body as a JSON object, or 400."""
        if not self.raw_body:
            if required:
                raise HTTPError(400, {"message": "request body required"})
            return {}
        try:
            data = json.loads(self.raw_body)
        except ValueError:
            raise HTTPError(400, {"message": "malformed JSON body"})
        if not isinstance(data, dict):
            raise HTTPError(400, {"message": "JSON body must be an object"})
        return data

    def body_form_or_json(self):
        if is_json_content_type(self.hdrs.get("content-type")):
            return self.body_json()
        return {k: v[-1] for k, v in urllib.parse.parse_qs(
            self.raw_body.decode("utf-8", "replace"),
            keep_blank_values=True).items()}

    def base_url(self):
        scheme = "https" if self.server.tls else "http"
        return "%s://%s" % (scheme, self.hdrs.get("host", "localhost"))


class FakeHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # the extension opens 16+ connections at once with libcurl multi
    request_queue_size = 128

    def __init__(self, addr, handler, services, state, stopping, log_file,
                 log_lock, tls_context=None, control_only=False):
        super().__init__(addr, handler)
        self.services = services
        self.state = state
        self.stopping = stopping
        self.log_file = log_file
        self.log_lock = log_lock
        self.control_only = control_only
        self.tls = tls_context is not None
        if tls_context is not None:
            # Handshake lazily in the handler thread, so that a client that
            # aborts the handshake (untrusted cert) cannot block accept().
            self.socket = tls_context.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False)

    def routes_for(self, path, control):
        """The routes of the first service whose prefix matches the path
        (an empty list when none does: the request gets a 404)."""
        for prefix, is_control, routes in self.services:
            if is_control == control and prefix.match(path):
                return routes
        return []

    def server_bind(self):
        # HTTPServer.server_bind resolves the host name (getfqdn), which can
        # stall on a machine with slow DNS; the name is never needed here.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def log_line(self, method, path, status):
        if self.log_file is None:
            return
        line = "%s %s %s %s\n" % (
            datetime.datetime.now(datetime.timezone.utc)
            .strftime("%Y-%m-%dT%H:%M:%S.%fZ"), method, path, status)
        with self.log_lock:
            self.log_file.write(line)
            self.log_file.flush()

    def handle_error(self, request, client_address):
        # Clients that drop connections or refuse our TLS certificate are
        # part of the tests; one line instead of a traceback.
        exc = sys.exc_info()[1]
        if self.log_file is not None and not isinstance(
                exc, (ConnectionError, ssl.SSLError, TimeoutError)):
            self.log_line("-", "-", "error %s" % type(exc).__name__)
        if not isinstance(exc, (ConnectionError, ssl.SSLError, TimeoutError,
                                OSError)):
            super().handle_error(request, client_address)


def write_port_file(path, port):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write("%d\n" % port)
    os.replace(tmp, path)

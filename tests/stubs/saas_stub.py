#!/usr/bin/env python3
"""saas_stub.py - one local HTTP server playing the third-party SaaS APIs that
tenantq's worker calls, for tests and the local demo. Standard library only
(runs on Debian 12's /usr/bin/python3, 3.11). Binds 127.0.0.1 unless --bind says otherwise.

APIs (JSON in, JSON out unless said otherwise):

  vector DB
    PUT    /v1/namespaces/<name>          create: {"replicas": N, ...any config}
                                          201 created, 200 exists with the same
                                          config, 409 exists with another config
                                          (?overwrite=true replaces it: 200)
    GET    /v1/namespaces/<name>          200 {"name","config","vector_count",
                                          "status","created_at"} or 404
    DELETE /v1/namespaces/<name>          204, or 404 when absent
    POST   /v1/namespaces/<name>/vectors  {"vectors":[{"id","values":[..],
                                          "metadata":{}}]} -> {"upserted": N}
    POST   /v1/namespaces/<name>/query    {"vector":[..], "top_k": K}
                                          -> {"matches":[{"id","score",
                                          "metadata"}], "took_ms"} (cosine)
    POST   /v1/namespaces/<name>/vectors/delete  {"ids":[..]} -> {"deleted": N}
  metrics (Prometheus text format, no auth, like an exporter)
    GET    /metrics                       saas_namespace_vectors{tenant=..},
                                          saas_namespace_requests_total{tenant=..}
                                          for every namespace
  monitoring dashboards
    PUT    /api/dashboards/<uid>          any JSON object; same 201/200/409 and
                                          ?overwrite=true rules as namespaces
    GET    /api/dashboards/<uid>          200 {"uid","dashboard","version",
                                          "created_at","updated_at"} or 404
    DELETE /api/dashboards/<uid>          204 or 404
  Slack-compatible incoming webhook
    POST   /hooks/<anything>              {"text": "..."} (or "blocks") -> 200
                                          text/plain "ok"; 400 "no_text" /
                                          "invalid_payload"; recorded

Idempotency (PUT, POST, DELETE with an Idempotency-Key header): the first
answer below 500 is stored under the key together with a fingerprint of
method, path and body (JSON compared canonically). The same key with the same
request replays that answer (same status and body, header
Idempotent-Replayed: true); the same key with a different method, path or
body is refused with 422 {"error": "idempotency_key_reused"}. Answers of 500
and above (including injected ones) are not stored, so a retry with the same
key runs again.

Auth: with --token T (or env SAAS_TOKEN) every /v1/ and /api/ request needs
"Authorization: Bearer T" (else 401). Webhooks need none: like Slack's, their
URL is the secret; nor does PagerDuty's enqueue (its routing_key is). With --jwks FILE (a JWKS of Ed25519 keys, re-read when it
changes) a tenant's own JWT opens its own namespace too: a token whose EdDSA
signature verifies with a key of FILE, not expired, whose tenant_id claim is
the namespace's name; a valid token of another tenant gets 403 forbidden, an
invalid one 401 (python3-cryptography verifies the signature).

Admin endpoints (never authenticated) are listed by --help.
"""

import argparse
import hashlib
import json
import math
import os
import random
import re
import signal
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
LOG_LOCK = threading.Lock()


def log(msg):
    with LOG_LOCK:
        sys.stderr.write("%s saas_stub: %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), msg))
        sys.stderr.flush()


def iso(ts):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class HTTPError(Exception):
    def __init__(self, status, error, message=None, headers=None):
        super().__init__(error)
        self.status = status
        self.body = {"error": error}
        if message:
            self.body["message"] = message
        self.headers = headers or {}


class State:
    def __init__(self):
        self.lock = threading.RLock()
        self.reset()

    def reset(self):
        self.namespaces = {}   # name -> {"config", "vectors": {id: {...}}, "created_at"}
        self.dashboards = {}   # uid -> {"dashboard", "version", "created_at", "updated_at"}
        self.hooks = []        # [{"path", "payload", "time"}]
        self.pages = []        # PagerDuty events: [{"event", "time"}]
        self.idem = {}         # key -> {"fingerprint", "method", "path", "status", "body", "ctype"}
        self.faults = []       # [{"prefix", "method", "status", "count", "retry_after"}]
        self.latency = []      # [{"prefix", "ms", "jitter_ms"}]
        self.requests = []     # last 1000 requests
        self.quirks = set()    # misbehaviours switched on by /_admin/quirk
        self.ns_requests = {}  # namespace -> API requests answered (for /metrics)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default listen backlog is 5: a burst of new connections
    # (ten tenants' checks at once) overflows it and the dropped SYNs come
    # back a whole second later, a latency no hosted API has
    request_queue_size = 128

    def __init__(self, addr, handler, args):
        super().__init__(addr, handler)
        self.args = args
        self.state = State()


def b64url(text):
    import base64
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Jwks:
    """Ed25519 public keys from a JWKS file (re-read when it changes), to verify tenants' JWTs."""

    def __init__(self, path):
        self.path = path
        self.mtime = None
        self.keys = {}
        self.lock = threading.Lock()

    def load(self):
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except OSError:
            return {}
        with self.lock:
            if mtime != self.mtime:
                keys = {}
                try:
                    with open(self.path) as f:
                        for k in json.load(f).get("keys", []):
                            if k.get("kty") == "OKP" and k.get("crv") == "Ed25519" and k.get("kid"):
                                keys[k["kid"]] = Ed25519PublicKey.from_public_bytes(b64url(k["x"]))
                except (OSError, ValueError, KeyError) as e:
                    log("cannot read JWKS %s: %s" % (self.path, type(e).__name__))
                    keys = {}
                self.keys, self.mtime = keys, mtime
            return self.keys

    def verify(self, token):
        """The claims of a valid, unexpired EdDSA token, else None."""
        from cryptography.exceptions import InvalidSignature
        try:
            h, p, sig = token.split(".")
            hdr, claims = json.loads(b64url(h)), json.loads(b64url(p))
            key = self.load().get(hdr.get("kid"))
            if hdr.get("alg") != "EdDSA" or key is None or not isinstance(claims, dict):
                return None
            key.verify(b64url(sig), (h + "." + p).encode())
        except (ValueError, InvalidSignature, AttributeError):
            return None
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or exp <= time.time():
            return None
        return claims


def canonical_body(body):
    try:
        return json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        return body


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "saas-stub"

    def version_string(self):
        return self.server_version

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        self.dispatch()

    def do_PUT(self):
        self.dispatch()

    def do_POST(self):
        self.dispatch()

    def do_DELETE(self):
        self.dispatch()

    def do_HEAD(self):
        self.dispatch()

    # ---- plumbing -------------------------------------------------------

    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline(65537).split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)
        n = int(self.headers.get("Content-Length") or 0)
        if n > 16 << 20:
            self.close_connection = True
            raise HTTPError(413, "payload_too_large")
        return self.rfile.read(n) if n > 0 else b""

    def send(self, status, body, ctype="application/json", headers=None):
        if isinstance(body, (dict, list)):
            body = json.dumps(body, sort_keys=True) + "\n"
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.send_response(status)
        self.send_header("X-Request-Id", self.request_id)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if status != 204:
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and status != 204:
            self.wfile.write(body)
        self.status = status
        return status, body, ctype

    def json_body(self, body, required=True):
        if not body.strip():
            if required:
                raise HTTPError(400, "invalid_request", "a JSON object body is required")
            return {}
        try:
            obj = json.loads(body)
        except ValueError:
            raise HTTPError(400, "invalid_json", "the body is not valid JSON")
        if not isinstance(obj, dict):
            raise HTTPError(400, "invalid_request", "the body must be a JSON object")
        return obj

    def dispatch(self):
        self.request_id = uuid.uuid4().hex[:16]
        self.status = 0
        self.auth_state = "-"
        started = time.monotonic()
        raw_path, _, raw_query = self.path.partition("?")
        self.raw_path = raw_path
        path = unquote(raw_path)
        query = {}
        for piece in raw_query.split("&") if raw_query else []:
            if piece:
                k, _, v = piece.partition("=")
                query[unquote(k)] = unquote(v)
        idem_key = self.headers.get("Idempotency-Key")
        try:
            body = self.read_body()
            if path.startswith("/_admin/"):
                self.admin(path, query, body)
                return
            self.check_auth(path)
            self.apply_latency(path)
            self.apply_fault(path)
            if idem_key is not None and self.command in ("PUT", "POST", "DELETE"):
                self.idempotent(idem_key, path, query, body)
            else:
                self.route(path, query, body)
        except HTTPError as e:
            self.send(e.status, e.body, headers=e.headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:
            log("internal error on %s %s: %r" % (self.command, raw_path, e))
            try:
                self.send(500, {"error": "internal_error"})
            except OSError:
                pass
        finally:
            ms = int((time.monotonic() - started) * 1000)
            if not path.startswith("/_admin/"):
                st = self.server.state
                with st.lock:
                    st.requests.append({"time": iso(time.time()), "method": self.command, "path": raw_path,
                                        "status": self.status, "idempotency_key": idem_key,
                                        "auth": self.auth_state, "ms": ms})
                    del st.requests[:-1000]
            if not self.server.args.quiet:
                log("%s %s %s %d auth=%s idem=%s %dms" % (self.client_address[0], self.command, raw_path,
                                                         self.status, self.auth_state,
                                                         "yes" if idem_key else "no", ms))

    def check_auth(self, path):
        token = self.server.args.token
        if not token or path.startswith("/hooks/") or path == "/metrics" or path == "/v2/enqueue":
            return
        got = self.headers.get("Authorization")
        if got is None:
            self.auth_state = "missing"
        elif got.strip() == "Bearer " + token:
            self.auth_state = "ok"
            return
        else:
            self.auth_state = "wrong"
            if self.server.args.jwks and got.startswith("Bearer ") and got.count(".") == 2:
                self.check_jwt(path, got[len("Bearer "):].strip())
                return
        raise HTTPError(401, "unauthorized", "a valid 'Authorization: Bearer <token>' header is required",
                        {"WWW-Authenticate": 'Bearer realm="saas-stub"'})

    def check_jwt(self, path, token):
        claims = self.server.jwks.verify(token)
        if claims is None:
            self.auth_state = "jwt-invalid"
            raise HTTPError(401, "unauthorized", "the token's signature, key id or expiry is not valid",
                            {"WWW-Authenticate": 'Bearer realm="saas-stub", error="invalid_token"'})
        parts = path.strip("/").split("/")
        if parts[:2] == ["v1", "namespaces"] and len(parts) >= 3 and claims.get("tenant_id") == parts[2]:
            self.auth_state = "jwt"
            return
        self.auth_state = "jwt-other-tenant"
        raise HTTPError(403, "forbidden", "this token is for another tenant's resources")

    def apply_latency(self, path):
        st = self.server.state
        delay = 0.0
        with st.lock:
            for lat in st.latency:
                if path.startswith(lat["prefix"]):
                    d = lat["ms"] + (random.uniform(0, lat["jitter_ms"]) if lat["jitter_ms"] else 0)
                    delay = max(delay, d)
        if delay > 0:
            time.sleep(delay / 1000.0)

    def apply_fault(self, path):
        st = self.server.state
        with st.lock:
            for f in st.faults:
                if f["count"] > 0 and path.startswith(f["prefix"]) and f["method"] in ("", self.command):
                    f["count"] -= 1
                    st.faults = [g for g in st.faults if g["count"] > 0]
                    headers = {"Retry-After": str(f["retry_after"])} if f["retry_after"] is not None else {}
                    raise HTTPError(f["status"], "injected_failure", "injected by /_admin/fail", headers)

    def idempotent(self, key, path, query, body):
        st = self.server.state
        fp = hashlib.sha256(self.command.encode() + b" " + path.encode() + b"?" +
                            json.dumps(query, sort_keys=True).encode() + b"\n" + canonical_body(body)).hexdigest()
        with st.lock:   # one request per key at a time: a concurrent duplicate waits, then replays
            prev = st.idem.get(key)
            if prev is not None:
                if prev["fingerprint"] != fp:
                    raise HTTPError(422, "idempotency_key_reused",
                                    "this Idempotency-Key was used with a different request (%s %s)"
                                    % (prev["method"], prev["path"]))
                self.send(prev["status"], prev["body"], prev["ctype"], {"Idempotent-Replayed": "true"})
                return
            try:
                status, rbody, ctype = self.route(path, query, body)
            except HTTPError as e:
                status, rbody, ctype = self.send(e.status, e.body, headers=e.headers)
            if status < 500:
                st.idem[key] = {"fingerprint": fp, "method": self.command, "path": path, "status": status,
                                "body": rbody, "ctype": ctype, "time": time.time()}

    # ---- APIs -----------------------------------------------------------

    def route(self, path, query, body):
        m = self.command
        parts = path.strip("/").split("/")
        if path.startswith("/hooks/") and len(path) > len("/hooks/"):
            if m != "POST":
                raise HTTPError(405, "method_not_allowed")
            return self.hook(path, body)
        if path == "/v2/enqueue":
            if m != "POST":
                raise HTTPError(405, "method_not_allowed")
            return self.page(body)
        if path == "/metrics" and m == "GET":
            return self.metrics()
        if parts[:2] == ["v1", "namespaces"] and len(parts) == 5 and parts[3:] == ["vectors", "delete"] \
                and m == "POST":
            self.count(parts[2])
            return self.delete_vectors(parts[2], body)
        if parts[:2] == ["v1", "namespaces"] and len(parts) in (3, 4):
            name = parts[2]
            if not NAME_RE.match(name):
                raise HTTPError(400, "invalid_name", "namespace names match %s" % NAME_RE.pattern)
            self.count(name)
            if len(parts) == 3:
                return self.resource(m, "namespace", name, query, body)
            if parts[3] == "vectors" and m == "POST":
                return self.upsert_vectors(name, body)
            if parts[3] == "query" and m == "POST":
                return self.query_vectors(name, body)
            raise HTTPError(404 if parts[3] not in ("vectors", "query") else 405,
                            "not_found" if parts[3] not in ("vectors", "query") else "method_not_allowed")
        if parts[:2] == ["api", "dashboards"] and len(parts) == 3:
            uid = parts[2]
            if not NAME_RE.match(uid):
                raise HTTPError(400, "invalid_uid", "dashboard uids match %s" % NAME_RE.pattern)
            return self.resource(m, "dashboard", uid, query, body)
        raise HTTPError(404, "not_found", "no such API: %s %s" % (m, path))

    def view(self, kind, name, r):
        if kind == "namespace":
            return {"name": name, "config": r["config"], "vector_count": len(r["vectors"]), "status": "ready",
                    "created_at": iso(r["created_at"])}
        return {"uid": name, "dashboard": r["config"], "version": r["version"],
                "created_at": iso(r["created_at"]), "updated_at": iso(r["updated_at"])}

    def resource(self, m, kind, name, query, body):
        st = self.server.state
        table = st.namespaces if kind == "namespace" else st.dashboards
        with st.lock:
            r = table.get(name)
            if m in ("GET", "HEAD"):
                if r is None:
                    raise HTTPError(404, "not_found", "%s %s does not exist" % (kind, name))
                return self.send(200, self.view(kind, name, r))
            if m == "DELETE":
                if r is None:
                    raise HTTPError(404, "not_found", "%s %s does not exist" % (kind, name))
                del table[name]
                return self.send(204, b"")
            if m != "PUT":
                raise HTTPError(405, "method_not_allowed")
            cfg = self.json_body(body)
            if kind == "namespace":
                rep = cfg.get("replicas")
                if not isinstance(rep, int) or isinstance(rep, bool) or not 1 <= rep <= 16:
                    raise HTTPError(400, "invalid_request", "replicas must be an integer from 1 to 16")
                dim = cfg.get("dimension")
                if dim is not None and (not isinstance(dim, int) or isinstance(dim, bool) or not 1 <= dim <= 4096):
                    raise HTTPError(400, "invalid_request", "dimension must be an integer from 1 to 4096")
            now = time.time()
            if r is None:
                r = {"config": cfg, "created_at": now, "updated_at": now, "version": 1, "vectors": {}}
                table[name] = r
                return self.send(201, self.view(kind, name, r))
            if canonical_body(json.dumps(cfg).encode()) == canonical_body(json.dumps(r["config"]).encode()):
                return self.send(200, self.view(kind, name, r))
            if query.get("overwrite") == "true":
                r["config"], r["updated_at"], r["version"] = cfg, now, r["version"] + 1
                return self.send(200, self.view(kind, name, r))
            raise HTTPError(409, "conflict", "%s %s exists with a different configuration "
                            "(PUT ?overwrite=true replaces it)" % (kind, name))

    def count(self, name):
        st = self.server.state
        with st.lock:
            st.ns_requests[name] = st.ns_requests.get(name, 0) + 1

    def metrics(self):
        st = self.server.state
        lines = ["# HELP saas_namespace_vectors Vectors stored in the tenant's namespace.",
                 "# TYPE saas_namespace_vectors gauge"]
        with st.lock:
            names = sorted(st.namespaces)
            for n in names:
                lines.append('saas_namespace_vectors{tenant="%s"} %d' % (n, len(st.namespaces[n]["vectors"])))
            lines += ["# HELP saas_namespace_requests_total API requests on the tenant's namespace.",
                      "# TYPE saas_namespace_requests_total counter"]
            for n in names:
                lines.append('saas_namespace_requests_total{tenant="%s"} %d' % (n, st.ns_requests.get(n, 0)))
        return self.send(200, "\n".join(lines) + "\n", "text/plain; version=0.0.4")

    def delete_vectors(self, name, body):
        st = self.server.state
        req = self.json_body(body)
        ids = req.get("ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise HTTPError(400, "invalid_request", "ids must be a list of strings")
        with st.lock:
            ns = self.namespace(name)
            n = sum(1 for i in ids if ns["vectors"].pop(i, None) is not None)
        return self.send(200, {"deleted": n})

    def namespace(self, name):
        r = self.server.state.namespaces.get(name)
        if r is None:
            raise HTTPError(404, "not_found", "namespace %s does not exist" % name)
        return r

    def upsert_vectors(self, name, body):
        st = self.server.state
        req = self.json_body(body)
        vecs = req.get("vectors")
        if not isinstance(vecs, list) or not vecs:
            raise HTTPError(400, "invalid_request", "vectors must be a non-empty list")
        with st.lock:
            ns = self.namespace(name)
            dim = ns["config"].get("dimension")
            clean = []
            for v in vecs:
                vals = v.get("values") if isinstance(v, dict) else None
                if not isinstance(v, dict) or not isinstance(v.get("id"), str) or not isinstance(vals, list) \
                        or not vals or not all(isinstance(f, (int, float)) and not isinstance(f, bool) for f in vals):
                    raise HTTPError(400, "invalid_request", "each vector needs a string id and numeric values")
                if dim is not None and len(vals) != dim:
                    raise HTTPError(400, "dimension_mismatch", "vector %s has %d values, namespace dimension is %d"
                                    % (v["id"], len(vals), dim))
                clean.append((v["id"], {"values": [float(f) for f in vals], "metadata": v.get("metadata") or {}}))
            for vid, rec in clean:
                ns["vectors"][vid] = rec
            return self.send(200, {"upserted": len(clean)})

    def query_vectors(self, name, body):
        t0 = time.monotonic()
        st = self.server.state
        req = self.json_body(body)
        q = req.get("vector")
        top_k = req.get("top_k", 10)
        if not isinstance(q, list) or not q or not all(isinstance(f, (int, float)) and not isinstance(f, bool)
                                                       for f in q):
            raise HTTPError(400, "invalid_request", "vector must be a non-empty list of numbers")
        if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= 1000:
            raise HTTPError(400, "invalid_request", "top_k must be an integer from 1 to 1000")
        with st.lock:
            ns = self.namespace(name)
            qn = math.sqrt(sum(f * f for f in q))
            scored = []
            for vid, rec in ns["vectors"].items():
                vals = rec["values"]
                if len(vals) != len(q):
                    raise HTTPError(400, "dimension_mismatch", "query has %d values, vector %s has %d"
                                    % (len(q), vid, len(vals)))
                vn = math.sqrt(sum(f * f for f in vals))
                score = sum(a * b for a, b in zip(q, vals)) / (qn * vn) if qn and vn else 0.0
                scored.append((-score, vid, rec))
            scored.sort(key=lambda s: (s[0], s[1]), reverse="reverse_ranking" in st.quirks)
            matches = [{"id": vid, "score": round(-neg, 6), "metadata": rec["metadata"]}
                       for neg, vid, rec in scored[:top_k]]
        return self.send(200, {"namespace": name, "matches": matches,
                               "took_ms": round((time.monotonic() - t0) * 1000, 3)})

    def hook(self, path, body):
        st = self.server.state
        try:
            payload = json.loads(body)
        except ValueError:
            raise HTTPError(400, "invalid_payload")
        if not isinstance(payload, dict):
            raise HTTPError(400, "invalid_payload")
        text = payload.get("text")
        if not (isinstance(text, str) and text.strip()) and not payload.get("blocks") \
                and not payload.get("attachments"):
            self.status = 400
            return self.send(400, "no_text", "text/plain")
        with st.lock:
            st.hooks.append({"path": path, "payload": payload, "time": iso(time.time())})
        return self.send(200, "ok", "text/plain")

    def page(self, body):
        """PagerDuty Events API v2, as events.pagerduty.com/v2/enqueue answers."""
        st = self.server.state
        try:
            ev = json.loads(body)
        except ValueError:
            ev = None
        errors = []
        if not isinstance(ev, dict):
            errors.append("Event object is invalid")
            ev = {}
        key = ev.get("routing_key")
        if not (isinstance(key, str) and key):
            errors.append("'routing_key' is missing or blank")
        action = ev.get("event_action")
        if action not in ("trigger", "acknowledge", "resolve"):
            errors.append("'event_action' is invalid (must be one of: trigger, acknowledge, resolve)")
        dedup = ev.get("dedup_key")
        if action == "trigger":
            pl = ev.get("payload")
            if not isinstance(pl, dict):
                errors.append("'payload' is missing or blank")
            else:
                for f in ("summary", "source"):
                    if not (isinstance(pl.get(f), str) and pl.get(f)):
                        errors.append("'payload.%s' is missing or blank" % f)
                if isinstance(pl.get("summary"), str) and len(pl["summary"]) > 1024:
                    errors.append("'payload.summary' is longer than 1024 characters")
                if pl.get("severity") not in ("critical", "error", "warning", "info"):
                    errors.append("'payload.severity' is invalid (must be one of: critical, error, warning, info)")
        elif not (isinstance(dedup, str) and dedup):
            errors.append("'dedup_key' is missing or blank")
        if errors:
            return self.send(400, {"status": "invalid event", "message": "Event object is invalid",
                                   "errors": errors})
        if not dedup:
            dedup = uuid.uuid4().hex
        with st.lock:
            st.pages.append({"event": ev, "time": iso(time.time())})
        return self.send(202, {"status": "success", "message": "Event processed", "dedup_key": dedup})

    # ---- admin ----------------------------------------------------------

    def admin(self, path, q, body):
        st = self.server.state
        action = path[len("/_admin/"):]
        m = self.command

        def need(*names):
            miss = [n for n in names if not q.get(n)]
            if miss:
                raise HTTPError(400, "missing query parameter(s): " + ", ".join(miss))

        if action == "health" and m in ("GET", "HEAD"):
            return self.send(200, {"ok": True})
        if action == "state" and m == "GET":
            with st.lock:
                return self.send(200, {
                    "namespaces": {n: dict(self.view("namespace", n, r), vector_ids=sorted(r["vectors"]))
                                   for n, r in st.namespaces.items()},
                    "dashboards": {u: self.view("dashboard", u, r) for u, r in st.dashboards.items()},
                    "hooks": list(st.hooks),
                    "pages": list(st.pages),
                    "idempotency_keys": {k: {"method": v["method"], "path": v["path"], "status": v["status"]}
                                         for k, v in st.idem.items()},
                    "faults": list(st.faults), "latency": list(st.latency), "quirks": sorted(st.quirks)})
        if action == "requests" and m == "GET":
            with st.lock:
                return self.send(200, {"requests": list(st.requests)})
        if m != "POST":
            raise HTTPError(404, "no such admin endpoint: %s %s" % (m, path))
        try:
            if action == "reset":
                with st.lock:
                    st.reset()
                return self.send(200, {"ok": True})
            if action == "fail":
                need("status")
                f = {"prefix": q.get("path", "/"), "method": q.get("method", "").upper(),
                     "status": int(q["status"]), "count": int(q.get("count", "1")),
                     "retry_after": int(q["retry_after"]) if q.get("retry_after") else None}
                with st.lock:
                    st.faults.append(f)
                    return self.send(200, {"ok": True, "faults": st.faults})
            if action == "quirk":
                need("name")
                if q["name"] not in ("reverse_ranking",):
                    raise HTTPError(400, "unknown quirk (known: reverse_ranking)")
                with st.lock:
                    (st.quirks.add if q.get("on", "1") == "1" else st.quirks.discard)(q["name"])
                    return self.send(200, {"ok": True, "quirks": sorted(st.quirks)})
            if action == "latency":
                need("ms")
                prefix, ms, jit = q.get("path", "/"), int(q["ms"]), int(q.get("jitter_ms", "0"))
                with st.lock:
                    st.latency = [lat for lat in st.latency if lat["prefix"] != prefix]
                    if ms > 0 or jit > 0:
                        st.latency.append({"prefix": prefix, "ms": ms, "jitter_ms": jit})
                    return self.send(200, {"ok": True, "latency": st.latency})
            if action in ("set", "delete"):
                need("path")
                parts = q["path"].strip("/").split("/")
                if parts[:2] == ["v1", "namespaces"] and len(parts) == 3:
                    table = st.namespaces
                elif parts[:2] == ["api", "dashboards"] and len(parts) == 3:
                    table = st.dashboards
                else:
                    raise HTTPError(400, "path must be /v1/namespaces/NAME or /api/dashboards/UID")
                with st.lock:
                    if action == "delete":
                        existed = table.pop(parts[2], None) is not None
                        return self.send(200, {"ok": True, "existed": existed})
                    cfg = self.json_body(body)
                    r = table.get(parts[2])
                    now = time.time()
                    if r is None:
                        table[parts[2]] = {"config": cfg, "created_at": now, "updated_at": now,
                                           "version": 1, "vectors": {}}
                    else:
                        r["config"], r["updated_at"], r["version"] = cfg, now, r["version"] + 1
                    return self.send(200, {"ok": True})
        except ValueError as e:
            raise HTTPError(400, "bad parameter: %s" % e)
        raise HTTPError(404, "no such admin endpoint: %s %s" % (m, path))


def main():
    ap = argparse.ArgumentParser(
        description="Local stand-in for the SaaS APIs tenantq calls (vector DB, dashboards, webhooks), "
                    "on 127.0.0.1.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""admin endpoints (never authenticated; JSON answers):
  GET  /_admin/health                      {"ok": true}
  GET  /_admin/state                       namespaces (with vector ids), dashboards,
                                           webhook messages, idempotency keys, faults
  GET  /_admin/requests                    last 1000 API requests: method, path,
                                           status, idempotency_key, auth (ok|missing|
                                           wrong|-), ms
  POST /_admin/reset                       forget everything
  POST /_admin/fail?path=PREFIX&status=500&count=N[&method=PUT][&retry_after=S]
                                           the next N requests under PREFIX fail
  POST /_admin/latency?path=PREFIX&ms=N[&jitter_ms=J]
                                           delay matching requests (ms=0 clears)
  POST /_admin/quirk?name=reverse_ranking[&on=0]
                                           queries rank the worst match first
  POST /_admin/set?path=/v1/namespaces/N   body: JSON that replaces the stored
       /_admin/set?path=/api/dashboards/U  config (e.g. drop a tag on purpose)
  POST /_admin/delete?path=...             remove a resource behind the worker's back
""")
    ap.add_argument("--port", type=int, default=int(os.environ.get("SAAS_PORT", "0")),
                    help="TCP port on 127.0.0.1; 0 picks a free one (default: env SAAS_PORT or 0)")
    ap.add_argument("--bind", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1; tests that run hosts in network"
                         " namespaces give the address of their own bridge)")
    ap.add_argument("--port-file", help="write the port number to this file once listening")
    ap.add_argument("--pid-file", help="write this process's PID to this file")
    ap.add_argument("--token", default=os.environ.get("SAAS_TOKEN") or None,
                    help="require 'Authorization: Bearer TOKEN' on /v1/ and /api/ (default: env SAAS_TOKEN)")
    ap.add_argument("--jwks", help="JWKS file of Ed25519 keys: tenants' JWTs open their own namespaces")
    ap.add_argument("--lifetime", type=float, default=0,
                    help="exit by itself after this many seconds (0: run until SIGTERM/SIGINT)")
    ap.add_argument("--quiet", action="store_true", help="no per-request log lines")
    args = ap.parse_args()

    srv = Server((args.bind, args.port), Handler, args)
    srv.jwks = Jwks(args.jwks) if args.jwks else None
    port = srv.server_address[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, args.port_file)
    if args.pid_file:
        with open(args.pid_file, "w") as f:
            f.write("%d\n" % os.getpid())
    sys.stdout.write("listening on %s:%d\n" % (args.bind, port))
    sys.stdout.flush()

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    t.start()
    log("listening on %s:%d (token %s)" % (args.bind, port, "required" if args.token else "not required"))
    stop.wait(args.lifetime if args.lifetime > 0 else None)
    srv.shutdown()
    srv.server_close()
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""s3server.py - a small S3-compatible server for tenantq's tests and local demo.

Python standard library only (runs on Debian 12's /usr/bin/python3, 3.11).
Path-style addressing: http://127.0.0.1:PORT/<bucket>[/<key>].

What it does like AWS S3 (and why it exists: npm's s3rver neither verifies
signatures nor implements bucket tagging):
  * verifies AWS Signature Version 4 (Authorization header) on every request:
    canonical request (method, URI-encoded path, sorted canonical query with
    valueless parameters written `name=`, the SignedHeaders' trimmed values,
    the signed-header list, the payload hash from x-amz-content-sha256), string
    to sign, signing-key chain, skew of at most 15 minutes; the payload hash
    must equal the SHA-256 of the body (or be UNSIGNED-PAYLOAD);
  * requires Content-MD5 (or an x-amz-checksum-* header) where AWS does:
    PutBucketTagging, PutBucketLifecycleConfiguration, DeleteObjects and the
    other bucket-configuration PUTs (off with --no-require-content-md5);
  * bucket calls: CreateBucket, HeadBucket, DeleteBucket, ListBuckets,
    ListObjectsV2 (and V1), Put/Get/DeleteBucketTagging,
    Put/Get/DeleteBucketLifecycleConfiguration, GetBucketLocation, and a
    generic store for the other configuration sub-resources (versioning,
    encryption, publicAccessBlock, policy, acl, cors, ...) with AWS's defaults
    or "not found" errors;
  * object calls: PutObject, GetObject (with a single Range), HeadObject,
    DeleteObject (204 even when absent), DeleteObjects (POST ?delete=);
  * errors as AWS XML (<Error><Code>...</Code><Message>...</Message>...).

Not implemented (501 NotImplemented): presigned URLs, aws-chunked streaming
uploads, multipart uploads, object tagging/ACLs, CopyObject, versioned objects.

Admin endpoints (unsigned; under /_admin/, which no bucket name can start
with) let tests assert effects and break resources on purpose; see --help.

Logs one line per request to stderr, never a secret, a signature or a header
value.
"""

import argparse
import base64
import datetime as dt
import email.utils
import hashlib
import hmac
import json
import os
import re
import signal
import sys
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, unquote, unquote_to_bytes
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape

S3NS = "http://s3.amazonaws.com/doc/2006-03-01/"
XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'
OWNER_ID = "75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a"
OWNER_NAME = "tenantq"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

# Query parameters that name a sub-resource (the operation), in the order we
# look for them.
SUBRESOURCES = (
    "tagging", "lifecycle", "delete", "location", "versioning", "encryption",
    "publicAccessBlock", "policy", "acl", "cors", "website", "logging",
    "replication", "accelerate", "requestPayment", "object-lock",
    "ownershipControls", "notification", "uploads", "uploadId", "versions",
    "intelligent-tiering", "analytics", "metrics", "inventory", "policyStatus",
    "legal-hold", "retention", "restore", "select", "torrent", "attributes",
)

# Bucket configuration sub-resources kept as opaque XML: what GET answers when
# nothing was PUT (AWS's default document, or AWS's "not found" error).
GENERIC_BUCKET_SUBRESOURCES = {
    "versioning": ("doc", '<VersioningConfiguration xmlns="%s"/>' % S3NS),
    "accelerate": ("doc", '<AccelerateConfiguration xmlns="%s"/>' % S3NS),
    "requestPayment": ("doc", '<RequestPaymentConfiguration xmlns="%s"><Payer>BucketOwner</Payer>'
                              '</RequestPaymentConfiguration>' % S3NS),
    "logging": ("doc", '<BucketLoggingStatus xmlns="%s"/>' % S3NS),
    "notification": ("doc", '<NotificationConfiguration xmlns="%s"/>' % S3NS),
    # Since January 2023 every new bucket has SSE-S3 (AES256) by default.
    "encryption": ("doc", '<ServerSideEncryptionConfiguration xmlns="%s"><Rule><ApplyServerSideEncryptionByDefault>'
                          '<SSEAlgorithm>AES256</SSEAlgorithm></ApplyServerSideEncryptionByDefault>'
                          '<BucketKeyEnabled>false</BucketKeyEnabled></Rule></ServerSideEncryptionConfiguration>' % S3NS),
    "acl": ("doc", '<AccessControlPolicy xmlns="%s"><Owner><ID>%s</ID><DisplayName>%s</DisplayName></Owner>'
                   '<AccessControlList><Grant><Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
                   'xsi:type="CanonicalUser"><ID>%s</ID><DisplayName>%s</DisplayName></Grantee>'
                   '<Permission>FULL_CONTROL</Permission></Grant></AccessControlList></AccessControlPolicy>'
                   % (S3NS, OWNER_ID, OWNER_NAME, OWNER_ID, OWNER_NAME)),
    "cors": ("missing", 404, "NoSuchCORSConfiguration", "The CORS configuration does not exist"),
    "website": ("missing", 404, "NoSuchWebsiteConfiguration", "The specified bucket does not have a website configuration"),
    "replication": ("missing", 404, "ReplicationConfigurationNotFoundError", "The replication configuration was not found"),
    "object-lock": ("missing", 404, "ObjectLockConfigurationNotFoundError", "Object Lock configuration does not exist for this bucket"),
    "policy": ("missing", 404, "NoSuchBucketPolicy", "The bucket policy does not exist"),
    "publicAccessBlock": ("missing", 404, "NoSuchPublicAccessBlockConfiguration", "The public access block configuration was not found"),
    "ownershipControls": ("missing", 404, "OwnershipControlsNotFoundError", "The bucket ownership controls were not found"),
}

# PUTs for which AWS demands an integrity header (Content-MD5 or, since the
# 2025 SDKs, an x-amz-checksum-* header): requestChecksumRequired in the API
# model. Without it AWS answers 400 InvalidRequest.
CHECKSUM_REQUIRED_PUT = {
    "tagging", "lifecycle", "versioning", "encryption", "publicAccessBlock",
    "policy", "acl", "cors", "website", "logging", "replication",
    "requestPayment", "object-lock", "ownershipControls",
}

LIFECYCLE_STORAGE_CLASSES = {
    "GLACIER", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING",
    "DEEP_ARCHIVE", "GLACIER_IR",
}

MIN_SIZE_HEADER = "x-amz-transition-default-minimum-object-size"
MIN_SIZE_DEFAULT = "all_storage_classes_128K"

BUCKET_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
IPV4_RE = re.compile(r"^\d+\.\d+\.\d+\.\d+$")


class S3Error(Exception):
    def __init__(self, status, code, message, **extra):
        super().__init__(code)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra
        self.headers = {}


def now_utc():
    return dt.datetime.now(dt.timezone.utc)


def iso_ms(ts):
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def http_date(ts):
    return email.utils.formatdate(ts, usegmt=True)


def x(text):
    """XML-escape element text (quotes too, as AWS does in ETags)."""
    return escape(str(text), {'"': "&quot;"})


def local(tag):
    return tag.rsplit("}", 1)[-1]


def child(elem, name):
    for c in elem:
        if local(c.tag) == name:
            return c
    return None


def children(elem, name):
    return [c for c in elem if local(c.tag) == name]


def text_of(elem, name, default=None):
    c = child(elem, name)
    if c is None:
        return default
    return c.text or ""


def parse_xml(body, root_name):
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        raise S3Error(400, "MalformedXML", "The XML you provided was not well-formed or did not "
                      "validate against our published schema")
    if local(root.tag) != root_name:
        raise S3Error(400, "MalformedXML", "The XML you provided was not well-formed or did not "
                      "validate against our published schema")
    return root


_CRC32C_TABLE = []


def crc32c(data):
    if not _CRC32C_TABLE:
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
            _CRC32C_TABLE.append(c)
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC32C_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def aws_quote(raw, safe):
    """AWS URI encoding: unreserved characters (A-Z a-z 0-9 - _ . ~) kept,
    everything else %XX with upper-case hex; `raw` is bytes or str."""
    return quote(raw, safe=safe)


def canonical_uri(raw_path):
    # S3 (unlike other services) encodes the path once and does not normalise
    # it: decode what the client sent, then encode each byte AWS's way.
    return aws_quote(unquote_to_bytes(raw_path or "/"), safe="/") or "/"


def split_query(raw_query):
    """[(name, value, had_equals)] decoded, in request order ('+' is literal)."""
    out = []
    for piece in raw_query.split("&") if raw_query else []:
        if piece == "":
            continue
        name, eq, value = piece.partition("=")
        out.append((unquote(name), unquote(value), bool(eq)))
    return out


def canonical_query(raw_query):
    pairs = []
    for piece in raw_query.split("&") if raw_query else []:
        if piece == "":
            continue
        name, _, value = piece.partition("=")
        pairs.append((aws_quote(unquote_to_bytes(name), safe="-_.~"),
                      aws_quote(unquote_to_bytes(value), safe="-_.~")))
    pairs.sort()
    # A valueless parameter (?tagging) is written "tagging=" like AWS does.
    return "&".join("%s=%s" % p for p in pairs)


def signing_key(secret, date, region, service):
    k = hmac.new(("AWS4" + secret).encode(), date.encode(), hashlib.sha256).digest()
    k = hmac.new(k, region.encode(), hashlib.sha256).digest()
    k = hmac.new(k, service.encode(), hashlib.sha256).digest()
    return hmac.new(k, b"aws4_request", hashlib.sha256).digest()


class Credentials:
    """The primary key (full access) plus optional keys from a JSON file:
    {"KEY": "SECRET", "KEY2": {"secret": "S", "buckets": ["b1", "b2"]}}.
    A key with "buckets" may only touch those buckets. Re-read on change."""

    def __init__(self, access_key, secret_key, path):
        self.primary = {}
        if access_key:
            self.primary[access_key] = {"secret": secret_key, "buckets": None}
        self.path = path
        self.file_entries = {}
        self.file_sig = None
        self.lock = threading.Lock()
        self.reload()

    def reload(self):
        if not self.path:
            return
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self.file_sig is not None:
                log("credentials file %s vanished: its keys are no longer accepted" % self.path)
            self.file_entries, self.file_sig = {}, None
            return
        sig = (st.st_mtime_ns, st.st_size, st.st_ino)
        if sig == self.file_sig:
            return
        try:
            with open(self.path, "r", encoding="utf-8") as f:
                raw = json.load(f)
            entries = {}
            for key, val in raw.items():
                if isinstance(val, str):
                    entries[key] = {"secret": val, "buckets": None}
                elif isinstance(val, dict) and isinstance(val.get("secret"), str):
                    b = val.get("buckets")
                    entries[key] = {"secret": val["secret"], "buckets": set(b) if b is not None else None}
                else:
                    raise ValueError("value for a key must be a secret string or {\"secret\":..}")
        except (OSError, ValueError) as e:
            log("credentials file %s not loaded (%s); keeping %d previous keys"
                % (self.path, e.__class__.__name__, len(self.file_entries)))
            self.file_sig = sig
            return
        self.file_entries, self.file_sig = entries, sig
        log("credentials file %s loaded: %d keys" % (self.path, len(entries)))

    def lookup(self, access_key):
        with self.lock:
            self.reload()
            if access_key in self.primary:
                return self.primary[access_key]
            return self.file_entries.get(access_key)


class Store:
    """All buckets in memory; with --data, persisted one file per bucket
    (DIR/buckets/<name>.json), so that a request costs the same however many
    buckets exist: a change rewrites its own bucket's file only. A state
    file of the older layout (DIR/s3state.json, every bucket in one file,
    rewritten on every change) is read once and converted."""

    def __init__(self, data_dir):
        self.lock = threading.RLock()
        self.buckets = {}
        self.dir = os.path.join(data_dir, "buckets") if data_dir else None
        legacy = os.path.join(data_dir, "s3state.json") if data_dir else None
        if self.dir:
            os.makedirs(self.dir, exist_ok=True)
            for fname in sorted(os.listdir(self.dir)):
                if not fname.endswith(".json"):
                    continue
                with open(os.path.join(self.dir, fname), "r", encoding="utf-8") as f:
                    raw = json.load(f)
                self.buckets[raw["name"]] = self._decode(raw["bucket"])
        if legacy and os.path.exists(legacy):
            with open(legacy, "r", encoding="utf-8") as f:
                raw = json.load(f)
            for name, b in raw.get("buckets", {}).items():
                self.buckets.setdefault(name, self._decode(b))
            self.save_all()
            os.remove(legacy)

    @staticmethod
    def _decode(b):
        for o in b["objects"].values():
            o["data"] = base64.b64decode(o["data"])
        return b

    def _file(self, name):
        # bucket names are [a-z0-9.-]: safe as file names, never "." or ".."
        return os.path.join(self.dir, name + ".json")

    def save(self, name):
        """Persist one bucket (or its removal)."""
        if not self.dir:
            return
        with self.lock:
            b = self.buckets.get(name)
            path = self._file(name)
            if b is None:
                if os.path.exists(path):
                    os.remove(path)
                return
            bb = dict(b)
            bb["objects"] = {k: dict(o, data=base64.b64encode(o["data"]).decode())
                             for k, o in b["objects"].items()}
            tmp = path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump({"name": name, "bucket": bb}, f)
            os.replace(tmp, path)

    def save_all(self):
        """Persist every bucket and drop the files of buckets that are gone."""
        if not self.dir:
            return
        with self.lock:
            for fname in os.listdir(self.dir):
                if fname.endswith(".json") and fname[:-5] not in self.buckets:
                    os.remove(os.path.join(self.dir, fname))
            for name in list(self.buckets):
                self.save(name)


def lifecycle_summary(xml_text):
    """Rules of a stored lifecycle document as JSON for /_admin/state."""
    rules = []
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError:
        return rules
    for r in children(root, "Rule"):
        rule = {"id": text_of(r, "ID"), "status": text_of(r, "Status"), "transitions": [],
                "noncurrent_transitions": []}
        f = child(r, "Filter")
        if f is not None:
            rule["filter_prefix"] = text_of(f, "Prefix", "")
        elif child(r, "Prefix") is not None:
            rule["prefix"] = text_of(r, "Prefix", "")
        for t in children(r, "Transition"):
            d = text_of(t, "Days")
            rule["transitions"].append({"days": int(d) if d and d.isdigit() else None,
                                        "date": text_of(t, "Date"),
                                        "storage_class": text_of(t, "StorageClass")})
        for t in children(r, "NoncurrentVersionTransition"):
            d = text_of(t, "NoncurrentDays")
            rule["noncurrent_transitions"].append({"days": int(d) if d and d.isdigit() else None,
                                                   "storage_class": text_of(t, "StorageClass")})
        e = child(r, "Expiration")
        if e is not None:
            d = text_of(e, "Days")
            rule["expiration_days"] = int(d) if d and d.isdigit() else None
        a = child(r, "AbortIncompleteMultipartUpload")
        if a is not None:
            d = text_of(a, "DaysAfterInitiation")
            rule["abort_incomplete_multipart_days"] = int(d) if d and d.isdigit() else None
        rules.append(rule)
    return rules


LOG_LOCK = threading.Lock()


def log(msg):
    with LOG_LOCK:
        sys.stderr.write("%s s3server: %s\n" % (now_utc().strftime("%Y-%m-%dT%H:%M:%SZ"), msg))
        sys.stderr.flush()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, handler, args):
        super().__init__(addr, handler)
        self.args = args
        self.creds = Credentials(args.access_key, args.secret_key, args.credentials)
        self.store = Store(args.data)
        self.faults = []      # [{"prefix", "method", "status", "code", "count"}]
        self.latency = []     # [{"prefix", "ms"}]
        self.requests = []    # last 1000 requests (no secrets)
        self.admin_lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "AmazonS3"   # what AWS sends

    def version_string(self):
        return self.server_version

    # ---- plumbing -------------------------------------------------------

    def log_message(self, fmt, *args):  # silence http.server's own log lines
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

    def read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        limit = self.server.args.max_body
        if "chunked" in te:
            chunks, total = [], 0
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > limit:
                    raise S3Error(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        if n > limit:
            self.close_connection = True
            raise S3Error(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size")
        return self.rfile.read(n) if n > 0 else b""

    def send(self, status, body=b"", headers=None, content_type="application/xml"):
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.send_response(status)
        self.send_header("x-amz-request-id", self.request_id)
        self.send_header("x-amz-id-2", base64.b64encode(self.request_id.encode()).decode())
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if body or status not in (204, 304):
            if content_type and not any(k.lower() == "content-type" for k in (headers or {})):
                self.send_header("Content-Type", content_type)
        if not any(k.lower() == "content-length" for k in (headers or {})):
            self.send_header("Content-Length", str(len(body)) if status != 204 else "0")
        self.end_headers()
        if self.command != "HEAD" and status != 204:
            self.wfile.write(body)
        self.status = status

    def send_error_xml(self, err, resource):
        body = [XML_DECL, "<Error><Code>%s</Code><Message>%s</Message>" % (x(err.code), x(err.message))]
        for k, v in err.extra.items():
            body.append("<%s>%s</%s>" % (k, x(v), k))
        if "BucketName" not in err.extra and "Resource" not in err.extra:
            body.append("<Resource>%s</Resource>" % x(resource))
        body.append("<RequestId>%s</RequestId><HostId>%s</HostId></Error>"
                    % (self.request_id, base64.b64encode(self.request_id.encode()).decode()))
        # HEAD errors carry no body, as with AWS.
        self.send(err.status, "".join(body) if self.command != "HEAD" else b"", err.headers)

    def dispatch(self):
        self.request_id = uuid.uuid4().hex[:16].upper()
        self.status = 0
        self.access_key = "-"
        self.op = "-"
        started = time.monotonic()
        target = self.path
        if target.startswith("http://") or target.startswith("https://"):
            target = "/" + target.split("/", 3)[3] if target.count("/") >= 3 else "/"
        raw_path, _, raw_query = target.partition("?")
        self.raw_path, self.raw_query = raw_path, raw_query
        try:
            if raw_path.startswith("/_admin/"):
                self.op = "admin"
                self.admin(raw_path, raw_query)
                return
            body = self.read_body()
            self.authenticate(raw_path, raw_query, body)
            self.apply_faults(raw_path)
            self.route(raw_path, raw_query, body)
        except S3Error as e:
            self.send_error_xml(e, unquote(raw_path))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # a bug in the stub: say so, never hang the client
            log("internal error on %s %s: %r" % (self.command, raw_path, e))
            try:
                self.send_error_xml(S3Error(500, "InternalError",
                                            "We encountered an internal error. Please try again."),
                                    unquote(raw_path))
            except OSError:
                pass
        finally:
            self.record(started)

    def record(self, started):
        ms = int((time.monotonic() - started) * 1000)
        q = "&".join(p for p in self.raw_query.split("&")
                     if p and not p.lower().startswith(("x-amz-signature", "x-amz-credential",
                                                        "x-amz-security-token")))
        shown = self.raw_path + ("?" + q if q else "")
        if self.op != "admin":
            entry = {"time": now_utc().strftime("%Y-%m-%dT%H:%M:%SZ"), "method": self.command,
                     "path": self.raw_path, "query": q, "op": self.op, "status": self.status,
                     "access_key": self.access_key,
                     "headers": sorted({k.lower() for k in self.headers.keys()} - {"authorization"}),
                     "ms": ms}
            with self.server.admin_lock:
                self.server.requests.append(entry)
                del self.server.requests[:-1000]
        if not self.server.args.quiet:
            log("%s %s %s %d key=%s op=%s %dms" % (self.client_address[0], self.command, shown,
                                                 self.status, self.access_key, self.op, ms))

    # ---- SigV4 ----------------------------------------------------------

    def authenticate(self, raw_path, raw_query, body):
        hdr = self.headers
        auth = hdr.get("Authorization")
        qnames = {n.lower() for n, _, _ in split_query(raw_query)}
        if not auth:
            if "x-amz-algorithm" in qnames or "x-amz-signature" in qnames:
                raise S3Error(501, "NotImplemented", "Presigned URLs are not implemented by this stub")
            raise S3Error(403, "AccessDenied", "Access Denied")
        scheme, _, rest = auth.strip().partition(" ")
        if scheme == "AWS":
            raise S3Error(400, "InvalidRequest", "The authorization mechanism you have provided is not "
                          "supported. Please use AWS4-HMAC-SHA256.")
        if scheme != "AWS4-HMAC-SHA256":
            raise S3Error(400, "InvalidArgument", "Unsupported Authorization Type",
                          ArgumentName="Authorization", ArgumentValue=scheme)
        fields = {}
        for part in rest.split(","):
            k, eq, v = part.strip().partition("=")
            if eq:
                fields[k.strip()] = v.strip()
        for need in ("Credential", "SignedHeaders", "Signature"):
            if need not in fields:
                raise S3Error(400, "AuthorizationHeaderMalformed",
                              "The authorization header is malformed; missing %s." % need)
        scope = fields["Credential"].split("/")
        if len(scope) != 5 or scope[4] != "aws4_request":
            raise S3Error(400, "AuthorizationHeaderMalformed",
                          "The authorization header is malformed; the Credential is mal-formed; "
                          "expecting \"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\".")
        access_key, scope_date, scope_region, scope_service = scope[:4]
        entry = self.server.creds.lookup(access_key)
        if entry is None:
            raise S3Error(403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist "
                          "in our records.", AWSAccessKeyId=access_key)
        self.access_key = access_key
        self.allowed_buckets = entry["buckets"]
        amz_date = hdr.get("x-amz-date")
        try:
            if amz_date:
                t = dt.datetime.strptime(amz_date.strip(), "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
            elif hdr.get("Date"):
                t = email.utils.parsedate_to_datetime(hdr.get("Date")).astimezone(dt.timezone.utc)
                amz_date = t.strftime("%Y%m%dT%H%M%SZ")
            else:
                raise ValueError
        except (ValueError, TypeError):
            raise S3Error(403, "AccessDenied", "AWS authentication requires a valid Date or x-amz-date header")
        skew = self.server.args.max_skew
        server_now = now_utc()
        if abs((server_now - t).total_seconds()) > skew:
            raise S3Error(403, "RequestTimeTooSkewed", "The difference between the request time and the "
                          "current time is too large.", RequestTime=amz_date.strip(),
                          ServerTime=server_now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                          MaxAllowedSkewMilliseconds=str(skew * 1000))
        amz_date = amz_date.strip()
        if scope_date != amz_date[:8]:
            raise S3Error(400, "AuthorizationHeaderMalformed", "The authorization header is malformed; "
                          "Invalid credential date. Date is not the same as X-Amz-Date.")
        region = self.server.args.region
        if region != "*" and scope_region != region:
            raise S3Error(400, "AuthorizationHeaderMalformed", "The authorization header is malformed; "
                          "the region '%s' is wrong; expecting '%s'" % (scope_region, region), Region=region)
        if scope_service != "s3":
            raise S3Error(400, "AuthorizationHeaderMalformed", "The authorization header is malformed; "
                          "Credential should be scoped to correct service: 's3'.")
        signed = fields["SignedHeaders"].split(";")
        if "host" not in signed:
            raise S3Error(400, "AuthorizationHeaderMalformed", "The authorization header is malformed; "
                          "the Host header must be signed.")
        payload_hash = hdr.get("x-amz-content-sha256")
        if payload_hash is None:
            raise S3Error(400, "InvalidRequest", "Missing required header for this request: x-amz-content-sha256")
        payload_hash = payload_hash.strip()
        if payload_hash.startswith("STREAMING-"):
            raise S3Error(501, "NotImplemented", "aws-chunked (STREAMING-*) payloads are not implemented by this stub")
        if payload_hash != "UNSIGNED-PAYLOAD" and not re.fullmatch(r"[0-9a-f]{64}", payload_hash):
            raise S3Error(400, "InvalidArgument", "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, "
                          "STREAMING-UNSIGNED-PAYLOAD-TRAILER, STREAMING-AWS4-HMAC-SHA256-PAYLOAD, "
                          "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER, or a valid sha256 value.",
                          ArgumentName="x-amz-content-sha256", ArgumentValue=payload_hash)
        lines = []
        for name in signed:
            values = hdr.get_all(name) or []
            lines.append("%s:%s\n" % (name, ",".join(" ".join(v.split()) for v in values)))
        creq = "\n".join([self.command, canonical_uri(raw_path), canonical_query(raw_query),
                          "".join(lines), fields["SignedHeaders"], payload_hash])
        scope_str = "/".join(scope[1:])
        sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope_str,
                         hashlib.sha256(creq.encode("utf-8")).hexdigest()])
        key = signing_key(entry["secret"], scope_date, scope_region, scope_service)
        expected = hmac.new(key, sts.encode("utf-8"), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, fields["Signature"]):
            raise S3Error(403, "SignatureDoesNotMatch", "The request signature we calculated does not match "
                          "the signature you provided. Check your key and signing method.",
                          AWSAccessKeyId=access_key, StringToSign=sts, CanonicalRequest=creq)
        # The signature is checked before the body (AWS streams the body after
        # it has checked the headers), so a body changed in flight with the
        # original signature and hash gives 400 XAmzContentSHA256Mismatch.
        if payload_hash != "UNSIGNED-PAYLOAD":
            actual = hashlib.sha256(body).hexdigest()
            if actual != payload_hash:
                raise S3Error(400, "XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' header "
                              "does not match what was computed.", ClientComputedContentSHA256=payload_hash,
                              S3ComputedContentSHA256=actual)

    def check_integrity(self, body, required):
        hdr = self.headers
        present = False
        md5 = hdr.get("Content-MD5")
        if md5 is not None:
            present = True
            try:
                digest = base64.b64decode(md5.strip(), validate=True)
            except ValueError:
                digest = b""
            if len(digest) != 16:
                raise S3Error(400, "InvalidDigest", "The Content-MD5 you specified was invalid.")
            if digest != hashlib.md5(body).digest():
                raise S3Error(400, "BadDigest", "The Content-MD5 you specified did not match what we received.")
        checks = {
            "x-amz-checksum-crc32": ("CRC32", lambda b: (zlib.crc32(b) & 0xFFFFFFFF).to_bytes(4, "big")),
            "x-amz-checksum-crc32c": ("CRC32C", lambda b: crc32c(b).to_bytes(4, "big")),
            "x-amz-checksum-sha1": ("SHA1", lambda b: hashlib.sha1(b).digest()),
            "x-amz-checksum-sha256": ("SHA256", lambda b: hashlib.sha256(b).digest()),
            "x-amz-checksum-crc64nvme": ("CRC64NVME", None),  # accepted, not verified
        }
        for name, (label, fn) in checks.items():
            v = hdr.get(name)
            if v is None:
                continue
            present = True
            if fn is not None and base64.b64encode(fn(body)).decode() != v.strip():
                raise S3Error(400, "BadDigest", "The %s you specified did not match the calculated checksum."
                              % label)
        if required and not present and self.server.args.require_content_md5:
            raise S3Error(400, "InvalidRequest", "Missing required header for this request: Content-MD5")

    def apply_faults(self, raw_path):
        srv = self.server
        delay = 0
        fault = None
        with srv.admin_lock:
            for lat in srv.latency:
                if raw_path.startswith(lat["prefix"]):
                    delay = max(delay, lat["ms"])
            for f in srv.faults:
                if f["count"] > 0 and raw_path.startswith(f["prefix"]) and f["method"] in ("", self.command):
                    f["count"] -= 1
                    fault = dict(f)
                    break
            srv.faults = [f for f in srv.faults if f["count"] > 0]
        if delay:
            time.sleep(delay / 1000.0)
        if fault:
            err = S3Error(fault["status"], fault["code"], "Injected failure (/_admin/fail)")
            if fault["status"] == 503:
                err.headers["Retry-After"] = "1"
            raise err

    # ---- routing --------------------------------------------------------

    def route(self, raw_path, raw_query, body):
        path = unquote(raw_path)
        parts = path[1:].split("/", 1) if path.startswith("/") else [path]
        bucket = parts[0]
        key = parts[1] if len(parts) > 1 else ""
        q = {}
        for n, v, _ in split_query(raw_query):
            q.setdefault(n, v)
        sub = next((s for s in SUBRESOURCES if s in q), None)
        m = self.command
        if not bucket:
            if m == "GET":
                self.op = "ListBuckets"
                return self.list_buckets()
            raise S3Error(405, "MethodNotAllowed", "The specified method is not allowed against this resource.")
        if self.allowed_buckets is not None and bucket not in self.allowed_buckets:
            raise S3Error(403, "AccessDenied", "Access Denied")
        if key == "":
            return self.bucket_op(m, bucket, sub, q, body)
        return self.object_op(m, bucket, key, sub, q, body)

    def bucket(self, name):
        b = self.server.store.buckets.get(name)
        if b is None:
            raise S3Error(404, "NoSuchBucket", "The specified bucket does not exist", BucketName=name)
        return b

    def bucket_op(self, m, name, sub, q, body):
        st = self.server.store
        with st.lock:
            if sub is None:
                if m == "PUT":
                    self.op = "CreateBucket"
                    return self.create_bucket(name, body)
                if m == "HEAD":
                    self.op = "HeadBucket"
                    self.bucket(name)
                    return self.send(200, b"", {"x-amz-bucket-region": self.bucket_region()})
                if m == "DELETE":
                    self.op = "DeleteBucket"
                    b = self.bucket(name)
                    if b["objects"]:
                        raise S3Error(409, "BucketNotEmpty", "The bucket you tried to delete is not empty",
                                      BucketName=name)
                    del st.buckets[name]
                    st.save(name)
                    return self.send(204)
                if m == "GET":
                    self.op = "ListObjectsV2" if q.get("list-type") == "2" else "ListObjects"
                    return self.list_objects(name, q)
            elif sub == "tagging":
                return self.bucket_tagging(m, name, body)
            elif sub == "lifecycle":
                return self.bucket_lifecycle(m, name, body)
            elif sub == "location" and m == "GET":
                self.op = "GetBucketLocation"
                b = self.bucket(name)
                r = b.get("region", "us-east-1")
                inner = "" if r == "us-east-1" else x(r)
                return self.send(200, '%s<LocationConstraint xmlns="%s">%s</LocationConstraint>'
                                 % (XML_DECL, S3NS, inner))
            elif sub == "versions" and m == "GET":
                self.op = "ListObjectVersions"
                return self.list_versions(name, q)
            elif sub == "delete" and m == "POST":
                self.op = "DeleteObjects"
                return self.delete_objects(name, body)
            elif sub in GENERIC_BUCKET_SUBRESOURCES and m in ("GET", "PUT", "DELETE"):
                return self.bucket_generic(m, name, sub, body)
        raise S3Error(501, "NotImplemented", "A header or query you provided implies functionality "
                      "that is not implemented (by this stub): %s %s" % (m, sub or "bucket"))

    def bucket_region(self):
        r = self.server.args.region
        return "us-east-1" if r == "*" else r

    def create_bucket(self, name, body):
        st = self.server.store
        if not BUCKET_NAME_RE.match(name) or ".." in name or IPV4_RE.match(name) \
                or name.startswith("xn--") or name.endswith("-s3alias"):
            raise S3Error(400, "InvalidBucketName", "The specified bucket is not valid.", BucketName=name)
        region = self.bucket_region()
        constraint = None
        if body.strip():
            root = parse_xml(body, "CreateBucketConfiguration")
            constraint = text_of(root, "LocationConstraint")
        if self.server.args.region != "*":
            if region == "us-east-1":
                if constraint == "us-east-1":
                    raise S3Error(400, "InvalidLocationConstraint", "The specified location-constraint is not valid",
                                  LocationConstraint=constraint)
                if constraint:
                    raise S3Error(400, "IllegalLocationConstraintException", "The %s location constraint is "
                                  "incompatible for the region specific endpoint this request was sent to."
                                  % constraint)
            elif constraint != region:
                raise S3Error(400, "IllegalLocationConstraintException", "The %s location constraint is "
                              "incompatible for the region specific endpoint this request was sent to."
                              % (constraint or "unspecified"))
        elif constraint:
            region = constraint
        if name in st.buckets:
            # AWS answers 409 BucketAlreadyOwnedByYou when the owner creates a
            # bucket it already has -- in every region except us-east-1, where
            # (for legacy compatibility) it answers 200 OK and changes nothing.
            # We follow AWS: 200 in us-east-1 (so create is idempotent there),
            # 409 BucketAlreadyOwnedByYou when started with another --region.
            # All keys belong to one account, so BucketAlreadyExists (another
            # owner) never happens.
            if region == "us-east-1":
                return self.send(200, b"", {"Location": "/" + name})
            raise S3Error(409, "BucketAlreadyOwnedByYou", "Your previous request to create the named bucket "
                          "succeeded and you already own it.", BucketName=name)
        # "location_constraint" records what the request asked for (None: no
        # CreateBucketConfiguration), "region" where the bucket lives.
        st.buckets[name] = {"created": time.time(), "region": region, "location_constraint": constraint,
                            "tags": None, "lifecycle": None, "subresources": {}, "objects": {}}
        st.save(name)
        return self.send(200, b"", {"Location": "/" + name})

    def bucket_tagging(self, m, name, body):
        st = self.server.store
        b = self.bucket(name)
        if m == "GET":
            self.op = "GetBucketTagging"
            if not b["tags"]:
                raise S3Error(404, "NoSuchTagSet", "The TagSet does not exist", BucketName=name)
            tags = "".join("<Tag><Key>%s</Key><Value>%s</Value></Tag>" % (x(k), x(v))
                           for k, v in b["tags"].items())
            return self.send(200, '%s<Tagging xmlns="%s"><TagSet>%s</TagSet></Tagging>' % (XML_DECL, S3NS, tags))
        if m == "PUT":
            self.op = "PutBucketTagging"
            self.check_integrity(body, True)
            root = parse_xml(body, "Tagging")
            tagset = child(root, "TagSet")
            if tagset is None:
                raise S3Error(400, "MalformedXML", "The XML you provided was not well-formed or did not "
                              "validate against our published schema")
            tags = {}
            for t in children(tagset, "Tag"):
                k, v = text_of(t, "Key"), text_of(t, "Value")
                if k is None or v is None:
                    raise S3Error(400, "MalformedXML", "The XML you provided was not well-formed or did not "
                                  "validate against our published schema")
                if k in tags:
                    raise S3Error(400, "InvalidTag", "Cannot provide multiple Tags with the same key",
                                  TagKey=k)
                if not k or len(k) > 128:
                    raise S3Error(400, "InvalidTag", "The TagKey you have provided is invalid", TagKey=k)
                if len(v) > 256:
                    raise S3Error(400, "InvalidTag", "The TagValue you have provided is invalid", TagKey=k)
                if k.lower().startswith("aws:"):
                    raise S3Error(400, "InvalidTag", "System tags cannot be added/updated by requester",
                                  TagKey=k)
                tags[k] = v
            if len(tags) > 50:
                raise S3Error(400, "InvalidTag", "Bucket tag count cannot be greater than 50")
            b["tags"] = tags
            st.save(name)
            return self.send(204)
        if m == "DELETE":
            self.op = "DeleteBucketTagging"
            b["tags"] = None
            st.save(name)
            return self.send(204)
        raise S3Error(405, "MethodNotAllowed", "The specified method is not allowed against this resource.")

    def bucket_lifecycle(self, m, name, body):
        st = self.server.store
        b = self.bucket(name)
        if m == "GET":
            self.op = "GetBucketLifecycleConfiguration"
            if not b["lifecycle"]:
                raise S3Error(404, "NoSuchLifecycleConfiguration", "The lifecycle configuration does not exist",
                              BucketName=name)
            return self.send(200, b["lifecycle"], {MIN_SIZE_HEADER: b.get("lifecycle_min_size", MIN_SIZE_DEFAULT)})
        if m == "PUT":
            self.op = "PutBucketLifecycleConfiguration"
            self.check_integrity(body, True)
            root = parse_xml(body, "LifecycleConfiguration")
            # Since September 2024 AWS takes and echoes this header (the
            # Terraform AWS provider waits until GET echoes what it PUT).
            min_size = (self.headers.get(MIN_SIZE_HEADER) or MIN_SIZE_DEFAULT).strip()
            if min_size not in ("all_storage_classes_128K", "varies_by_storage_class"):
                raise S3Error(400, "InvalidArgument", "Invalid value for %s" % MIN_SIZE_HEADER,
                              ArgumentName=MIN_SIZE_HEADER, ArgumentValue=min_size)
            rules = children(root, "Rule")
            malformed = S3Error(400, "MalformedXML", "The XML you provided was not well-formed or did not "
                                "validate against our published schema")
            if not rules or len(rules) > 1000:
                raise malformed
            ids = set()
            for r in rules:
                if text_of(r, "Status") not in ("Enabled", "Disabled"):
                    raise malformed
                rid = text_of(r, "ID")
                if rid is not None:
                    if len(rid) > 255:
                        raise S3Error(400, "InvalidArgument", "ID length should not exceed allowed limit of 255")
                    if rid in ids:
                        raise S3Error(400, "InvalidArgument", "Rule ID must be unique. Found same ID for "
                                      "more than one rule")
                    ids.add(rid)
                if child(r, "Filter") is None and child(r, "Prefix") is None:
                    raise malformed
                actions = [c for c in r if local(c.tag) in (
                    "Transition", "Expiration", "NoncurrentVersionTransition", "NoncurrentVersionExpiration",
                    "AbortIncompleteMultipartUpload")]
                if not actions:
                    raise S3Error(400, "InvalidRequest", "At least one action needs to be specified in a rule")
                for t in children(r, "Transition") + children(r, "NoncurrentVersionTransition"):
                    sc = text_of(t, "StorageClass")
                    if sc not in LIFECYCLE_STORAGE_CLASSES:
                        raise malformed
                    d = text_of(t, "Days", text_of(t, "NoncurrentDays"))
                    if d is not None:
                        if not d.isdigit():
                            raise malformed
                        if sc in ("STANDARD_IA", "ONEZONE_IA") and int(d) < 30:
                            raise S3Error(400, "InvalidArgument", "'Days' in Transition action must be greater "
                                          "than or equal to 30 for storageClass '%s'" % sc)
            b["lifecycle"] = body.decode("utf-8")
            b["lifecycle_min_size"] = min_size
            st.save(name)
            return self.send(200, b"", {MIN_SIZE_HEADER: min_size})
        if m == "DELETE":
            self.op = "DeleteBucketLifecycle"
            b["lifecycle"] = None
            st.save(name)
            return self.send(204)
        raise S3Error(405, "MethodNotAllowed", "The specified method is not allowed against this resource.")

    def bucket_generic(self, m, name, sub, body):
        st = self.server.store
        b = self.bucket(name)
        opname = "".join(w[0].upper() + w[1:] for w in sub.split("-"))
        if m == "GET":
            self.op = "GetBucket" + opname
            stored = b["subresources"].get(sub)
            if stored is not None:
                return self.send(200, stored)
            kind = GENERIC_BUCKET_SUBRESOURCES[sub]
            if kind[0] == "doc":
                return self.send(200, XML_DECL + kind[1])
            raise S3Error(kind[1], kind[2], kind[3], BucketName=name)
        if m == "PUT":
            self.op = "PutBucket" + opname
            self.check_integrity(body, sub in CHECKSUM_REQUIRED_PUT)
            if sub == "policy":
                try:
                    json.loads(body)
                except ValueError:
                    raise S3Error(400, "MalformedPolicy", "Policies must be valid JSON")
            else:
                try:
                    ET.fromstring(body)
                except ET.ParseError:
                    raise S3Error(400, "MalformedXML", "The XML you provided was not well-formed or did not "
                                  "validate against our published schema")
            b["subresources"][sub] = body.decode("utf-8")
            st.save(name)
            return self.send(204 if sub == "policy" else 200)
        self.op = "DeleteBucket" + opname
        b["subresources"].pop(sub, None)
        st.save(name)
        return self.send(204)

    def list_buckets(self):
        st = self.server.store
        with st.lock:
            names = sorted(n for n in st.buckets
                           if self.allowed_buckets is None or n in self.allowed_buckets)
            items = "".join("<Bucket><Name>%s</Name><CreationDate>%s</CreationDate></Bucket>"
                            % (x(n), iso_ms(st.buckets[n]["created"])) for n in names)
        return self.send(200, '%s<ListAllMyBucketsResult xmlns="%s"><Owner><ID>%s</ID><DisplayName>%s'
                         '</DisplayName></Owner><Buckets>%s</Buckets></ListAllMyBucketsResult>'
                         % (XML_DECL, S3NS, OWNER_ID, OWNER_NAME, items))

    def list_objects(self, name, q):
        b = self.bucket(name)
        v2 = q.get("list-type") == "2"
        prefix = q.get("prefix", "")
        delim = q.get("delimiter", "")
        enc = q.get("encoding-type")
        if enc not in (None, "url"):
            raise S3Error(400, "InvalidArgument", "Invalid Encoding Method specified in Request",
                          ArgumentName="encoding-type", ArgumentValue=enc)
        try:
            max_keys = int(q.get("max-keys", "1000"))
            if max_keys < 0:
                raise ValueError
        except ValueError:
            raise S3Error(400, "InvalidArgument", "Provided max-keys not an integer or within integer range",
                          ArgumentName="max-keys", ArgumentValue=q.get("max-keys"))
        max_keys = min(max_keys, 1000)
        marker, marker_is_cp = "", False
        if v2:
            token = q.get("continuation-token")
            if token is not None:
                try:
                    t = json.loads(base64.urlsafe_b64decode(token.encode() + b"=" * (-len(token) % 4)).decode())
                    marker, marker_is_cp = t["k"], t["cp"]
                except (ValueError, KeyError, TypeError):
                    raise S3Error(400, "InvalidArgument", "The continuation token provided is incorrect",
                                  ArgumentName="continuation-token")
            elif q.get("start-after"):
                marker = q["start-after"]
        else:
            marker = q.get("marker", "")
        contents, cps, truncated, last = [], [], False, None
        for k in sorted(b["objects"]):
            if not k.startswith(prefix) or k <= marker or (marker_is_cp and k.startswith(marker)):
                continue
            item = ("k", k)
            if delim:
                idx = k.find(delim, len(prefix))
                if idx >= 0:
                    cp = k[:idx + len(delim)]
                    if cps and cps[-1] == cp:
                        continue
                    if marker_is_cp and cp == marker:
                        continue
                    item = ("cp", cp)
            if len(contents) + len(cps) >= max_keys:
                truncated = True
                break
            if item[0] == "k":
                contents.append(k)
            else:
                cps.append(item[1])
            last = item

        def e(s):
            return x(quote(s.encode("utf-8"), safe="/") if enc == "url" else s)

        out = [XML_DECL, '<ListBucketResult xmlns="%s"><Name>%s</Name><Prefix>%s</Prefix>' % (S3NS, x(name), e(prefix))]
        if v2:
            out.append("<KeyCount>%d</KeyCount>" % (len(contents) + len(cps)))
            if "continuation-token" in q:
                out.append("<ContinuationToken>%s</ContinuationToken>" % x(q["continuation-token"]))
            if q.get("start-after"):
                out.append("<StartAfter>%s</StartAfter>" % e(q["start-after"]))
        else:
            out.append("<Marker>%s</Marker>" % e(marker))
        out.append("<MaxKeys>%d</MaxKeys>" % max_keys)
        if delim:
            out.append("<Delimiter>%s</Delimiter>" % e(delim))
        if enc:
            out.append("<EncodingType>url</EncodingType>")
        out.append("<IsTruncated>%s</IsTruncated>" % ("true" if truncated else "false"))
        if truncated and last is not None:
            if v2:
                # unpadded URL-safe base64: nothing in it needs URI encoding
                tok = base64.urlsafe_b64encode(json.dumps({"k": last[1], "cp": last[0] == "cp"}).encode()
                                               ).decode().rstrip("=")
                out.append("<NextContinuationToken>%s</NextContinuationToken>" % tok)
            elif delim:
                out.append("<NextMarker>%s</NextMarker>" % e(last[1]))
        for k in contents:
            o = b["objects"][k]
            out.append("<Contents><Key>%s</Key><LastModified>%s</LastModified><ETag>%s</ETag><Size>%d</Size>"
                       % (e(k), iso_ms(o["last_modified"]), x('"%s"' % o["etag"]), len(o["data"])))
            if not v2 or q.get("fetch-owner") == "true":
                out.append("<Owner><ID>%s</ID><DisplayName>%s</DisplayName></Owner>" % (OWNER_ID, OWNER_NAME))
            out.append("<StorageClass>STANDARD</StorageClass></Contents>")
        for cp in cps:
            out.append("<CommonPrefixes><Prefix>%s</Prefix></CommonPrefixes>" % e(cp))
        out.append("</ListBucketResult>")
        return self.send(200, "".join(out))

    def list_versions(self, name, q):
        """ListObjectVersions. Objects are not versioned here (PutBucketVersioning
        is stored, not acted on): each object is its one version, VersionId
        "null", as on a bucket whose versioning was never enabled."""
        b = self.bucket(name)
        prefix = q.get("prefix", "")
        enc = q.get("encoding-type")
        try:
            max_keys = min(max(int(q.get("max-keys", "1000")), 0), 1000)
        except ValueError:
            raise S3Error(400, "InvalidArgument", "Provided max-keys not an integer or within integer range")
        marker = q.get("key-marker", "")
        keys = [k for k in sorted(b["objects"]) if k.startswith(prefix) and k > marker]
        page, truncated = keys[:max_keys], len(keys) > max_keys

        def e(s):
            return x(quote(s.encode("utf-8"), safe="/") if enc == "url" else s)

        out = [XML_DECL, '<ListVersionsResult xmlns="%s"><Name>%s</Name><Prefix>%s</Prefix><KeyMarker>%s</KeyMarker>'
               '<VersionIdMarker></VersionIdMarker><MaxKeys>%d</MaxKeys>' % (S3NS, x(name), e(prefix), e(marker), max_keys)]
        if enc:
            out.append("<EncodingType>url</EncodingType>")
        out.append("<IsTruncated>%s</IsTruncated>" % ("true" if truncated else "false"))
        if truncated and page:
            out.append("<NextKeyMarker>%s</NextKeyMarker><NextVersionIdMarker>null</NextVersionIdMarker>" % e(page[-1]))
        for k in page:
            o = b["objects"][k]
            out.append("<Version><Key>%s</Key><VersionId>null</VersionId><IsLatest>true</IsLatest>"
                       "<LastModified>%s</LastModified><ETag>%s</ETag><Size>%d</Size><Owner><ID>%s</ID>"
                       "<DisplayName>%s</DisplayName></Owner><StorageClass>STANDARD</StorageClass></Version>"
                       % (e(k), iso_ms(o["last_modified"]), x('"%s"' % o["etag"]), len(o["data"]),
                          OWNER_ID, OWNER_NAME))
        out.append("</ListVersionsResult>")
        return self.send(200, "".join(out))

    def delete_objects(self, name, body):
        st = self.server.store
        b = self.bucket(name)
        self.check_integrity(body, True)
        root = parse_xml(body, "Delete")
        objs = children(root, "Object")
        if len(objs) > 1000:
            raise S3Error(400, "MalformedXML", "The XML you provided was not well-formed or did not "
                          "validate against our published schema")
        quiet = (text_of(root, "Quiet", "false") or "").strip().lower() == "true"
        out = [XML_DECL, '<DeleteResult xmlns="%s">' % S3NS]
        for o in objs:
            k = text_of(o, "Key")
            if k is None:
                raise S3Error(400, "MalformedXML", "The XML you provided was not well-formed or did not "
                              "validate against our published schema")
            vid = text_of(o, "VersionId")
            if vid not in (None, "null"):
                out.append("<Error><Key>%s</Key><VersionId>%s</VersionId><Code>NoSuchVersion</Code><Message>The "
                           "specified version does not exist.</Message></Error>" % (x(k), x(vid)))
                continue
            b["objects"].pop(k, None)
            if not quiet:
                out.append("<Deleted><Key>%s</Key>%s</Deleted>"
                           % (x(k), "<VersionId>null</VersionId>" if vid else ""))
        out.append("</DeleteResult>")
        st.save(name)
        return self.send(200, "".join(out))

    def object_op(self, m, name, key, sub, q, body):
        st = self.server.store
        if len(key.encode("utf-8")) > 1024:
            raise S3Error(400, "KeyTooLongError", "Your key is too long")
        if sub is not None or (m == "PUT" and self.headers.get("x-amz-copy-source")):
            raise S3Error(501, "NotImplemented", "A header or query you provided implies functionality "
                          "that is not implemented (by this stub): %s object %s"
                          % (m, sub or "copy"))
        vid = q.get("versionId")
        if vid is not None and vid != "null":
            raise S3Error(400, "InvalidArgument", "Invalid version id specified",
                          ArgumentName="versionId", ArgumentValue=vid)
        with st.lock:
            b = self.bucket(name)
            if m == "PUT":
                self.op = "PutObject"
                self.check_integrity(body, False)
                meta = {k.lower(): v for k, v in self.headers.items() if k.lower().startswith("x-amz-meta-")}
                etag = hashlib.md5(body).hexdigest()
                b["objects"][key] = {"data": body, "etag": etag, "last_modified": time.time(),
                                     "content_type": self.headers.get("Content-Type") or "binary/octet-stream",
                                     "metadata": meta}
                st.save(name)
                return self.send(200, b"", {"ETag": '"%s"' % etag})
            if m == "DELETE":
                self.op = "DeleteObject"
                if b["objects"].pop(key, None) is not None:
                    st.save(name)
                return self.send(204)
            if m in ("GET", "HEAD"):
                self.op = "GetObject" if m == "GET" else "HeadObject"
                o = b["objects"].get(key)
                if o is None:
                    raise S3Error(404, "NoSuchKey", "The specified key does not exist.", Key=key)
                data = o["data"]
                headers = {"ETag": '"%s"' % o["etag"], "Last-Modified": http_date(o["last_modified"]),
                           "Content-Type": o["content_type"], "Accept-Ranges": "bytes"}
                headers.update(o.get("metadata", {}))
                status = 200
                rng = self.headers.get("Range")
                mr = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", rng or "")
                if mr and (mr.group(1) or mr.group(2)):
                    size = len(data)
                    if mr.group(1):
                        start = int(mr.group(1))
                        end = min(int(mr.group(2)), size - 1) if mr.group(2) else size - 1
                    else:
                        start, end = max(size - int(mr.group(2)), 0), size - 1
                    if start >= size or start > end:
                        err = S3Error(416, "InvalidRange", "The requested range is not satisfiable",
                                      RangeRequested=rng, ActualObjectSize=str(size))
                        raise err
                    data = data[start:end + 1]
                    headers["Content-Range"] = "bytes %d-%d/%d" % (start, end, size)
                    status = 206
                headers["Content-Length"] = str(len(data))
                return self.send(status, data if m == "GET" else b"", headers)
        raise S3Error(405, "MethodNotAllowed", "The specified method is not allowed against this resource.")

    # ---- admin ----------------------------------------------------------

    def admin_reply(self, status, obj):
        self.send(status, json.dumps(obj, indent=1, sort_keys=True) + "\n", content_type="application/json")

    def admin(self, raw_path, raw_query):
        srv, st = self.server, self.server.store
        self.read_body()
        q = {n: v for n, v, _ in split_query(raw_query)}
        action = raw_path[len("/_admin/"):]
        m = self.command

        def need(*names):
            miss = [n for n in names if not q.get(n)]
            if miss:
                raise AdminError(400, "missing query parameter(s): " + ", ".join(miss))

        try:
            if action == "health" and m in ("GET", "HEAD"):
                return self.admin_reply(200, {"ok": True})
            if action == "state" and m == "GET":
                with st.lock:
                    out = {"region": self.bucket_region(), "buckets": {}}
                    for name, b in sorted(st.buckets.items()):
                        out["buckets"][name] = {
                            "created": iso_ms(b["created"]), "region": b.get("region"),
                            "location_constraint": b.get("location_constraint"),
                            "tags": b["tags"], "lifecycle": b["lifecycle"],
                            "lifecycle_rules": lifecycle_summary(b["lifecycle"]) if b["lifecycle"] else None,
                            "subresources": {k: v for k, v in sorted(b["subresources"].items())},
                            "objects": {k: {"size": len(o["data"]), "etag": o["etag"],
                                            "content_type": o["content_type"],
                                            "last_modified": iso_ms(o["last_modified"])}
                                        for k, o in sorted(b["objects"].items())}}
                return self.admin_reply(200, out)
            if action == "requests" and m == "GET":
                with srv.admin_lock:
                    return self.admin_reply(200, {"requests": list(srv.requests)})
            if m != "POST":
                raise AdminError(404, "no such admin endpoint: %s %s" % (m, raw_path))
            if action == "reset":
                with st.lock:
                    st.buckets.clear()
                    st.save_all()
                with srv.admin_lock:
                    srv.faults, srv.latency, srv.requests = [], [], []
                return self.admin_reply(200, {"ok": True})
            if action in ("untag", "tag", "delete-lifecycle", "delete-bucket", "create-bucket", "delete-object",
                          "misplace"):
                need("bucket")
                with st.lock:
                    name = q["bucket"]
                    if action == "create-bucket":
                        st.buckets.setdefault(name, {"created": time.time(), "region": self.bucket_region(),
                                                     "tags": None, "lifecycle": None, "subresources": {},
                                                     "objects": {}})
                        st.save(name)
                        return self.admin_reply(200, {"ok": True, "bucket": name})
                    b = st.buckets.get(name)
                    if b is None:
                        raise AdminError(404, "no such bucket: %s" % name)
                    if action == "untag":
                        need("key")
                        tags = dict(b["tags"] or {})
                        if q["key"] not in tags:
                            raise AdminError(404, "bucket %s has no tag %s" % (name, q["key"]))
                        del tags[q["key"]]
                        b["tags"] = tags or None
                    elif action == "tag":
                        need("key")
                        tags = dict(b["tags"] or {})
                        tags[q["key"]] = q.get("value", "")
                        b["tags"] = tags
                    elif action == "delete-lifecycle":
                        b["lifecycle"] = None
                    elif action == "misplace":
                        # The bucket now lives elsewhere than it was created
                        # (what a residency check must notice).
                        need("region")
                        b["region"] = q["region"]
                    elif action == "delete-object":
                        need("key")
                        b["objects"].pop(q["key"], None)
                    elif action == "delete-bucket":
                        del st.buckets[name]   # even when not empty
                    st.save(name)
                    return self.admin_reply(200, {"ok": True, "bucket": name,
                                                  "tags": b["tags"] if action in ("untag", "tag") else None})
            if action == "fail":
                need("status")
                status = int(q["status"])
                code = q.get("code") or {500: "InternalError", 503: "SlowDown", 403: "AccessDenied",
                                         404: "NoSuchBucket"}.get(status, "InjectedFailure")
                with srv.admin_lock:
                    srv.faults.append({"prefix": q.get("path", "/"), "method": q.get("method", "").upper(),
                                       "status": status, "code": code, "count": int(q.get("count", "1"))})
                    return self.admin_reply(200, {"ok": True, "faults": srv.faults})
            if action == "latency":
                need("ms")
                prefix, ms = q.get("path", "/"), int(q["ms"])
                with srv.admin_lock:
                    srv.latency = [lat for lat in srv.latency if lat["prefix"] != prefix]
                    if ms > 0:
                        srv.latency.append({"prefix": prefix, "ms": ms})
                    return self.admin_reply(200, {"ok": True, "latency": srv.latency})
            raise AdminError(404, "no such admin endpoint: %s %s" % (m, raw_path))
        except AdminError as e:
            return self.admin_reply(e.status, {"error": e.message})
        except ValueError as e:
            return self.admin_reply(400, {"error": "bad parameter: %s" % e})


class AdminError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def main():
    ap = argparse.ArgumentParser(
        description="S3-compatible test server (path-style, SigV4-verifying) on 127.0.0.1.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""admin endpoints (unsigned; JSON answers):
  GET  /_admin/health                      {"ok": true}
  GET  /_admin/state                       buckets: region, tags, lifecycle (XML and
                                           parsed rules), sub-resources, object keys
  GET  /_admin/requests                    last 1000 S3 requests: method, path, query,
                                           op, status, access_key, header names
  POST /_admin/reset                       drop all buckets, faults, latency, log
  POST /_admin/untag?bucket=B&key=K        remove one tag
  POST /_admin/tag?bucket=B&key=K&value=V  set one tag (e.g. a wrong value)
  POST /_admin/delete-lifecycle?bucket=B   remove the lifecycle configuration
  POST /_admin/create-bucket?bucket=B      create a bucket behind the worker's back
  POST /_admin/delete-bucket?bucket=B      delete a bucket even when not empty
  POST /_admin/delete-object?bucket=B&key=K
  POST /_admin/misplace?bucket=B&region=R  the bucket now lives in region R (GetBucketLocation
                                           answers R; a residency check must notice)
  POST /_admin/fail?path=PREFIX&status=503&count=N[&method=PUT][&code=SlowDown]
                                           the next N signed requests whose path
                                           starts with PREFIX fail with that status
  POST /_admin/latency?path=PREFIX&ms=N    delay matching requests (ms=0 clears)
""")
    ap.add_argument("--port", type=int, default=int(os.environ.get("S3_PORT", "0")),
                    help="TCP port on 127.0.0.1; 0 picks a free one (default: env S3_PORT or 0)")
    ap.add_argument("--bind", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1; tests that run hosts in network"
                         " namespaces give the address of their own bridge)")
    ap.add_argument("--port-file", help="write the port number to this file once listening")
    ap.add_argument("--pid-file", help="write this process's PID to this file")
    ap.add_argument("--access-key", default=os.environ.get("S3_ACCESS_KEY"),
                    help="access key with full access (default: env S3_ACCESS_KEY)")
    ap.add_argument("--secret-key", default=os.environ.get("S3_SECRET_KEY"),
                    help="its secret (default: env S3_SECRET_KEY)")
    ap.add_argument("--credentials", help='JSON file of more keys, re-read on change: '
                    '{"KEY": "SECRET", "KEY2": {"secret": "S", "buckets": ["only-this-bucket"]}}')
    ap.add_argument("--region", default=os.environ.get("S3_REGION", "us-east-1"),
                    help="region the signature scope must name (default us-east-1; '*' accepts any)")
    ap.add_argument("--data", help="directory to persist state in (one file per bucket in DIR/buckets/); memory only without")
    ap.add_argument("--max-skew", type=int, default=900, help="allowed clock skew in seconds (default 900)")
    ap.add_argument("--max-body", type=int, default=64 << 20, help="largest request body in bytes")
    ap.add_argument("--no-require-content-md5", dest="require_content_md5", action="store_false",
                    help="accept PutBucketTagging/Lifecycle/DeleteObjects without Content-MD5 "
                    "(AWS requires it or an x-amz-checksum-* header)")
    ap.add_argument("--lifetime", type=float, default=0,
                    help="exit by itself after this many seconds (0: run until SIGTERM/SIGINT)")
    ap.add_argument("--quiet", action="store_true", help="no per-request log lines")
    args = ap.parse_args()

    if bool(args.access_key) != bool(args.secret_key):
        ap.error("--access-key and --secret-key go together")
    if not args.access_key and not args.credentials:
        ap.error("no credentials: give --access-key/--secret-key (or env S3_ACCESS_KEY/S3_SECRET_KEY) "
                 "or --credentials FILE")
    if args.data:
        os.makedirs(args.data, exist_ok=True)

    srv = Server((args.bind, args.port), Handler, args)
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
    log("listening on %s:%d (region %s, data %s)" % (args.bind, port, args.region, args.data or "memory"))
    stop.wait(args.lifetime if args.lifetime > 0 else None)
    srv.shutdown()
    srv.server_close()
    srv.store.save_all()
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

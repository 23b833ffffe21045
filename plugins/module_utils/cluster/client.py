"""The etcd v3 client: one cluster reached through its JSON gateway, with failover.

etcd serves its v3 API as JSON on the client port (``/v3/kv/range``, ``/v3/kv/txn``,
``/v3/lease/grant``, ``/v3/watch``...; keys and values base64, 64-bit integers as
strings, fields at their default value omitted). This client speaks it with the
standard library only (``http.client``, ``ssl``, ``json``, ``base64``), so a managed
host needs no extra package and the import costs nothing beyond the stdlib.

Failover: requests go to the endpoint that answered last; an endpoint that cannot be
reached, or answers "no leader"/"timed out", is skipped for the next, round and round
until ``retry_for`` seconds have passed. A request that reached an endpoint can have been
committed even when its answer is lost: reads are simply retried, a write then raises
CommitUnknownError and the caller finds out by reading (see ``ipam.py``'s tokens).
"""
import base64
import collections
import http.client
import json
import os
import ssl
import time
import urllib.parse

from ..errors import CnmError, ValidationError

DEFAULT_TIMEOUT = 5.0          # seconds for one request on one endpoint
DEFAULT_CONNECT_TIMEOUT = 3.0  # seconds to open a connection to one endpoint (busy hosts)
DEFAULT_RETRY_FOR = 30.0       # seconds a request keeps trying the endpoints

# gRPC codes (in the gateway's error body) after which another endpoint may answer.
# (canceled, deadline exceeded, resource exhausted, aborted, internal, unavailable)
_RETRY_CODES = {1, 4, 8, 10, 13, 14}
_UNAUTHENTICATED = 16


class ClusterStoreError(CnmError):
    """The cluster store refused a request or answered something unexpected."""


class ClusterUnavailableError(ClusterStoreError):
    """No endpoint of the cluster store answered within the time allowed."""


class CommitUnknownError(ClusterStoreError):
    """A write reached the cluster but its answer was lost: it may have committed."""


class CompactedError(ClusterStoreError):
    """A watch asked for a revision the cluster has compacted away."""


KeyValue = collections.namedtuple(
    "KeyValue", "key value create_revision mod_revision version lease")
TxnResult = collections.namedtuple("TxnResult", "succeeded revision responses")
WatchEvent = collections.namedtuple("WatchEvent", "type kv prev_kv revision")


class StoreConfig:
    """Validated connection settings: endpoints, TLS files, credentials, timeouts."""

    def __init__(self, endpoints, ca=None, cert=None, key=None, username=None,
                 password=None, timeout=DEFAULT_TIMEOUT,
                 connect_timeout=DEFAULT_CONNECT_TIMEOUT, retry_for=DEFAULT_RETRY_FOR):
        self.endpoints = list(endpoints)
        self.ca, self.cert, self.key = ca, cert, key
        self.username, self.password = username, password
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.retry_for = retry_for


def _check_file(path, field):
    if not isinstance(path, str) or not path.strip():
        raise ValidationError("%r is not a file path" % (path,), field=field)
    if not os.path.isfile(path):
        raise ValidationError("file %s does not exist" % path, field=field)
    if not os.access(path, os.R_OK):
        raise ValidationError("file %s is not readable" % path, field=field)
    return path


def parse_store_options(cluster_store, cluster_store_tls=None, cluster_store_auth=None,
                        **timeouts):
    """Validate the ``cluster_store*`` options into a StoreConfig.

    Called before anything touches the cluster (only when a global-scope network is
    involved). ``cluster_store`` is a list of URLs (or one comma-separated string) like
    ``http://10.0.0.5:2379``; ``cluster_store_tls`` a dict ``{ca, cert, key}`` (files
    must exist; ``cert`` and ``key`` go together); ``cluster_store_auth`` a dict
    ``{username, password}``. ``timeouts`` may set ``timeout``, ``connect_timeout``,
    ``retry_for`` (seconds).

    Raises ValidationError naming the field (``cluster_store[1]``,
    ``cluster_store_tls.ca``, ``cluster_store_auth.password``...) and the reason.
    """
    if isinstance(cluster_store, str):
        cluster_store = [e for e in cluster_store.split(",") if e.strip()]
    if not cluster_store:
        raise ValidationError("no etcd endpoint given (a list like "
                              "['http://10.0.0.5:2379'])", field="cluster_store")
    tls = dict(cluster_store_tls or {})
    endpoints = []
    for index, raw in enumerate(cluster_store):
        field = "cluster_store[%d]" % index
        url = urllib.parse.urlsplit(str(raw).strip())
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValidationError("%r is not an http:// or https:// URL" % (raw,), field=field)
        try:
            port = url.port or 2379
        except ValueError:
            raise ValidationError("%r has a bad port" % (raw,), field=field)
        if url.path not in ("", "/") or url.query:
            raise ValidationError("%r: give scheme://host:port only" % (raw,), field=field)
        if tls and url.scheme != "https":
            raise ValidationError("%s uses http but cluster_store_tls is set: use https://"
                                  % raw, field=field)
        endpoints.append("%s://%s:%d" % (url.scheme, _bracket(url.hostname), port))
    unknown = sorted(set(tls) - {"ca", "cert", "key"})
    if unknown:
        raise ValidationError("unknown key(s) %s (allowed: ca, cert, key)"
                              % ", ".join(unknown), field="cluster_store_tls")
    for name in ("ca", "cert", "key"):
        if tls.get(name) is not None:
            _check_file(tls[name], "cluster_store_tls.%s" % name)
    if bool(tls.get("cert")) != bool(tls.get("key")):
        missing = "key" if tls.get("cert") else "cert"
        raise ValidationError("cert and key go together", field="cluster_store_tls." + missing)
    auth = dict(cluster_store_auth or {})
    unknown = sorted(set(auth) - {"username", "password"})
    if unknown:
        raise ValidationError("unknown key(s) %s (allowed: username, password)"
                              % ", ".join(unknown), field="cluster_store_auth")
    if auth and not auth.get("username"):
        raise ValidationError("username is required", field="cluster_store_auth.username")
    if auth and auth.get("password") is None:
        raise ValidationError("password is required", field="cluster_store_auth.password")
    return StoreConfig(endpoints, ca=tls.get("ca"), cert=tls.get("cert"), key=tls.get("key"),
                       username=auth.get("username"), password=auth.get("password"),
                       **timeouts)


def _bracket(hostname):
    return "[%s]" % hostname if ":" in hostname else hostname


def b64(data):
    """Base64 text of ``data`` (str is UTF-8 encoded) as the JSON gateway wants it."""
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode("ascii")


def prefix_end(prefix):
    """The ``range_end`` that makes a range cover every key starting with ``prefix``."""
    raw = bytearray(prefix.encode() if isinstance(prefix, str) else prefix)
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return bytes(raw)
        raw.pop()
    return b"\0"


# --- request builders (plain dicts in the gateway's JSON shape) -------------------------
_TARGET_FIELD = {"VERSION": "version", "CREATE": "create_revision",
                 "MOD": "mod_revision", "VALUE": "value", "LEASE": "lease"}
_RESULTS = {"==": "EQUAL", "!=": "NOT_EQUAL", ">": "GREATER", "<": "LESS"}


def compare(key, target, op, operand, prefix=False):
    """One txn comparison: ``compare(k, "CREATE", "==", 0)`` (absent key),
    ``compare(k, "MOD", "==", rev)``, ``compare(k, "VALUE", "==", b"...")``.

    ``prefix=True`` compares every key under ``key`` (true when none exists). Raises
    ValueError for an unknown target or operator.
    """
    field = _TARGET_FIELD[target]
    body = {"key": b64(key), "target": target, "result": _RESULTS[op]}
    body[field] = b64(operand) if target == "VALUE" else str(int(operand))
    if prefix:
        body["range_end"] = b64(prefix_end(key))
    return body


def op_put(key, value, lease=None):
    """A txn put of ``value`` (bytes, str, or anything JSON-serialisable)."""
    if not isinstance(value, (bytes, str)):
        value = encode_json(value)
    body = {"key": b64(key), "value": b64(value)}
    if lease:
        body["lease"] = str(int(lease))
    return {"request_put": body}


def op_get(key, prefix=False, keys_only=False):
    """A txn range read of one key, or of every key under ``key`` with ``prefix``."""
    body = {"key": b64(key)}
    if prefix:
        body["range_end"] = b64(prefix_end(key))
    if keys_only:
        body["keys_only"] = True
    return {"request_range": body}


def op_delete(key, prefix=False):
    """A txn delete of one key, or of every key under ``key`` with ``prefix``."""
    body = {"key": b64(key)}
    if prefix:
        body["range_end"] = b64(prefix_end(key))
    return {"request_delete_range": body}


def encode_json(value):
    """Canonical JSON bytes (sorted keys, no spaces): equal values encode equally, so a
    txn can compare a stored value with ``VALUE ==``."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _kv(raw):
    return KeyValue(
        key=base64.b64decode(raw.get("key", "")).decode(),
        value=base64.b64decode(raw.get("value", "")),
        create_revision=int(raw.get("create_revision", 0)),
        mod_revision=int(raw.get("mod_revision", 0)),
        version=int(raw.get("version", 0)),
        lease=int(raw.get("lease", 0)))


def range_kvs(response):
    """The KeyValues of one ``response_range`` of a txn result (``[]`` when none)."""
    body = response.get("response_range") or {}
    return [_kv(raw) for raw in body.get("kvs", [])]


class _Unreachable(Exception):
    """The request never left this host (connect failed): safe to send elsewhere."""


class _Lost(Exception):
    """The request was sent but no usable answer came back."""


class EtcdClient:
    """Requests to one etcd cluster, failing over across its endpoints.

    Not thread-safe (one persistent connection per endpoint); make one per thread or
    process. ``close()`` drops the connections.
    """

    def __init__(self, config):
        """Keep ``config`` (a StoreConfig); connects lazily on the first request."""
        self.config = config
        self._conns = {}
        self._preferred = 0
        self._token = None
        self._ssl = None
        if any(e.startswith("https://") for e in config.endpoints):
            self._ssl = ssl.create_default_context(cafile=config.ca)
            if config.cert:
                self._ssl.load_cert_chain(config.cert, config.key)

    # --- transport --------------------------------------------------------------------
    def close(self):
        """Close every open connection. Safe to call twice."""
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()

    def _connection(self, endpoint, timeout):
        conn = self._conns.get(endpoint)
        if conn is not None and conn.sock is None:   # closed by the server's answer
            self._drop(endpoint)
            conn = None
        if conn is None:
            url = urllib.parse.urlsplit(endpoint)
            if url.scheme == "https":
                conn = http.client.HTTPSConnection(url.hostname, url.port, context=self._ssl,
                                                   timeout=self.config.connect_timeout)
            else:
                conn = http.client.HTTPConnection(url.hostname, url.port,
                                                  timeout=self.config.connect_timeout)
            try:
                conn.connect()
            except (OSError, ssl.SSLError) as err:
                conn.close()
                raise _Unreachable(_reason(err))
            self._conns[endpoint] = conn
        conn.sock.settimeout(timeout)
        return conn

    def _drop(self, endpoint):
        conn = self._conns.pop(endpoint, None)
        if conn is not None:
            conn.close()

    def _send(self, endpoint, path, body, timeout, stream=False):
        """POST ``body`` to one endpoint; returns the decoded JSON (or the open response
        with ``stream``). Raises _Unreachable, _Lost, or ClusterStoreError (an answer
        that is an error another endpoint would give too)."""
        conn = self._connection(endpoint, timeout)
        headers = {"Content-Type": "application/json"}
        if self._token and not path.startswith("/v3/auth/authenticate"):
            headers["Authorization"] = self._token
        try:
            conn.request("POST", path, body=json.dumps(body), headers=headers)
            response = conn.getresponse()
            if stream and response.status == 200:
                return response
            data = response.read()
        except (OSError, http.client.HTTPException, ssl.SSLError) as err:
            self._drop(endpoint)
            if isinstance(err, (ConnectionRefusedError, BrokenPipeError)):
                raise _Unreachable(_reason(err))  # a dead keep-alive connection
            raise _Lost(_reason(err))
        try:
            answer = json.loads(data.decode() or "{}")
        except ValueError:
            self._drop(endpoint)
            text = data.decode(errors="replace").strip()[:200]
            if 400 <= response.status < 500:
                raise ClusterStoreError("etcd %s refused %s (HTTP %d): %s" % (
                    endpoint, path, response.status, text))
            raise _Lost("HTTP %d: %s" % (response.status, text))
        if response.status == 200 and "error" not in answer:
            return answer
        code = answer.get("code")
        message = answer.get("message") or answer.get("error") or "HTTP %d" % response.status
        if code == _UNAUTHENTICATED or "invalid auth token" in message:
            raise _AuthExpired(message)
        if code in _RETRY_CODES or response.status >= 500:
            raise _Lost(message)
        raise ClusterStoreError("etcd %s refused %s: %s" % (endpoint, path, message))

    def _call(self, path, body, write=False, stream=False, timeout=None):
        """Send ``body`` to ``path``, failing over across endpoints until ``retry_for``.

        A read whose answer is lost is sent again; a write whose answer is lost raises
        CommitUnknownError at once (it may have committed). Raises
        ClusterUnavailableError naming every endpoint tried and why it failed.
        """
        endpoints = self.config.endpoints
        deadline = time.monotonic() + self.config.retry_for
        timeout = timeout or self.config.timeout
        reasons = {}
        authenticated_again = False
        rounds = 0
        while True:
            for step in range(len(endpoints)):
                index = (self._preferred + step) % len(endpoints)
                endpoint = endpoints[index]
                try:
                    if self.config.username and self._token is None:
                        self._authenticate(endpoint, timeout)
                    answer = self._send(endpoint, path, body, timeout, stream)
                except _Unreachable as err:
                    reasons[endpoint] = str(err)
                    continue
                except _AuthExpired as err:
                    if authenticated_again or not self.config.username:
                        raise ClusterStoreError("etcd %s refused the credentials of "
                                                "cluster_store_auth: %s" % (endpoint, err))
                    self._token, authenticated_again = None, True
                    reasons[endpoint] = str(err)
                    continue
                except _Lost as err:
                    if write:
                        self._preferred = (index + 1) % len(endpoints)
                        raise CommitUnknownError(
                            "etcd %s: no answer to a write (%s); it may have committed"
                            % (endpoint, err))
                    reasons[endpoint] = str(err)
                    continue
                self._preferred = index
                return answer
            rounds += 1
            if time.monotonic() >= deadline:
                raise ClusterUnavailableError(
                    "no etcd endpoint answered: tried %s for %.0f s (%s)" % (
                        ", ".join(endpoints), self.config.retry_for,
                        "; ".join("%s: %s" % (e, reasons.get(e, "not tried"))
                                  for e in endpoints)), field="cluster_store")
            time.sleep(min(0.05 * rounds, 0.5, max(0.0, deadline - time.monotonic())))

    def _authenticate(self, endpoint, timeout):
        try:
            answer = self._send(endpoint, "/v3/auth/authenticate",
                                {"name": self.config.username,
                                 "password": self.config.password}, timeout)
        except ClusterStoreError as err:
            raise ClusterStoreError("etcd %s refused user %s: %s" % (
                endpoint, self.config.username, err.message.rsplit(": ", 1)[-1]),
                field="cluster_store_auth")
        self._token = answer.get("token")
        if not self._token:
            raise ClusterStoreError("etcd %s gave no auth token" % endpoint,
                                    field="cluster_store_auth")

    # --- key-value --------------------------------------------------------------------
    def get(self, key):
        """The KeyValue of ``key`` (linearizable read), or None when it does not exist.
        Raises ClusterUnavailableError, ClusterStoreError."""
        kvs, dummy = self.range(key)
        return kvs[0] if kvs else None

    def range(self, key, prefix=False, keys_only=False, revision=None):
        """Read ``key`` (or every key under it with ``prefix``), linearizable, in key
        order; returns ``(kvs, revision)`` with the store's revision at the read.
        ``revision`` reads an older state. Raises ClusterUnavailableError,
        ClusterStoreError (CompactedError when ``revision`` is compacted away)."""
        body = op_get(key, prefix, keys_only)["request_range"]
        if revision:
            body["revision"] = str(int(revision))
        try:
            answer = self._call("/v3/kv/range", body)
        except ClusterStoreError as err:
            if "compacted" in str(err):
                raise CompactedError(str(err))
            raise
        return ([_kv(raw) for raw in answer.get("kvs", [])],
                int(answer.get("header", {}).get("revision", 0)))

    def txn(self, compares, success, failure=()):
        """Run one transaction: if every comparison holds, the ``success`` ops, else the
        ``failure`` ops, atomically. Returns a TxnResult (``responses`` as the gateway
        gives them; read them with ``range_kvs``).

        Raises CommitUnknownError when the answer was lost after the request reached an
        endpoint (the caller must read to find out), ClusterUnavailableError when no
        endpoint took it, ClusterStoreError when etcd refused it.
        """
        writes = any("request_range" not in op for op in list(success) + list(failure))
        answer = self._call("/v3/kv/txn", {"compare": list(compares),
                                           "success": list(success),
                                           "failure": list(failure)}, write=writes)
        return TxnResult(bool(answer.get("succeeded", False)),
                         int(answer.get("header", {}).get("revision", 0)),
                         answer.get("responses", []))

    def snapshot(self, *reads):
        """Several reads (``op_get`` dicts) at one revision, as one read-only txn.
        Returns ``(list of kv lists, revision)``. Raises as ``range``."""
        result = self.txn([], reads)
        return [range_kvs(r) for r in result.responses], result.revision

    def delete(self, key, prefix=False):
        """Delete ``key`` (or everything under it) in a txn; returns the number deleted.
        Raises CommitUnknownError, ClusterUnavailableError, ClusterStoreError."""
        result = self.txn([], [op_delete(key, prefix)])
        body = result.responses[0].get("response_delete_range", {}) if result.responses else {}
        return int(body.get("deleted", 0))

    # --- leases -----------------------------------------------------------------------
    def lease_grant(self, ttl):
        """A new lease of ``ttl`` seconds; returns its id. Keys put with it vanish when
        it expires. Raises ClusterUnavailableError, ClusterStoreError."""
        answer = self._call("/v3/lease/grant", {"TTL": str(int(ttl))}, write=False)
        return int(answer["ID"])

    def lease_keepalive(self, lease):
        """Renew ``lease`` once; returns the TTL left (0 or less: it has expired).
        Raises ClusterUnavailableError, ClusterStoreError."""
        response = self._call("/v3/lease/keepalive", {"ID": str(int(lease))}, stream=True)
        try:
            message = _read_messages(response)
            first = next(message, {})
        finally:
            response.close()
            self._drop_stream_connection()
        return int(first.get("result", {}).get("TTL", 0))

    def lease_revoke(self, lease):
        """Revoke ``lease`` now, deleting every key put with it. Raises as
        ``lease_grant`` (a lease already gone is not an error)."""
        try:
            self._call("/v3/lease/revoke", {"ID": str(int(lease))}, write=False)
        except ClusterStoreError as err:
            if "not found" not in str(err):
                raise

    # --- watch ------------------------------------------------------------------------
    def watch(self, key, start_revision, prefix=True, timeout=None):
        """Yield WatchEvents for ``key`` (every key under it with ``prefix``) from
        ``start_revision`` on, in revision order, until ``timeout`` seconds pass
        without an event (forever when None), the connection drops, or the consumer
        stops.

        Called by the host agent with the revision after the last one it applied (a
        read's revision + 1), so no change between the read and the watch is missed;
        when the generator ends, the agent watches again from its last event's revision
        + 1 (any endpoint: revisions are cluster-wide). Raises CompactedError when
        ``start_revision`` is compacted away (read everything again, then watch),
        ClusterUnavailableError when no endpoint accepts the watch.
        """
        request = {"key": b64(key), "start_revision": str(int(start_revision)),
                   "prev_kv": True}
        if prefix:
            request["range_end"] = b64(prefix_end(key))
        response = self._call("/v3/watch", {"create_request": request}, stream=True,
                              timeout=timeout or 3600.0)
        try:
            for message in _read_messages(response):
                result = message.get("result", message)
                if "error" in message:
                    raise ClusterStoreError("watch failed: %s" % message["error"])
                if int(result.get("compact_revision", 0)):
                    raise CompactedError("watch from revision %d: compacted up to %s"
                                         % (start_revision, result["compact_revision"]))
                for event in result.get("events", []):
                    kv = _kv(event.get("kv", {}))
                    prev = _kv(event["prev_kv"]) if event.get("prev_kv") else None
                    yield WatchEvent(event.get("type", "PUT"), kv, prev, kv.mod_revision)
        finally:
            response.close()
            self._drop_stream_connection()

    def _drop_stream_connection(self):
        # a streamed response leaves its connection unusable for the next request
        self._drop(self.config.endpoints[self._preferred])

    # --- cluster ----------------------------------------------------------------------
    def status(self, endpoint):
        """The maintenance status of one member (``leader``, ``header.member_id``...),
        asked of that endpoint only. Raises ClusterUnavailableError when it does not
        answer."""
        try:
            return self._send(endpoint, "/v3/maintenance/status", {}, self.config.timeout)
        except (_Unreachable, _Lost) as err:
            raise ClusterUnavailableError("etcd %s: %s" % (endpoint, err))


class _AuthExpired(Exception):
    """The auth token was refused (expired): authenticate again once."""


def _read_messages(response):
    """Decode the JSON messages of a streamed gateway response one by one (the socket's
    timeout, set by the request, ends it when nothing comes)."""
    decoder = json.JSONDecoder()
    buffer = ""
    while True:
        try:
            chunk = response.read1(65536) if hasattr(response, "read1") else response.read(1)
        except (OSError, http.client.HTTPException):
            return  # timeout or closed: the watch ends
        if not chunk:
            return
        buffer += chunk.decode()
        while True:
            buffer = buffer.lstrip()
            if not buffer:
                break
            try:
                message, end = decoder.raw_decode(buffer)
            except ValueError:
                break
            buffer = buffer[end:]
            yield message


def _reason(err):
    text = str(err) or err.__class__.__name__
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, TimeoutError) or "timed out" in text:
        return "timed out"
    return text

"""Local state in SQLite: one database per host, written only by the controller.

Guarantees: WAL journal, schema versioned, one transaction per operation (``with
store.transaction():``), a host-wide ``flock`` held for a whole operation so concurrent
runs on one host serialise, files created mode 0600. Rows are JSON documents keyed by
id and name: the model classes (``model.py``) convert to and from them.
"""
import contextlib
import fcntl
import json
import os
import sqlite3

from .constants import LOCK_FILE, SCHEMA_VERSION, STORE_FILE
from .errors import CnmError
from .ipam.pools import cidr_interval

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS networks (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sandboxes (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS endpoints (
    id TEXT PRIMARY KEY, network_id TEXT NOT NULL, sandbox_id TEXT NOT NULL,
    doc TEXT NOT NULL, UNIQUE (network_id, sandbox_id));
CREATE TABLE IF NOT EXISTS allocations (
    network_id TEXT NOT NULL, address TEXT NOT NULL, owner TEXT NOT NULL,
    PRIMARY KEY (network_id, address));
CREATE INDEX IF NOT EXISTS endpoints_by_sandbox ON endpoints (sandbox_id);
CREATE INDEX IF NOT EXISTS networks_by_state ON networks (json_extract(doc, '$.state'));
CREATE INDEX IF NOT EXISTS sandboxes_by_state ON sandboxes (json_extract(doc, '$.state'));
CREATE INDEX IF NOT EXISTS endpoints_by_state ON endpoints (json_extract(doc, '$.state'));
CREATE INDEX IF NOT EXISTS sandboxes_by_shares ON sandboxes (json_extract(doc, '$.shares'));
CREATE TABLE IF NOT EXISTS ports (
    endpoint_id TEXT NOT NULL, network_id TEXT NOT NULL, sandbox_name TEXT,
    host_port INTEGER NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS ports_by_host_port ON ports (host_port);
CREATE INDEX IF NOT EXISTS ports_by_endpoint ON ports (endpoint_id);
CREATE INDEX IF NOT EXISTS ports_by_network ON ports (network_id);
CREATE TRIGGER IF NOT EXISTS ports_after_insert AFTER INSERT ON endpoints BEGIN
    DELETE FROM ports WHERE endpoint_id = NEW.id;
    INSERT INTO ports SELECT NEW.id, NEW.network_id, json_extract(NEW.doc, '$.sandbox_name'),
        json_extract(value, '$.host_port'), value FROM json_each(NEW.doc, '$.ports');
END;
CREATE TRIGGER IF NOT EXISTS ports_after_update AFTER UPDATE ON endpoints BEGIN
    DELETE FROM ports WHERE endpoint_id = OLD.id;
    INSERT INTO ports SELECT NEW.id, NEW.network_id, json_extract(NEW.doc, '$.sandbox_name'),
        json_extract(value, '$.host_port'), value FROM json_each(NEW.doc, '$.ports');
END;
CREATE TRIGGER IF NOT EXISTS ports_after_delete AFTER DELETE ON endpoints BEGIN
    DELETE FROM ports WHERE endpoint_id = OLD.id;
END;
CREATE INDEX IF NOT EXISTS networks_by_bridge ON networks (json_extract(doc, '$.bridge'));
CREATE TABLE IF NOT EXISTS subnets (
    network_id TEXT NOT NULL, version INTEGER NOT NULL, first TEXT NOT NULL,
    last TEXT NOT NULL, cidr TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS subnets_by_first ON subnets (version, first);
CREATE INDEX IF NOT EXISTS subnets_by_network ON subnets (network_id);
"""
# The ports table is an index of the endpoints' ``ports`` arrays, kept by the triggers
# above: a port change looks up the host ports it asks for instead of decoding every
# endpoint. Stores made before it existed are indexed once, when first opened.
_PORTS_BACKFILL = """
INSERT INTO ports SELECT e.id, e.network_id, json_extract(e.doc, '$.sandbox_name'),
    json_extract(j.value, '$.host_port'), j.value FROM endpoints e, json_each(e.doc, '$.ports') j;
INSERT OR REPLACE INTO meta VALUES ('ports_index', '1');
"""

# The subnets table is an index of the networks' pools, kept by ``put``/``delete``: each
# subnet's first and last address as fixed-width hex (text order is number order), so a
# network create finds an overlapping subnet by two index lookups instead of decoding
# every network. Stores made before it existed are indexed once, when first opened.
_HEX_WIDTH = {4: 8, 6: 32}
_ADDRESS_BITS = {4: 32, 6: 128}

TABLES = ("networks", "sandboxes", "endpoints")


class StoreError(CnmError):
    """The state database cannot be opened or has an unknown schema."""


def _check_table(table):
    if table not in TABLES:
        raise ValueError("unknown table %r" % table)


class Store:
    """The state database under ``state_dir``. Open with ``Store.open(state_dir)``."""

    def __init__(self, state_dir, conn, lock_fd):
        self.state_dir = state_dir
        self.conn = conn
        self._lock_fd = lock_fd
        self._depth = 0

    @classmethod
    def open(cls, state_dir, lock=True):
        """Open (creating if needed) the store; with ``lock`` take the host-wide lock.

        Called at the start of every engine operation. Blocks while another run on this
        host holds the lock; the lock is released by ``close()`` or by process death.
        """
        old = os.umask(0o077)
        try:
            os.makedirs(state_dir, mode=0o700, exist_ok=True)
            lock_fd = None
            if lock:
                lock_fd = os.open(os.path.join(state_dir, LOCK_FILE),
                                  os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                fcntl.flock(lock_fd, fcntl.LOCK_EX)
            path = os.path.join(state_dir, STORE_FILE)
            try:
                conn = sqlite3.connect(path, timeout=30, isolation_level=None,
                                       check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.executescript(_SCHEMA)
            except sqlite3.Error as exc:
                if lock_fd is not None:
                    os.close(lock_fd)
                raise StoreError("cannot open state database %s: %s" % (path, exc))
        finally:
            os.umask(old)
        store = cls(state_dir, conn, lock_fd)
        store._check_schema()
        return store

    @classmethod
    def open_memory(cls):
        """A throwaway in-memory store: check mode on a host that has no state yet."""
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        conn.executescript(_SCHEMA)
        store = cls(None, conn, None)
        store._check_schema()
        return store

    def _check_schema(self):
        row = self.conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is None:
            self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)",
                              (str(SCHEMA_VERSION),))
        elif int(row[0]) > SCHEMA_VERSION:
            raise StoreError("state database schema %s is newer than this collection (%d)"
                             % (row[0], SCHEMA_VERSION))
        if self.conn.execute("SELECT 1 FROM meta WHERE key='ports_index'").fetchone() is None:
            with self.transaction():
                self.conn.execute("DELETE FROM ports")
                for statement in _PORTS_BACKFILL.split(";"):
                    if statement.strip():
                        self.conn.execute(statement)
        if self.conn.execute("SELECT 1 FROM meta WHERE key='subnets_index'").fetchone() is None:
            with self.transaction():
                self.conn.execute("DELETE FROM subnets")
                for (doc,) in list(self.conn.execute("SELECT doc FROM networks")):
                    self._index_subnets(json.loads(doc))
                self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('subnets_index', '1')")

    def close(self):
        """Close the database and release the host lock."""
        try:
            self.conn.close()
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    @contextlib.contextmanager
    def transaction(self):
        """One atomic unit: commits on success, rolls back on any exception. Nests."""
        if self._depth:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        self.conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")
        finally:
            self._depth = 0

    # -- documents -------------------------------------------------------------------
    def put(self, table, doc, **keys):
        """Insert or replace the document ``doc`` (a dict with ``id``) in ``table``."""
        _check_table(table)
        cols = ["id", "doc"] + sorted(keys)
        vals = [doc["id"], json.dumps(doc, sort_keys=True)] + [keys[k] for k in sorted(keys)]
        with self.transaction():
            self.conn.execute("INSERT OR REPLACE INTO %s (%s) VALUES (%s)" % (
                table, ",".join(cols), ",".join("?" * len(cols))), vals)
            if table == "networks":
                self.conn.execute("DELETE FROM subnets WHERE network_id=?", (doc["id"],))
                self._index_subnets(doc)

    def delete(self, table, doc_id):
        _check_table(table)
        with self.transaction():
            self.conn.execute("DELETE FROM %s WHERE id=?" % table, (doc_id,))
            if table == "networks":
                self.conn.execute("DELETE FROM subnets WHERE network_id=?", (doc_id,))

    def _index_subnets(self, doc):
        """Rows of the subnets index for network document ``doc`` (in a transaction)."""
        for pool in doc.get("pools") or ():
            text = pool.get("subnet") if isinstance(pool, dict) else None
            span = cidr_interval(text)
            if span is None:
                continue
            version, dummy, first, last = span
            width = _HEX_WIDTH[version]
            self.conn.execute("INSERT INTO subnets VALUES (?, ?, ?, ?, ?)",
                              (doc["id"], version, "%0*x" % (width, first),
                               "%0*x" % (width, last), text))

    def get(self, table, doc_id=None, name=None):
        """The document with this id (or name), or None."""
        _check_table(table)
        if doc_id is not None:
            row = self.conn.execute("SELECT doc FROM %s WHERE id=?" % table,
                                    (doc_id,)).fetchone()
        else:
            row = self.conn.execute("SELECT doc FROM %s WHERE name=?" % table,
                                    (name,)).fetchone()
        return json.loads(row[0]) if row else None

    def all(self, table, where="", args=()):
        """Every document of ``table`` (optionally filtered by an SQL ``where``)."""
        _check_table(table)
        sql = "SELECT doc FROM %s %s ORDER BY rowid" % (table, ("WHERE " + where) if where else "")
        return [json.loads(r[0]) for r in self.conn.execute(sql, args)]

    def network_subnets(self, exclude_id=None):
        """``[(network name, subnet text)]`` of every pool of every network but
        ``exclude_id``, read by SQLite (json_each) without decoding the documents."""
        return list(self.conn.execute(
            "SELECT n.name, json_extract(p.value, '$.subnet') FROM networks n, "
            "json_each(n.doc, '$.pools') p WHERE n.id IS NOT ? ORDER BY n.rowid",
            (exclude_id,)))

    def overlapping_subnet(self, subnet, exclude_id=None):
        """``(network name, subnet text)`` of a subnet of another network (not
        ``exclude_id``) that overlaps the CIDR text ``subnet``, or None (also for a text
        that is not a CIDR).

        Called by network create and rebuild before anything is made. Two index lookups
        whatever the number of networks: two CIDR blocks overlap only when one holds the
        other, so the other one either starts inside ``subnet`` or starts at ``subnet``'s
        first address with a shorter prefix's host bits cleared.
        """
        span = cidr_interval(subnet)
        if span is None:
            return None
        version, length, first, last = span
        width, bits = _HEX_WIDTH[version], _ADDRESS_BITS[version]
        head = ("SELECT n.name, s.cidr, s.last FROM subnets s JOIN networks n "
                "ON n.id = s.network_id WHERE s.version = ? AND s.network_id IS NOT ? AND ")
        row = self.conn.execute(
            head + "s.first BETWEEN ? AND ? ORDER BY n.rowid LIMIT 1",
            (version, exclude_id, "%0*x" % (width, first), "%0*x" % (width, last))).fetchone()
        if row:
            return row[0], row[1]
        if not length:
            return None     # a /0 holds everything: any other subnet starts inside it
        starts = sorted({"%0*x" % (width, first & ~((1 << (bits - n)) - 1))
                         for n in range(length)})
        lowest = "%0*x" % (width, first)
        for name, text, other_last in self.conn.execute(
                head + "s.first IN (%s) ORDER BY n.rowid" % ",".join("?" * len(starts)),
                [version, exclude_id] + starts):
            if other_last >= lowest:
                return name, text
        return None

    def network_using_bridge(self, bridge):
        """The name of the network whose interface is ``bridge``, or None."""
        row = self.conn.execute("SELECT name FROM networks WHERE json_extract(doc, "
                                "'$.bridge') = ? LIMIT 1", (bridge,)).fetchone()
        return row[0] if row else None

    def published_ports(self, network_id=None):
        """[(endpoint id, network id, sandbox name, [mapping dicts])] of the endpoints
        that publish ports (of ``network_id`` only, if given), from the ports index."""
        sql = "SELECT endpoint_id, network_id, sandbox_name, doc FROM ports"
        args = ()
        if network_id is not None:
            sql += " WHERE network_id = ?"
            args = (network_id,)
        return _grouped(self.conn.execute(sql + " ORDER BY rowid", args))

    def port_holders(self, host_ports):
        """Like ``published_ports`` but only the mappings of the given host port
        numbers: what a new mapping of those ports may clash with (index lookups)."""
        ports = sorted(set(int(p) for p in host_ports))
        rows = []
        for start in range(0, len(ports), 500):
            chunk = ports[start:start + 500]
            rows += self.conn.execute(
                "SELECT endpoint_id, network_id, sandbox_name, doc FROM ports WHERE "
                "host_port IN (%s) ORDER BY rowid" % ",".join("?" * len(chunk)), chunk)
        return _grouped(rows)

    # -- settings -------------------------------------------------------------------
    def get_setting(self, key, default=None):
        """A JSON setting (e.g. the resolver's upstreams) or ``default``."""
        row = self.conn.execute("SELECT value FROM meta WHERE key=?",
                                ("setting:" + key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_setting(self, key, value):
        with self.transaction():
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                              ("setting:" + key, json.dumps(value, sort_keys=True)))

    # -- intents: kernel/resolver steps promised by a committed store write -----------
    def set_intent(self, kind, key, value):
        """Record that the step ``kind`` (``firewall``, ``dns``) for ``key`` must still
        reach the kernel or the resolver. Written in the same transaction as the store
        change that needs it, so a run killed in between leaves it for the next run."""
        with self.transaction():
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                              ("intent:%s:%s" % (kind, key), json.dumps(value, sort_keys=True)))

    def intent(self, kind, key):
        """The value of one recorded intent, or None."""
        row = self.conn.execute("SELECT value FROM meta WHERE key=?",
                                ("intent:%s:%s" % (kind, key),)).fetchone()
        return json.loads(row[0]) if row else None

    def clear_intent(self, kind, key):
        """The step was done: forget it."""
        with self.transaction():
            self.conn.execute("DELETE FROM meta WHERE key=?", ("intent:%s:%s" % (kind, key),))

    def intents(self):
        """[(kind, key, value)] of every recorded intent, oldest first (a range scan
        of the meta table's primary key: nothing is read when there are none)."""
        rows = self.conn.execute("SELECT key, value FROM meta WHERE key >= 'intent:' AND "
                                 "key < 'intent;' ORDER BY rowid")
        return [tuple(k.split(":", 2)[1:]) + (json.loads(v),) for k, v in rows]

    # -- IPAM allocations --------------------------------------------------------------
    def allocations(self, network_id):
        """{address: owner} of every address allocated in network ``network_id``."""
        return dict(self.conn.execute(
            "SELECT address, owner FROM allocations WHERE network_id=?", (network_id,)))

    def is_allocated(self, network_id, address):
        """True when ``address`` (normal string form) is allocated in ``network_id``
        (one primary-key lookup)."""
        return self.conn.execute(
            "SELECT 1 FROM allocations WHERE network_id=? AND address=?",
            (network_id, address)).fetchone() is not None

    def allocate(self, network_id, address, owner):
        with self.transaction():
            self.conn.execute("INSERT INTO allocations VALUES (?,?,?)",
                              (network_id, address, owner))

    def release(self, network_id, address=None, owner=None):
        """Release one address, every address of ``owner``, or the whole network."""
        with self.transaction():
            if address is not None:
                self.conn.execute("DELETE FROM allocations WHERE network_id=? AND address=?",
                                  (network_id, address))
            elif owner is not None:
                self.conn.execute("DELETE FROM allocations WHERE network_id=? AND owner=?",
                                  (network_id, owner))
            else:
                self.conn.execute("DELETE FROM allocations WHERE network_id=?",
                                  (network_id,))

    def count_allocations(self):
        return self.conn.execute("SELECT COUNT(*) FROM allocations").fetchone()[0]


def _grouped(rows):
    """Rows of the ports index grouped per endpoint, in the shape of published_ports."""
    out = {}
    for ep_id, net_id, name, doc in rows:
        entry = out.get(ep_id)
        if entry is None:
            entry = out[ep_id] = (ep_id, net_id, name, [])
        entry[3].append(json.loads(doc))
    return list(out.values())

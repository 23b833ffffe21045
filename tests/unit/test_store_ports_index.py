"""The store's index of published ports follows the endpoints' documents."""
import json
import sqlite3

from ansible_collections.cnm.core.plugins.module_utils.constants import STORE_FILE
from ansible_collections.cnm.core.plugins.module_utils.store import Store


def endpoint(ep_id, net_id, sandbox, *ports):
    return {"id": ep_id, "sandbox_name": sandbox,
            "ports": [{"protocol": "tcp", "host_ip": "", "host_port": p,
                       "container_ip": "10.0.0.2", "container_port": 80, "family": 4}
                      for p in ports]}


def put(store, doc, net_id="n1"):
    store.put("endpoints", doc, network_id=net_id, sandbox_id="sb-" + doc["id"])


def forget_index(state_dir, empty_it, meta_key):
    """Make the store under ``state_dir`` look as if made before an index: run the SQL
    ``empty_it`` and drop the index's ``meta_key``, behind the Store's back."""
    conn = sqlite3.connect(str(state_dir / STORE_FILE))
    conn.execute(empty_it)
    conn.execute("DELETE FROM meta WHERE key=?", (meta_key,))
    conn.commit()
    conn.close()


def holders(store, *ports):
    return sorted((ep, name, sorted(d["host_port"] for d in docs))
                  for ep, net, name, docs in store.port_holders(ports))


def test_index_follows_inserts_replacements_and_deletes(tmp_path):
    store = Store.open(str(tmp_path))
    try:
        put(store, endpoint("e1", "n1", "web", 8080, 8081))
        put(store, endpoint("e2", "n1", "api", 9090))
        assert holders(store, 8080, 9090) == [("e1", "web", [8080]), ("e2", "api", [9090])]
        put(store, endpoint("e1", "n1", "web", 8082))          # INSERT OR REPLACE
        assert holders(store, 8080, 8081, 8082) == [("e1", "web", [8082])]
        store.delete("endpoints", "e1")
        assert holders(store, 8082) == []
        assert [row[0] for row in store.published_ports("n1")] == ["e2"]
    finally:
        store.close()


def test_a_store_made_before_the_index_is_indexed_when_opened(tmp_path):
    store = Store.open(str(tmp_path))
    put(store, endpoint("e1", "n1", "web", 8080))
    store.close()
    forget_index(tmp_path, "DELETE FROM ports", "ports_index")
    store = Store.open(str(tmp_path))
    try:
        assert holders(store, 8080) == [("e1", "web", [8080])]
        assert json.loads(store.conn.execute("SELECT value FROM meta WHERE "
                                             "key='ports_index'").fetchone()[0]) == 1
    finally:
        store.close()

"""What a user can see of a simulated host: links, addresses, routes, namespaces, store."""
import json
import os
import sqlite3


def store_rows(host):
    path = os.path.join(host.state_dir, "cnm.db")
    if not os.path.exists(path):
        return {}
    conn = sqlite3.connect(path)
    try:
        out = {}
        for table in ("networks", "sandboxes", "endpoints", "allocations"):
            rows = conn.execute("SELECT * FROM %s ORDER BY 1, 2" % table).fetchall()
            out[table] = [tuple(r) for r in rows]
        return out
    finally:
        conn.close()


def kernel_state(host):
    """Links, addresses and routes of the host and every sandbox, plus namespace files."""
    def clean(links):
        # only what a change would alter; operstate and DAD flags settle on their own
        return sorted(({"ifname": l["ifname"], "mac": l.get("address"), "mtu": l.get("mtu"),
                        "master": l.get("master"),
                        "addr": sorted("%s/%s" % (a["local"], a["prefixlen"])
                                       for a in l.get("addr_info", []))}
                       for l in links), key=lambda l: l["ifname"])

    def routes(rts):
        return sorted("%s via %s dev %s" % (r.get("dst"), r.get("gateway"), r.get("dev"))
                      for r in rts)
    state = {"host": {"addr": clean(host.ip_json("addr")),
                      "route": routes(host.ip_json("route"))},
             "sandboxes": {}}
    for sb in host.sandboxes():
        try:
            state["sandboxes"][sb] = {"addr": clean(host.ip_json("addr", sandbox=sb)),
                                      "route": routes(host.ip_json("route", sandbox=sb))}
        except AssertionError:
            state["sandboxes"][sb] = "unreadable"
    return json.loads(json.dumps(state, sort_keys=True))


def snapshot(host):
    return {"kernel": kernel_state(host), "store": store_rows(host)}

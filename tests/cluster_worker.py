"""One allocating process of the cluster store's concurrency tests.

Run inside a simulated host's namespace (``nsenter --net=...``) with the collection on
``PYTHONPATH``::

    python cluster_worker.py ENDPOINTS ROOT NETWORK HOST OWNER_PREFIX COUNT START_AT

It waits until the wall clock reaches ``START_AT`` (so every worker starts together),
then allocates ``COUNT`` addresses of global network ``NETWORK`` for owners
``<OWNER_PREFIX>-<i>``, one JSON line per allocation (``owner``, ``address`` or
``error``, ``seconds``, ``at``: when it ended), then a last line ``{"stats": {...}}``.
Run again with the same arguments, it asks for the same owners (a re-run).
"""
import json
import sys
import time


def main(argv):
    endpoints, root, network, host, prefix, count, start_at = argv[1:8]
    from ansible_collections.cnm.core.plugins.module_utils.cluster.client import (
        EtcdClient, parse_store_options)
    from ansible_collections.cnm.core.plugins.module_utils.cluster.ipam import ClusterIpam
    from ansible_collections.cnm.core.plugins.module_utils.cluster.keys import KeyLayout
    from ansible_collections.cnm.core.plugins.module_utils.cluster.networks import (
        ClusterNetworks)
    from ansible_collections.cnm.core.plugins.module_utils.errors import CnmError

    client = EtcdClient(parse_store_options(endpoints.split(","), timeout=2.0,
                                            retry_for=10.0))
    layout = KeyLayout(root)
    definition = ClusterNetworks(client, layout).get(network)
    ipam = ClusterIpam(client, layout, deadline=20.0)
    owners = ["%s-%d" % (prefix, i) for i in range(int(count))]
    delay = float(start_at) - time.time()
    if delay > 0:
        time.sleep(delay)
    for owner in owners:
        began = time.monotonic()
        line = {"owner": owner}
        try:
            line["address"] = str(ipam.allocate(definition, owner, host))
        except CnmError as err:
            line["error"] = "%s: %s" % (err.__class__.__name__, err)
        line["seconds"] = round(time.monotonic() - began, 4)
        line["at"] = time.time()
        print(json.dumps(line), flush=True)
    print(json.dumps({"stats": ipam.stats.as_dict()}), flush=True)
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

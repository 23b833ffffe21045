"""The cluster store: global-scope (overlay) state kept in etcd v3.

``client.py`` talks to etcd (JSON gateway, stdlib only), ``keys.py`` lays out the keys
under one prefix, ``ipam.py`` allocates VNIs, subnets and addresses cluster-wide by
compare-and-swap, ``networks.py`` keeps network definitions, host membership and peer
records. Nothing here imports the local store or the controller, and nothing of it is
imported until a global-scope network is touched.
"""

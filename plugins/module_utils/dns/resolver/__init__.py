"""cnm embedded DNS resolver: one host process answering 127.0.0.11:53 in every sandbox.

This package is self-contained (stdlib + dnspython, nothing else from the engine; only
relative imports inside it): the engine copies its files to
``<state_dir>/resolver/resolver/`` and runs it from there through a small runner
script beside it (see ``dns/service.py``):

    python3 <state_dir>/resolver/cnm-resolver.py --config <run_dir>/dns/config.json \
        --pidfile <run_dir>/dns/resolver.pid --log <run_dir>/dns/resolver.log [--daemonize]

One concept per file:
- ``wire.py``: DNS messages as bytes, and the fast path answering from prebuilt bytes;
- ``catalog.py``: every sandbox's names and addresses -> one answer table per set of
  networks;
- ``config.py``: the files the engine writes (config.json, one file per sandbox);
- ``forwarder.py``: the upstreams (resolv.conf), forwarding, SERVFAIL;
- ``listeners.py``: the UDP/TCP sockets inside each sandbox, and the UDP serving loop;
- ``redirect.py``: the sandbox's rules sending 127.0.0.11:53 to the sockets' private
  ports (port 53 stays free for workloads);
- ``tcp.py``: the TCP serving loop (connections, their caps and deadlines);
- ``control.py``: the engine's control socket (apply these sandboxes, then reply; health);
- ``logs.py``: the daemon's log;
- ``daemon.py``: main loop, threads and signals; double fork, pidfile (``main``).

Policy (as Docker's resolver): names of the networks the asking sandbox is attached to
are answered locally (A/AAAA/PTR; other types of a local name get NOERROR without
answers); everything else is forwarded, except for sandboxes without forwarding
(internal networks only), which get SERVFAIL as Docker's resolver answers them.

Importing this package must stay cheap (it imports nothing): the engine reads the
package's files as data on every run that touches DNS.
"""

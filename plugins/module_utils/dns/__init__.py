"""Embedded DNS: the resolver daemon (``resolver/``, a self-contained package copied to
the host and run from there), its engine-side control (``service.py``) and the
per-sandbox name files (``files.py``: resolv.conf, hosts, hostname).
"""

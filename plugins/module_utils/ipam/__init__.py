"""IPAM: pools and subnet choice (``pools``), pool config parsing (``config``), the
address allocator (``allocator``) and MAC addresses (``mac``). Pure Python, no kernel."""

#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026 cnm.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: cnm_dns
short_description: Embedded DNS - the host resolver and per-sandbox name settings
version_added: 0.1.0
description:
  - One resolver process on the host answers at 127.0.0.11 (UDP and TCP) inside every
    sandbox attached to a user-defined network - sandbox names, hostnames, endpoint
    aliases and C(name.network), only for networks the asking sandbox is on, round robin
    over several addresses, PTR - and forwards everything else to the upstreams from
    the host namespace.
  - The engine starts it when the first sandbox needs it and every module run restarts
    it if it died. This module sets its upstreams and TTL, or stops it.
  - With O(sandbox), sets that sandbox's resolv.conf, hosts and hostname files (written
    under O(run_dir)C(/sandboxes/<name>/) and, with the default O(netns_dir), in
    C(/etc/netns/<name>/) where C(ip netns exec) finds them). Aliases belong to
    endpoints (M(cnm.core.cnm_endpoint)).
author: Cnm Core Maintainers (@cnm-core)
extends_documentation_fragment:
  - cnm.core.common
  - cnm.core.common.attributes
options:
  resolver:
    description: Whether the host resolver should run.
    type: str
    choices: [started, stopped]
  upstreams:
    description:
      - Upstream servers (V(ip), V(ip:port), V([v6]:port)). Empty - the host's
        C(/etc/resolv.conf) nameservers, re-read when that file changes (a loopback
        resolver such as 127.0.0.53 works).
    type: list
    elements: str
  ttl:
    description: TTL of local answers in seconds (Docker hard-codes 600).
    type: int
  sandbox:
    description: The sandbox whose name settings the options below change.
    type: str
  nameservers:
    description: Nameservers written into the sandbox's resolv.conf instead of 127.0.0.11.
    type: list
    elements: str
  sandbox_upstreams:
    description: Upstreams the resolver uses for this sandbox only (Docker's C(--dns)).
    type: list
    elements: str
  search:
    description: Search domains (default the host's); V(["."]) means none.
    type: list
    elements: str
  options:
    description: resolv.conf options (default V(ndots:0)).
    type: list
    elements: str
  hostname:
    description: Hostname of the sandbox (also answered by the resolver).
    type: str
  domainname:
    description: Domain name of the sandbox (hosts file FQDN).
    type: str
  extra_hosts:
    description:
      - Extra hosts file entries, V(name:ip) strings (Docker's C(--add-host)) or a dict.
      - The address V(host-gateway) is the host as the sandbox reaches it (the gateway of
        its first IPv4 network), as Docker's C(--add-host name:host-gateway); the entry is
        left out while the sandbox has no IPv4 network.
    type: raw
notes:
  - The resolver runs with the Python interpreter that runs the module, which needs
    C(dnspython). Where systemd runs (C(/run/systemd/system) exists) it is the unit
    C(cnm-resolver.service) (another name for a non-default O(run_dir)) with
    C(Restart=always); elsewhere a detached process with a pid file under O(run_dir).
  - Inside each sandbox the resolver binds 127.0.0.11:53. A workload that binds
    C(0.0.0.0:53) itself must set C(SO_REUSEADDR) (Docker's resolver listens on a random
    port behind a DNAT rule instead).
  - O(sandbox) must exist (made by M(cnm.core.cnm_sandbox) or M(cnm.core.cnm_endpoint)); in
    check mode a sandbox that an earlier task would create is reported as a change. The
    options O(nameservers), O(sandbox_upstreams), O(search), O(options), O(hostname),
    O(domainname) and O(extra_hosts) need O(sandbox).
  - A sandbox on the network V(host) shares the host's namespace; no name files are
    written for it.
seealso:
  - module: cnm.core.cnm_endpoint
  - module: cnm.core.cnm_sandbox
  - module: cnm.core.cnm_sandbox_info
  - name: Docker embedded DNS
    description: The DNS service of user-defined networks that this resolver reproduces.
    link: https://docs.docker.com/engine/network/#dns-services
  - name: docker run
    description: The C(--dns), C(--dns-search), C(--dns-option), C(--hostname) and
      C(--add-host) options that the sandbox options mirror.
    link: https://docs.docker.com/reference/cli/docker/container/run/
"""

EXAMPLES = r"""
- name: Forward to the host's systemd-resolved, short TTL for local names
  cnm.core.cnm_dns:
    upstreams: [127.0.0.53]
    ttl: 30

- name: Name settings of one sandbox
  cnm.core.cnm_dns:
    sandbox: web
    hostname: web01
    domainname: example.internal
    extra_hosts:
      - "db.legacy:10.0.0.5"

- name: Stop the resolver (sandboxes keep their resolv.conf)
  cnm.core.cnm_dns:
    resolver: stopped
"""

RETURN = r"""
resolver:
  description:
    - The resolver's settings (C(state), C(upstreams), C(ttl)) after the task, and whether
      it runs (C(running), and C(pid), V(null) when it does not run).
  returned: always, except in check mode when O(sandbox) does not exist yet
  type: dict
  sample:
    state: started
    upstreams:
      - 127.0.0.53
    ttl: 30
    running: true
    pid: 4890
sandbox:
  description:
    - The sandbox's name, its DNS settings (C(dns), only the keys ever set) and the
      directories holding its C(resolv.conf), C(hosts) and C(hostname) files (C(files)).
  returned: when O(sandbox) is given and exists
  type: dict
  sample:
    name: web
    dns:
      domainname: example.internal
      extra_hosts:
        - - db.legacy
          - 10.0.0.5
    files:
      - /run/cnm/sandboxes/web
      - /etc/netns/web
actions:
  description: What was done (or would be done in check mode), one line each.
  returned: always
  type: list
  elements: str
  sample:
    - "resolver.ttl: 600 -> 30"
    - "resolver.upstreams: [] -> ['127.0.0.53']"
"""

from ansible_collections.cnm.core.plugins.module_utils.ansible_adapter import run_module
from ansible_collections.cnm.core.plugins.module_utils.controller.engine import Engine


def main():
    run_module(
        dict(
            resolver=dict(type="str", choices=["started", "stopped"]),
            upstreams=dict(type="list", elements="str"),
            ttl=dict(type="int"),
            sandbox=dict(type="str"),
            nameservers=dict(type="list", elements="str"),
            sandbox_upstreams=dict(type="list", elements="str"),
            search=dict(type="list", elements="str"),
            options=dict(type="list", elements="str"),
            hostname=dict(type="str"),
            domainname=dict(type="str"),
            extra_hosts=dict(type="raw"),
        ),
        "dns", Engine,
    )


if __name__ == "__main__":
    main()

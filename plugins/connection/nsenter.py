# Copyright (c) 2025 cnm.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: nsenter
short_description: Run tasks on the controller inside a network namespace
version_added: 0.1.0
author: cnm.core contributors (@cnm)
description:
  - Runs every command of a task on the Ansible controller, but inside the network namespace
    named by O(remote_addr), through C(nsenter --net=<path>).
  - Only the network namespace changes. The mount, PID, UTS and user namespaces stay the
    controller's, so files, processes and bind mounts are shared with the controller. This is
    deliberate. C(ip netns exec) would give each command a private mount namespace, and the
    namespace files (bind mounts) that a task creates inside it would disappear when the task ends.
  - Use it to treat a network namespace as a simulated host, for example in tests and demos.
    Setting C(ansible_python_interpreter) to V(ip netns exec h1 python) does not work,
    because Ansible quotes the interpreter as one path.
  - File transfers are plain local copies, as with the C(ansible.builtin.local) connection,
    because the file system is shared.
extends_documentation_fragment:
  - ansible.builtin.connection_pipelining
options:
  remote_addr:
    description:
      - The network namespace to enter.
      - A bare name such as V(h1) means C(/run/netns/h1), the place where C(ip netns add) creates
        namespaces.
      - An absolute path such as V(/tmp/hosts/netns/h1) is used as it is. It must be a network
        namespace file (a bind mount of C(/proc/<pid>/ns/net)) or C(/proc/<pid>/ns/net) itself.
    type: str
    default: inventory_hostname
    vars:
      - name: inventory_hostname
      - name: ansible_host
      - name: ansible_nsenter_host
  nsenter_path:
    description:
      - The C(nsenter) program used to enter the namespace (from util-linux).
      - A bare name is looked up in E(PATH).
    type: str
    default: nsenter
    vars:
      - name: ansible_nsenter_path
  become_success_timeout:
    description:
      - Number of seconds to wait for become to succeed when enabled.
      - The default will be used if the configured value is less than 1.
    type: int
    default: 10
    vars:
      - name: ansible_local_become_success_timeout
  become_strip_preamble:
    description:
      - Strip internal become output preceding command execution. Disable for additional diagnostics.
    type: bool
    default: true
    vars:
      - name: ansible_local_become_strip_preamble
notes:
  - Needs the privileges to enter the namespace (C(CAP_SYS_ADMIN)); in practice the controller runs as root.
  - The remote user is ignored. Commands run as the user running Ansible, as with the C(ansible.builtin.local) connection.
  - Commands run in the playbook directory, as with the C(ansible.builtin.local) connection.
seealso:
  - name: nsenter(1)
    description: The util-linux program this plugin runs.
    link: https://man7.org/linux/man-pages/man1/nsenter.1.html
"""

EXAMPLES = r"""
# Inventory (INI): a simulated host that is the network namespace /run/netns/h1
# h1 ansible_connection=cnm.core.nsenter ansible_python_interpreter=/usr/bin/python3

# Inventory (YAML): the namespace file lives elsewhere
# all:
#   hosts:
#     sim1:
#       ansible_connection: cnm.core.nsenter
#       ansible_host: /srv/sim/netns/sim1
#       ansible_python_interpreter: "{{ ansible_playbook_python }}"
"""

import os
import shlex

import ansible.constants as C
from ansible.errors import AnsibleConnectionFailure
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.connection.local import Connection as LocalConnection
from ansible.utils.display import Display

display = Display()

NETNS_RUN_DIR = "/run/netns"


def netns_path(remote_addr):
    """Map ``remote_addr`` to a namespace file: a bare name lives in /run/netns."""
    addr = to_text(remote_addr or "").strip()
    if not addr:
        raise AnsibleConnectionFailure("cnm.core.nsenter: remote_addr (ansible_host) is empty")
    if os.path.isabs(addr):
        return addr
    if "/" in addr or addr in (".", ".."):
        raise AnsibleConnectionFailure(
            "cnm.core.nsenter: remote_addr %r must be a namespace name or an absolute path" % addr)
    return os.path.join(NETNS_RUN_DIR, addr)


class Connection(LocalConnection):
    """The local connection, with every command run under ``nsenter --net=<path>``."""

    # Kept as 'local' on purpose: the action base then runs commands in the playbook
    # directory, and actions that must never run against the controller (reboot) refuse.
    transport = "local"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._netns_path = None

    def _connect(self):
        if not self._connected:
            path = netns_path(self.get_option("remote_addr"))
            if not os.path.exists(path):
                raise AnsibleConnectionFailure(
                    "cnm.core.nsenter: network namespace %s does not exist" % path)
            self._netns_path = path
            display.vvv("ESTABLISH NSENTER CONNECTION INTO %s" % path,
                        host=self._play_context.remote_addr)
        return super()._connect()

    def _wrap(self, cmd):
        """Return ``cmd`` as one shell command line that runs inside the namespace."""
        prefix = [self.get_option("nsenter_path"), "--net=%s" % self._netns_path, "--"]
        if isinstance(cmd, (bytes, str)):
            shell = C.DEFAULT_EXECUTABLE.split()[0] if C.DEFAULT_EXECUTABLE else "/bin/sh"
            argv = prefix + [shell, "-c", to_text(cmd, errors="surrogate_or_strict")]
        else:
            argv = prefix + [to_text(a, errors="surrogate_or_strict") for a in cmd]
        return " ".join(shlex.quote(a) for a in argv)

    def exec_command(self, cmd, in_data=None, sudoable=True):
        """Run ``cmd`` on the controller inside the network namespace."""
        if not self._connected:
            self._connect()
        wrapped = self._wrap(cmd)
        display.vvv("NSENTER %s" % to_text(wrapped), host=self._play_context.remote_addr)
        return super().exec_command(wrapped, in_data=in_data, sudoable=sudoable)

    def reset(self):
        """Forget the namespace path; the next command looks it up again."""
        self.close()

    def close(self):
        """Nothing to tear down: each command is its own nsenter process."""
        self._netns_path = None
        super().close()

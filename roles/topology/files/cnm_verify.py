# Copyright (c) 2025 cnm.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Observe a host's cnm topology as a user would: ping, DNS, published ports.

Run by the role cnm.core.topology (tasks_from: verify) through ansible.builtin.script,
in the host's network namespace, with one JSON argument: ``netns_dir``, ``sandboxes``
(cnm_sandbox_info's list), ``networks`` (cnm_network_info's list), ``checks``
(``{"ping": bool, "dns": bool, "ports": bool}``) and ``timeout`` (seconds per probe).

Prints one line per check; exits 1 when any failed (the failures also go to stderr), 2
on bad input. Stdlib only; needs nsenter, ping and dig (for the DNS check) on the host.
"""
import ipaddress
import json
import socket
import subprocess
import sys

TRIES = 3
LISTENER = r"""
import socket, sys
port, token, wait = int(sys.argv[1]), sys.argv[2].encode(), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("0.0.0.0", port))
except OSError:
    print("busy", flush=True)
    raise SystemExit(0)
s.listen(1)
print("ready", flush=True)
s.settimeout(wait)
try:
    c, _addr = s.accept()
    c.sendall(token)
    c.close()
except OSError:
    pass
"""


def in_sandbox(key, argv, timeout):
    """Run ``argv`` inside the sandbox namespace file ``key``; return (rc, stdout)."""
    try:
        proc = subprocess.run(["nsenter", "--net=%s" % key] + argv, capture_output=True,
                              text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return 124, ""
    return proc.returncode, proc.stdout


def retry(probe):
    """Whether ``probe()`` succeeds within TRIES attempts (ARP, a listener starting)."""
    return any(probe() for _attempt in range(TRIES))


def members(sandboxes, networks):
    """{network name: [(sandbox, endpoint)]} for the networks whose members can talk."""
    by_name = {n.get("Name"): n for n in networks}
    out = {}
    for sb in sandboxes:
        for net, ep in (sb.get("Networks") or {}).items():
            info = by_name.get(net, {})
            if net in ("host", "none") or info.get("Driver") in ("host", "null"):
                continue
            if not ep.get("IPAddress"):
                continue
            out.setdefault(net, []).append((sb, ep))
    return out


def icc_off(network):
    options = network.get("Options") or {}
    return str(options.get("com.docker.network.bridge.enable_icc", "true")).lower() == "false"


def has_embedded_dns(network):
    options = network.get("Options") or {}
    default = str(options.get("com.docker.network.bridge.default_bridge", "false")).lower()
    return network.get("Name") != "bridge" and default != "true"


def check_pairs(spec, report):
    by_name = {n.get("Name"): n for n in spec["networks"]}
    timeout = spec["timeout"]
    for net, eps in sorted(members(spec["sandboxes"], spec["networks"]).items(),
                           key=lambda kv: kv[0]):
        network = by_name.get(net, {"Name": net})
        for sa, _epa in eps:
            for sb, epb in eps:
                if sa["SandboxKey"] == sb["SandboxKey"]:
                    continue
                what = "%s -> %s (%s) on %s" % (sa["Name"], sb["Name"], epb["IPAddress"], net)
                if spec["checks"].get("ping") and not icc_off(network):
                    report("ping", what, retry_ping(sa["SandboxKey"], epb["IPAddress"], timeout))
                if spec["checks"].get("dns") and has_embedded_dns(network):
                    report("dns", "%s asks 127.0.0.11 for %s: %s on %s"
                           % (sa["Name"], sb["Name"], epb["IPAddress"], net),
                           retry_dig(sa["SandboxKey"], sb["Name"], epb["IPAddress"], timeout))


def retry_ping(key, address, timeout):
    """Whether ``address`` answers ping from the sandbox ``key``."""
    argv = ["ping", "-n", "-q", "-c", "1", "-W", str(timeout), address]
    return retry(lambda: in_sandbox(key, argv, timeout + 5)[0] == 0)


def retry_dig(key, name, address, timeout):
    """Whether 127.0.0.11 in the sandbox ``key`` answers ``name`` with ``address``."""
    argv = ["dig", "+short", "+time=%d" % timeout, "+tries=1", "@127.0.0.11", name, "A"]

    def ask():
        rc, out = in_sandbox(key, argv, timeout + 5)
        return rc == 0 and address in out.split()
    return retry(ask)


def host_address():
    """The host's first global IPv4 address (published ports answer there), else None."""
    proc = subprocess.run(["ip", "-j", "-4", "addr", "show", "scope", "global"],
                          capture_output=True, text=True, check=False)
    try:
        links = json.loads(proc.stdout or "[]")
    except ValueError:
        return None
    for link in links:
        for addr in link.get("addr_info", []):
            if addr.get("local"):
                return addr["local"]
    return None


def tcp_reaches(address, port, timeout, token):
    """True when ``address:port`` accepts (and, given a token, sends it back)."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as conn:
            if token is None:
                return True
            conn.settimeout(timeout)
            data = b""
            while len(data) < len(token):
                chunk = conn.recv(64)
                if not chunk:
                    break
                data += chunk
            return data == token
    except OSError:
        return False


def check_ports(spec, report):
    timeout = spec["timeout"]
    fallback = host_address() or "127.0.0.1"
    for sb in spec["sandboxes"]:
        for net, ep in sorted((sb.get("Networks") or {}).items()):
            for key, bindings in sorted((ep.get("Ports") or {}).items()):
                port, _sep, proto = key.partition("/")
                if proto != "tcp" or not bindings:
                    continue
                for binding in bindings:
                    ip = binding.get("HostIp") or "0.0.0.0"
                    target = fallback if ipaddress.ip_address(ip).is_unspecified else ip
                    if ipaddress.ip_address(target).version != 4:
                        continue
                    host_port = int(binding["HostPort"])
                    what = "%s:%d -> %s %s on %s" % (target, host_port, sb["Name"], key, net)
                    report("port", what, probe_port(sb, int(port), target, host_port, timeout))


def probe_port(sb, port, target, host_port, timeout):
    """Connect to ``target:host_port``; a listener answers in the sandbox unless a
    workload already listens on ``port`` there."""
    token = "cnm-verify-%s-%d" % (sb["Name"], port)
    listener = subprocess.Popen(
        ["nsenter", "--net=%s" % sb["SandboxKey"], sys.executable, "-c", LISTENER,
         str(port), token, str(timeout * (TRIES + 1))],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        state = listener.stdout.readline().strip()
        expect = token.encode() if state == "ready" else None
        return retry(lambda: tcp_reaches(target, host_port, timeout, expect))
    finally:
        listener.kill()
        listener.wait()


def main(argv):
    try:
        spec = json.loads(argv[1])
        spec.setdefault("checks", {"ping": True, "dns": True, "ports": True})
        spec["timeout"] = int(spec.get("timeout", 2))
        spec["sandboxes"] = list(spec.get("sandboxes") or [])
        spec["networks"] = list(spec.get("networks") or [])
    except (IndexError, ValueError, TypeError) as exc:
        print("cnm_verify: one JSON argument expected: %s" % exc, file=sys.stderr)
        return 2
    failures = []

    def report(kind, what, ok):
        line = "%s %s: %s" % ("ok" if ok else "FAILED", kind, what)
        print(line, flush=True)
        if not ok:
            failures.append(line)

    check_pairs(spec, report)
    if spec["checks"].get("ports"):
        check_ports(spec, report)
    if failures:
        print("cnm_verify: %d check(s) failed:\n%s" % (len(failures), "\n".join(failures)),
              file=sys.stderr)
        return 1
    print("cnm_verify: all checks passed (%d sandboxes)" % len(spec["sandboxes"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

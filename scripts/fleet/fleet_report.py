"""What the fleet demo observes from inside the sandboxes: a cross-host ping matrix and
the embedded DNS's answers, read as a user would (``ping``, ``dig @127.0.0.11``, ``ip -j``
under ``nsenter`` in each sandbox's namespace file).

Small fleets (up to ``FULL_MATRIX`` hosts) ping every ordered pair; larger ones ping a
ring (every host pings the next one) plus ``SAMPLE`` random pairs.
"""
import concurrent.futures
import json
import random
import subprocess

FULL_MATRIX = 10
SAMPLE = 30
OK, FAIL, SELF, UNTESTED = "\u2713", "\u2717", "\u00b7", " "


def nsenter(path, argv, timeout=30):
    """Run ``argv`` in the network namespace file ``path``; the CompletedProcess."""
    try:
        return subprocess.run(["nsenter", "--net=%s" % path] + list(argv), capture_output=True,
                              text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 124, "", "timed out")


def sandbox_path(host, sandbox):
    """The namespace file of ``sandbox`` on ``host`` (a fleet.json host entry)."""
    return "%s/%s" % (host["netns_dir"], sandbox)


def sandbox_address(host, sandbox, ifname="eth0"):
    """The IPv4 address of ``ifname`` in the sandbox (the first attached network's
    interface), else of its first interface but lo; None when it has none."""
    proc = nsenter(sandbox_path(host, sandbox), ["ip", "-j", "-4", "addr"])
    try:
        links = json.loads(proc.stdout or "[]")
    except ValueError:
        return None
    found = {}
    for link in links:
        for addr in link.get("addr_info", []):
            if link.get("ifname") != "lo":
                found.setdefault(link["ifname"], addr["local"])
    return found.get(ifname) or next(iter(found.values()), None)


def choose_pairs(names, seed=0):
    """Ordered (src, dst) pairs to ping: all of them for small fleets, else a ring plus
    ``SAMPLE`` random pairs (``seed`` makes the sample repeatable)."""
    if len(names) <= FULL_MATRIX:
        return [(a, b) for a in names for b in names if a != b]
    ring = [(names[i], names[(i + 1) % len(names)]) for i in range(len(names))]
    rng = random.Random(seed)
    extra = set()
    while len(extra) < SAMPLE:
        a, b = rng.sample(names, 2)
        if (a, b) not in ring:
            extra.add((a, b))
    return ring + sorted(extra)


def observe(fleet, sandbox_of, workers=16):
    """Ping the chosen pairs and ask DNS from every sandbox (for the next host's sandbox
    and, from the first host, for the alias ``fleet``). Returns a summary dict: addresses,
    pings [{src, dst, address, ok}], dns [{src, name, expected, answer, ok}]."""
    hosts = fleet["hosts"]
    names = sorted(hosts)
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        addresses = dict(zip(names, pool.map(
            lambda n: sandbox_address(hosts[n], sandbox_of(n)), names)))

        def ping(pair):
            src, dst = pair
            address = addresses.get(dst)
            # the sandbox's own address answers locally: that says nothing across hosts
            ok = bool(address) and address != addresses.get(src)
            # three probes 0.5 s apart; one answer is enough (ping exits 0)
            ok = ok and nsenter(sandbox_path(hosts[src], sandbox_of(src)), [
                "ping", "-n", "-q", "-c3", "-i0.5", "-W2", address]).returncode == 0
            return {"src": src, "dst": dst, "address": address, "ok": ok}

        def dig(job):
            src, name, expected = job
            proc = nsenter(sandbox_path(hosts[src], sandbox_of(src)), [
                "dig", "+short", "+time=2", "+tries=2", "@127.0.0.11", name])
            answer = sorted(proc.stdout.split()) if proc.returncode == 0 else []
            return {"src": src, "name": name, "expected": sorted(expected), "answer": answer,
                    "ok": proc.returncode == 0 and answer == sorted(expected)}

        pairs = choose_pairs(names, seed=fleet.get("suffix", "0"))
        pings = list(pool.map(ping, pairs))
        jobs = []
        if len(names) > 1:
            for i, src in enumerate(names):
                dst = names[(i + 1) % len(names)]
                jobs.append((src, sandbox_of(dst), [addresses.get(dst) or "?"]))
        jobs.append((names[0], "fleet", [a or "?" for a in addresses.values()]))
        dns = list(pool.map(dig, jobs))
    return {"hosts": len(names), "addresses": addresses, "pings": pings, "dns": dns,
            "pings_ok": sum(p["ok"] for p in pings), "pings_total": len(pings),
            "dns_ok": sum(d["ok"] for d in dns), "dns_total": len(dns)}


def table(rows, header):
    """Print ``rows`` under ``header``, columns padded."""
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    fmt = "  ".join("%%-%ds" % w for w in widths)
    print("  " + fmt % tuple(header))
    print("  " + fmt % tuple("-" * w for w in widths))
    for r in rows:
        print("  " + fmt % tuple(r))


def print_report(summary, sandbox_of):
    """The matrix (rows ping columns), the DNS answers and a one-line verdict."""
    names = sorted(summary["addresses"])
    marks = {(p["src"], p["dst"]): OK if p["ok"] else FAIL for p in summary["pings"]}
    print("\nSandboxes")
    table([(n, sandbox_of(n), summary["addresses"][n] or "(no address)") for n in names],
          ("host", "sandbox", "address"))
    sampled = "" if len(names) <= FULL_MATRIX else ", blank not sampled"
    print("\nPing matrix (sandbox on row host pings sandbox on column host; %s answers, "
          "%s no answer%s)" % (OK, FAIL, sampled))
    if len(names) <= FULL_MATRIX:
        rows = [[src] + [SELF if src == dst else marks.get((src, dst), UNTESTED)
                         for dst in names] for src in names]
        table(rows, ["from \\ to"] + names)
    else:
        for src in names:
            line = "".join(SELF if src == dst else marks.get((src, dst), UNTESTED)
                           for dst in names)
            print("  %-5s %s" % (src, line))
    print("\nEmbedded DNS (dig +short @127.0.0.11 from each sandbox)")
    rows = []
    for d in summary["dns"]:
        answer = ", ".join(d["answer"]) or "(no answer)"
        if len(d["answer"]) > 6:
            answer = "%d addresses" % len(d["answer"])
        rows.append((sandbox_of(d["src"]), d["name"], answer, OK if d["ok"] else FAIL))
    table(rows, ("from", "name", "answer", "as expected"))
    print("\nPings: %d/%d answered; DNS: %d/%d as expected" % (
        summary["pings_ok"], summary["pings_total"], summary["dns_ok"], summary["dns_total"]))

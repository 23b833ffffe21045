"""Shared helpers of the peer benchmarks (``bench/bench_peers_*.py``).

Peers are not project dependencies: Debian packages (netavark, aardvark-dns, ...) are
installed with apt when missing; PyPI packages (pyroute2, python-iptables) go into a
throwaway venv under /tmp that is removed afterwards. Each script prints one JSON
object, then a table of ours against the peer, measured in the same run; with
``--keep`` it also appends that output, with the date and /proc/loadavg, to
``bench/results-kept/<name>-<date>.txt`` (kept in git, unlike ``bench/results/``).
``make bench`` runs them with the other ``bench_*.py``; ``CNM_BENCH_PEERS=0`` skips them.
"""
import argparse
import contextlib
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

# benchlib puts tests/ on sys.path; conftest makes the checkout ansible_collections.cnm.core
import benchlib  # noqa: F401 pylint: disable=unused-import
import conftest  # noqa: F401,E402 pylint: disable=unused-import

BENCH = os.path.dirname(os.path.abspath(__file__))
KEPT = os.path.join(BENCH, "results-kept")


def dns_arguments(doc, runs=20):
    """The options of the peer benchmarks that also measure DNS: --runs, --seconds
    (dnsperf -l), --queries (one at a time), --keep."""
    ap = argparse.ArgumentParser(description=doc.split("\n", 1)[0])
    ap.add_argument("--runs", type=int, default=runs)
    ap.add_argument("--seconds", type=int, default=10, help="dnsperf -l")
    ap.add_argument("--queries", type=int, default=2000, help="sequential queries")
    ap.add_argument("--keep", action="store_true", help="save under bench/results-kept/")
    return ap


def skipped(name):
    """True (after saying so) when CNM_BENCH_PEERS=0 asks to skip the peer benchmarks."""
    if os.environ.get("CNM_BENCH_PEERS", "1") == "0":
        print("%s: skipped (CNM_BENCH_PEERS=0)" % name)
        return True
    return False


def loadavg():
    with open("/proc/loadavg", encoding="ascii") as src:
        return src.read().strip()


def median_ms(samples):
    """Median of durations in seconds, in ms (3 decimals)."""
    return round(statistics.median(samples) * 1000.0, 3)


def debian_version(package):
    """Installed version of a Debian package, or None."""
    proc = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Abbrev} ${Version}", package],
                          capture_output=True, text=True, check=False)
    status, dummy, version = proc.stdout.partition(" ")
    return version.strip() if proc.returncode == 0 and status == "ii" else None


def ensure_debian(*packages):
    """Install the missing ones with apt-get; returns {package: version or None}."""
    missing = [p for p in packages if not debian_version(p)]
    if missing:
        print("installing with apt-get: %s" % " ".join(missing), file=sys.stderr)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends"]
                       + missing, env=env, check=False, stdout=subprocess.DEVNULL,
                       timeout=600)
    return {p: debian_version(p) for p in packages}


@contextlib.contextmanager
def throwaway_venv(*requirements):
    """A venv under /tmp with ``requirements`` pip-installed; yields its python (or None
    when the install failed, e.g. offline); removed on exit."""
    root = tempfile.mkdtemp(prefix="cnm-bench-venv-")
    try:
        python = os.path.join(root, "bin", "python")
        ok = subprocess.run([sys.executable, "-m", "venv", root], check=False,
                            stdout=subprocess.DEVNULL).returncode == 0
        if ok:
            print("pip install (throwaway venv %s): %s" % (root, " ".join(requirements)),
                  file=sys.stderr)
            ok = subprocess.run([python, "-m", "pip", "install", "-q",
                                 "--disable-pip-version-check"] + list(requirements),
                                check=False, timeout=600).returncode == 0
        yield python if ok else None
    finally:
        shutil.rmtree(root, ignore_errors=True)


def pip_version(python, distribution):
    code = "import importlib.metadata as m; print(m.version(%r))" % distribution
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    return proc.stdout.strip() or None


def run_json(argv, timeout=300, env=None):
    """Run ``argv``; its last stdout line is JSON. Raises with stderr on failure."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (argv[:4], proc.returncode,
                                                   proc.stderr[-2000:]))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(rows, header):
    """Rows of (measure, ours, peer, peer name) as text."""
    rows = [tuple("" if v is None else str(v) for v in row) for row in rows]
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    fmt = "  ".join("%%-%ds" % w for w in widths)
    return "\n".join([fmt % header] + [fmt % row for row in rows])


def report(name, result, rows, keep, header=("measure", "ours", "peer", "peer is")):
    """Print the JSON then the table; with ``keep`` also save both under results-kept/."""
    result = dict(result, date=datetime.datetime.now(datetime.timezone.utc)
                  .strftime("%Y-%m-%dT%H:%M:%SZ"), loadavg_after=loadavg())
    text = json.dumps(result, indent=2) + "\n\n" + table(rows, header) + "\n"
    print(text, end="")
    if keep:
        os.makedirs(KEPT, exist_ok=True)
        path = os.path.join(KEPT, "%s-%s.txt" % (
            name, datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d")))
        with open(path, "a", encoding="utf-8") as out:      # one block per run
            out.write("%s# %s, %s, loadavg before: %s, after: %s, %d cpus\n# %s\n\n" % (
                "\n" if out.tell() else "",
                name, result["date"], result.get("loadavg_before", "?"),
                result["loadavg_after"], os.cpu_count(), " ".join(sys.argv)))
            out.write(text)
        print("kept in %s" % os.path.relpath(path, os.path.dirname(BENCH)))

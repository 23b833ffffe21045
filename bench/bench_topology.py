#!/usr/bin/env python
"""cnm_topology: a whole host (100 sandboxes, one published port each) in one task.

Run from the collection root as root: ``.venv/bin/python bench/bench_topology.py
[--sandboxes 100] [--runs 3] [--with-loop]``. Every run works inside its own throwaway
simulated host (a network namespace; run_dir and netns_dir on tmpfs, state_dir on
disk, as on a real host), never on the real host. Measured:

- ``task_first_s``: the one ``cnm.core.cnm_topology`` task of a real ``ansible-playbook``
  run on an empty host (from the task's start to its result, as the play sees it);
- ``task_again_s``: the same task again, nothing to change;
- ``engine_first_s`` / ``engine_again_s``: ``Engine.topology`` called in-process (no
  Ansible), to tell the engine's share from Ansible's;
- with ``--with-loop``: the same host built by looped single-object tasks
  (cnm_network, then cnm_endpoint and cnm_port_mapping per sandbox), for comparison.

Prints one JSON object, then a table; notes the load average (the machine is shared).
Goals (issue #13): first task <= 2.0 s, again <= 0.5 s. Not asserted anywhere.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "modules"))
sys.path.insert(0, os.path.join(REPO, "tests"))  # its conftest makes cnm.core importable
import conftest  # noqa: E402,F401 pylint: disable=unused-import
from ansible_runner import inventory_for  # noqa: E402
from harness import SimHost, in_netns  # noqa: E402

from ansible_collections.cnm.core.plugins.module_utils.controller import Engine  # noqa: E402

GOALS = {"task_first_s": 2.0, "task_again_s": 0.5}
FIRST_PORT = 30000

# A stdout-free callback that writes each task's start and end (monotonic seconds).
TIMER_CALLBACK = '''
import json, os, time
from ansible.plugins.callback import CallbackBase

class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "cnm_bench_timer"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._start = None

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._start = time.monotonic()

    def _done(self, result, status):
        with open(os.environ["CNM_BENCH_TIMES"], "a") as fh:
            fh.write(json.dumps({"task": result.task_name, "status": status,
                                 "changed": bool(result._result.get("changed")),
                                 "seconds": time.monotonic() - self._start}) + "\\n")

    def v2_runner_on_ok(self, result):
        self._done(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._done(result, "failed")
'''


def topology(n):
    """The benchmark's topology: network ``app`` and ``n`` sandboxes with one port each."""
    return {"networks": [{"name": "app", "ipam": {"config": [{"subnet": "10.120.0.0/16"}]}}],
            "sandboxes": [{"name": "s%d" % i, "endpoints": [{
                "network": "app", "ports": [{"container_port": 80,
                                             "host_port": FIRST_PORT + i}]}]}
                          for i in range(n)]}


def play(tasks):
    return [{"hosts": "all", "gather_facts": False, "tasks": tasks,
             "module_defaults": {"group/cnm.core.cnm": {
                 "state_dir": "{{ cnm_state_dir }}", "run_dir": "{{ cnm_run_dir }}",
                 "netns_dir": "{{ cnm_netns_dir }}", "firewall_backend": "nftables"}}}]


def run_play(host, plays, workdir):
    """Run ``plays`` on ``host``; returns the timer's records (one per task result)."""
    import yaml
    times = os.path.join(workdir, "times-%d.jsonl" % time.monotonic_ns())
    book = os.path.join(workdir, "play.yml")
    inventory = os.path.join(workdir, "inventory.yml")
    with open(book, "w") as fh:
        yaml.safe_dump(plays, fh)
    with open(inventory, "w") as fh:
        yaml.safe_dump(inventory_for(host), fh)
    env = dict(host.env(), ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, "build", "collections"),
               ANSIBLE_CALLBACK_PLUGINS=workdir, ANSIBLE_CALLBACKS_ENABLED="cnm_bench_timer",
               CNM_BENCH_TIMES=times, ANSIBLE_NOCOLOR="1",
               PATH=os.path.join(REPO, ".venv", "bin") + os.pathsep + os.environ["PATH"])
    proc = subprocess.run([os.path.join(REPO, ".venv", "bin", "ansible-playbook"), "-i",
                           inventory, book], env=env, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise SystemExit("ansible-playbook failed:\n%s\n%s" % (proc.stdout[-3000:],
                                                               proc.stderr[-3000:]))
    with open(times) as fh:
        return [json.loads(line) for line in fh]


def task_runs(n, workdir):
    """(first, again) seconds of the one topology task on a fresh host."""
    host = SimHost("bt", tmpfs_runtime=True)
    try:
        plays = play([{"name": "topology", "cnm.core.cnm_topology": topology(n)}])
        first = run_play(host, plays, workdir)[0]
        again = run_play(host, plays, workdir)[0]
        assert first["changed"] and not again["changed"], (first, again)
        return first["seconds"], again["seconds"]
    finally:
        host.close()


def engine_runs(n):
    """(first, again) seconds of ``Engine.topology`` in-process on a fresh host."""
    host = SimHost("be", tmpfs_runtime=True)
    try:
        out = []
        for dummy in range(2):
            engine = Engine(state_dir=host.state_dir, run_dir=host.run_dir,
                            netns_dir=host.netns_dir, firewall_backend="nftables")
            with in_netns(host.path):
                start = time.perf_counter()
                engine.topology(topology(n))
                out.append(time.perf_counter() - start)
        return tuple(out)
    finally:
        host.close()


def loop_run(n, workdir):
    """Seconds of the same host built with looped single-object tasks."""
    host = SimHost("bl", tmpfs_runtime=True)
    try:
        items = list(range(n))
        plays = play([
            {"name": "network", "cnm.core.cnm_network": {
                "name": "app", "ipam": {"config": [{"subnet": "10.120.0.0/16"}]}}},
            {"name": "endpoints", "loop": items, "cnm.core.cnm_endpoint": {
                "network": "app", "sandbox": "s{{ item }}"}},
            {"name": "ports", "loop": items, "cnm.core.cnm_port_mapping": {
                "sandbox": "s{{ item }}", "ports": [{
                    "container_port": 80, "host_port": "{{ %d + item }}" % FIRST_PORT}]}}])
        start = time.perf_counter()
        run_play(host, plays, workdir)
        return time.perf_counter() - start
    finally:
        host.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sandboxes", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--with-loop", action="store_true")
    args = ap.parse_args()
    load_before = open("/proc/loadavg").read().split()[:3]
    with tempfile.TemporaryDirectory(prefix="cnm-bench-topology-") as workdir:
        with open(os.path.join(workdir, "cnm_bench_timer.py"), "w") as fh:
            fh.write(TIMER_CALLBACK)
        tasks = [task_runs(args.sandboxes, workdir) for dummy in range(args.runs)]
        engines = [engine_runs(args.sandboxes) for dummy in range(args.runs)]
        looped = loop_run(args.sandboxes, workdir) if args.with_loop else None
    out = {
        "sandboxes": args.sandboxes, "runs": args.runs,
        "task_first_s": round(statistics.median(t[0] for t in tasks), 3),
        "task_again_s": round(statistics.median(t[1] for t in tasks), 3),
        "task_first_all_s": [round(t[0], 3) for t in tasks],
        "task_again_all_s": [round(t[1], 3) for t in tasks],
        "engine_first_s": round(statistics.median(e[0] for e in engines), 3),
        "engine_again_s": round(statistics.median(e[1] for e in engines), 3),
        "looped_tasks_s": round(looped, 3) if looped is not None else None,
        "goals": GOALS,
        "load_before": load_before,
        "load_after": open("/proc/loadavg").read().split()[:3],
    }
    print(json.dumps(out, indent=2))
    print()
    print("%-44s %10s %8s" % ("cnm_topology, %d sandboxes + 1 port each" % args.sandboxes,
                              "median", "goal"))
    for key, label in (("task_first_s", "task, empty host (s)"),
                       ("task_again_s", "task again, nothing to change (s)"),
                       ("engine_first_s", "engine only, empty host (s)"),
                       ("engine_again_s", "engine only, again (s)"),
                       ("looped_tasks_s", "looped single-object tasks (s)")):
        if out[key] is not None:
            goal = GOALS.get(key)
            print("%-44s %10.3f %8s" % (label, out[key], "<= %.1f" % goal if goal else ""))
    loads = (" ".join(load_before), " ".join(out["load_after"]))
    print("load average before/after: %s / %s" % loads)


if __name__ == "__main__":
    main()

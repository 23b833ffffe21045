#!/usr/bin/env python
"""Per-task cost of cnm modules in a real play: default ``linear`` against ``mitogen_linear``.

Run from the collection root as root: ``.venv/bin/python bench/bench_playbook_tasks.py
[--rounds 15] [--repeats 2]``. One play per run, on a fresh simulated host (a throwaway
network namespace): ``ansible-playbook`` runs inside the host's namespace with
``-c local`` (Mitogen accelerates the ``local`` connection, not ``cnm.core.nsenter``).
Each round of the play runs, interleaved, a real attach (``cnm_endpoint``, a new
sandbox), ``cnm_network_info``, ``cnm_port_mapping`` (a new published port) and
``ansible.builtin.ping``. A task's cost is the time from its start to the next task's
start as the controller sees it (a small callback written beside the play records
them), so Ansible's own per-task overhead is counted. The strategies alternate run by
run. Prints one JSON object (with the load average before and after), then a table.
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, os.path.join(REPO, "tests", "modules"))
import conftest  # noqa: E402,F401 pylint: disable=unused-import
from benchlib import stats  # noqa: E402
from harness import SimHost  # noqa: E402
import ansible_runner as runner  # noqa: E402

STRATEGY_DIRS = glob.glob(os.path.join(REPO, ".venv", "lib", "python3*", "site-packages",
                                       "ansible_mitogen", "plugins", "strategy"))
KINDS = ("cnm_endpoint", "cnm_network_info", "cnm_port_mapping", "ping")

CALLBACK = '''
import json, os, time
from ansible.plugins.callback import CallbackBase

class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "cnm_task_times"
    CALLBACK_NEEDS_ENABLED = True

    def _write(self, **record):
        with open(os.environ["CNM_TASK_TIMES"], "a") as f:
            f.write(json.dumps(record) + "\\n")

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._write(event="start", name=task.get_name(), t=time.monotonic())

    def v2_runner_on_ok(self, result):
        self._write(event="ok", name=result._task.get_name(), t=time.monotonic(),
                    changed=bool(result._result.get("changed")))

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._write(event="failed", name=result._task.get_name(), t=time.monotonic(),
                    msg=str(result._result.get("msg"))[:300])

    def v2_playbook_on_stats(self, stats):
        self._write(event="end", name="", t=time.monotonic())
'''


def play(rounds):
    tasks = [{"name": "network", "cnm.core.cnm_network": {
        "name": "bench", "ipam": {"config": [{"subnet": "10.88.0.0/16"}]}}}]
    for i in range(rounds):
        tasks += [
            {"name": "cnm_endpoint %d" % i,
             "cnm.core.cnm_endpoint": {"network": "bench", "sandbox": "s%d" % i}},
            {"name": "cnm_network_info %d" % i, "cnm.core.cnm_network_info": {"name": "bench"}},
            {"name": "cnm_port_mapping %d" % i, "cnm.core.cnm_port_mapping": {
                "sandbox": "s%d" % i,
                "ports": [{"container_port": 80, "host_port": 20000 + i}]}},
            {"name": "ping %d" % i, "ansible.builtin.ping": {}},
        ]
    return [{"hosts": "all", "gather_facts": False, "tasks": tasks}]


def run(strategy, rounds, workdir):
    """One play on a fresh host; returns {kind: [seconds]} and the changed count."""
    import yaml
    host = SimHost("pb", tmpfs_runtime=True)
    try:
        times = os.path.join(workdir, "times-%s.jsonl" % strategy)
        if os.path.exists(times):
            os.unlink(times)
        inventory = os.path.join(workdir, "inventory.yml")
        with open(inventory, "w") as f:
            yaml.safe_dump({"all": {"hosts": {host.name: {
                "ansible_connection": "local", "ansible_python_interpreter": runner.PYTHON,
                "cnm_state_dir": host.state_dir, "cnm_run_dir": host.run_dir,
                "cnm_netns_dir": host.netns_dir}}}}, f)
        playbook = os.path.join(workdir, "play.yml")
        with open(playbook, "w") as f:
            yaml.safe_dump(play(rounds), f, sort_keys=False)
        env = dict(os.environ)
        env.update(host.env())
        env.update({"ANSIBLE_CONFIG": os.path.join(REPO, "ansible.cfg"),
                    "ANSIBLE_COLLECTIONS_PATH": runner.COLLECTIONS,
                    "ANSIBLE_CALLBACK_PLUGINS": os.path.join(workdir, "callbacks"),
                    "ANSIBLE_CALLBACKS_ENABLED": "cnm_task_times",
                    "ANSIBLE_DEPRECATION_WARNINGS": "0",
                    "CNM_TASK_TIMES": times,
                    "PATH": runner.VENV_BIN + os.pathsep + env.get("PATH", "")})
        if strategy == "mitogen_linear":
            env.update({"ANSIBLE_STRATEGY": "mitogen_linear",
                        "ANSIBLE_STRATEGY_PLUGINS": STRATEGY_DIRS[0]})
        proc = subprocess.run(["nsenter", "--net=%s" % host.path, runner.ANSIBLE_PLAYBOOK,
                               "-i", inventory, playbook], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=3600, check=False)
        if proc.returncode != 0:
            raise SystemExit("%s play failed:\n%s\n%s" % (strategy, proc.stdout[-3000:],
                                                          proc.stderr[-3000:]))
        with open(times) as f:
            events = [json.loads(line) for line in f]
    finally:
        host.close()
    starts = [e for e in events if e["event"] in ("start", "end")]
    out = {k: [] for k in KINDS}
    for cur, nxt in zip(starts, starts[1:]):
        kind = cur["name"].split(" ")[0]
        if kind in out:
            out[kind].append(nxt["t"] - cur["t"])
    changed = sum(1 for e in events if e["event"] == "ok" and e.get("changed"))
    return out, changed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (the bench builds throwaway network namespaces)")
    if not STRATEGY_DIRS:
        raise SystemExit("mitogen is not installed in .venv (make deps)")
    import mitogen
    load_before = os.getloadavg()
    samples = {s: {k: [] for k in KINDS} for s in ("linear", "mitogen_linear")}
    changed = {}
    with tempfile.TemporaryDirectory(prefix="cnm-bench-pb-") as workdir:
        os.makedirs(os.path.join(workdir, "callbacks"))
        with open(os.path.join(workdir, "callbacks", "cnm_task_times.py"), "w") as f:
            f.write(CALLBACK)
        for dummy in range(args.repeats):
            for strategy in ("linear", "mitogen_linear"):
                out, n = run(strategy, args.rounds, workdir)
                changed.setdefault(strategy, []).append(n)
                for k in KINDS:
                    samples[strategy][k] += out[k]
    result = {
        "bench": "playbook_tasks", "rounds": args.rounds, "repeats": args.repeats,
        "mitogen": ".".join(str(v) for v in mitogen.__version__),
        "loadavg_before": [round(v, 2) for v in load_before],
        "loadavg_after": [round(v, 2) for v in os.getloadavg()],
        "changed_tasks_per_run": changed,
        "per_task": {s: {k: stats(v) for k, v in samples[s].items()} for s in samples},
    }
    print(json.dumps(result, indent=2))
    print()
    print("%-18s %22s %22s %8s" % ("task", "linear median/p90 ms", "mitogen median/p90 ms",
                                   "speedup"))
    for k in KINDS:
        a, b = result["per_task"]["linear"][k], result["per_task"]["mitogen_linear"][k]
        print("%-18s %13.0f / %6.0f %13.0f / %6.0f %7.1fx" % (
            k, a["median_ms"], a["p90_ms"], b["median_ms"], b["p90_ms"],
            a["median_ms"] / b["median_ms"] if b["median_ms"] else 0))
    print("load average before %s, after %s" % (result["loadavg_before"],
                                                result["loadavg_after"]))


if __name__ == "__main__":
    main()

"""Run real ``ansible-playbook`` against a simulated host (a ``tests/harness.py`` SimHost).

Not a test file: module tests import it (``from ansible_runner import run_playbook``).

The host becomes one inventory host reached through the ``cnm.core.nsenter`` connection,
so every task runs on this machine inside the host's network namespace, with the venv's
Python. The engine directories of the host reach the modules three ways, so a test does
not have to repeat them: inventory variables ``cnm_state_dir``/``cnm_run_dir``/
``cnm_netns_dir``, ``module_defaults`` for ``group/cnm.core.cnm`` added to every play of a
playbook given as text, and the ``CNM_*`` environment variables.

Results come from ``callback_plugins/cnm_record.py`` (ansible-core 2.19 has no JSON stdout
callback of its own): one ``TaskResult`` per task result of the host, in the order they
came; stdout keeps the usual human-readable output.
"""
import collections
import json
import os
import subprocess
import tempfile

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# CNM_TEST_VENV_BIN: another venv's bin (``make compat`` runs some module tests with
# ansible-core 2.18's)
DEFAULT_VENV_BIN = os.path.join(REPO, ".venv", "bin")
VENV_BIN = os.path.abspath(os.environ.get("CNM_TEST_VENV_BIN") or DEFAULT_VENV_BIN)
ANSIBLE_PLAYBOOK = os.path.join(VENV_BIN, "ansible-playbook")
PYTHON = os.path.join(VENV_BIN, "python")
COLLECTIONS = os.path.join(REPO, "build", "collections")
CALLBACK_PLUGINS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "callback_plugins")

MODULE_DEFAULTS_GROUP = "group/cnm.core.cnm"
DIR_DEFAULTS = {
    "state_dir": "{{ cnm_state_dir }}",
    "run_dir": "{{ cnm_run_dir }}",
    "netns_dir": "{{ cnm_netns_dir }}",
}


class TaskResult(collections.namedtuple("TaskResult", "name changed failed msg result")):
    """One task's result for the host. ``status``: ok, failed, ignored, skipped, unreachable."""

    status = "ok"


class PlaybookResult:
    """What one ``ansible-playbook`` run did.

    ``tasks`` is a list of ``TaskResult(name, changed, failed, msg, result)``; ``result`` is
    the host's raw result dict (``skipped``, ``rc``, ``diff``, module return values...).
    """

    def __init__(self, rc, stdout, stderr, host, argv, record=None):
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.host = host
        self.argv = argv
        self.tasks = []
        self.stats = {}
        self.record = record if record and os.path.exists(record) else None
        self._parse()

    def _parse(self):
        if not self.record:
            return  # syntax error, bad inventory...: nothing ran, see stderr
        with open(self.record, encoding="utf-8") as f:
            for line in f:
                entry = json.loads(line)
                if entry["kind"] == "stats":
                    self.stats = entry["stats"].get(self.host, {})
                    continue
                if self.host and entry["host"] != self.host:
                    continue
                result = entry["result"]
                failed = entry["status"] in ("failed", "ignored", "unreachable")
                task = TaskResult(entry["task"], bool(result.get("changed")), failed,
                                  result.get("msg"), result)
                task.status = entry["status"]
                self.tasks.append(task)

    @property
    def changed_tasks(self):
        """Names of the tasks that reported a change."""
        return [t.name for t in self.tasks if t.changed]

    @property
    def failed_tasks(self):
        """Names of the tasks that failed (or found the host unreachable)."""
        return [t.name for t in self.tasks if t.failed]

    @property
    def ok(self):
        """The play ran to its end and no task failed (failures with ignore_errors aside)."""
        return self.rc == 0 and not [t for t in self.tasks if t.status in ("failed", "unreachable")]

    def task(self, name):
        """The last result of the task called ``name`` (KeyError when it did not run)."""
        for t in reversed(self.tasks):
            if t.name == name:
                return t
        raise KeyError("no task %r in this run; tasks: %s" % (name, [t.name for t in self.tasks]))

    def __getitem__(self, name):
        return self.task(name).result

    def explain(self):
        """A readable account of the run, for assertion messages."""
        lines = ["ansible-playbook rc=%s: %s" % (self.rc, " ".join(self.argv))]
        for t in self.tasks:
            state = "changed" if t.changed and t.status == "ok" else t.status
            lines.append("  [%s] %s%s" % (state, t.name, (": %s" % t.msg) if t.msg else ""))
        if not self.tasks:
            lines.append("stdout:\n%s" % self.stdout[-4000:])
        if self.stderr.strip():
            lines.append("stderr:\n%s" % self.stderr[-4000:])
        return "\n".join(lines)

    def assert_ok(self):
        """Raise AssertionError (with the whole story) unless every task succeeded."""
        if not self.ok:
            raise AssertionError(self.explain())
        return self

    def __repr__(self):
        return "<PlaybookResult rc=%s tasks=%d changed=%s failed=%s>" % (
            self.rc, len(self.tasks), self.changed_tasks, self.failed_tasks)


def inventory_for(host):
    """The inventory (as data) that makes ``host`` reachable through cnm.core.nsenter."""
    return {"all": {"hosts": {host.name: {
        "ansible_connection": "cnm.core.nsenter",
        "ansible_host": host.path,
        "ansible_python_interpreter": PYTHON,
        "cnm_state_dir": host.state_dir,
        "cnm_run_dir": host.run_dir,
        "cnm_netns_dir": host.netns_dir,
    }}}}


def _with_module_defaults(plays):
    """Add the host directories to every play's module_defaults (the play's own win)."""
    if not isinstance(plays, list):
        return plays
    for play in plays:
        if not isinstance(play, dict) or "hosts" not in play:
            continue  # import_playbook and the like: they bring their own plays
        defaults = play.get("module_defaults") or {}
        if isinstance(defaults, dict):
            group = dict(DIR_DEFAULTS)
            group.update(defaults.get(MODULE_DEFAULTS_GROUP) or {})
            defaults[MODULE_DEFAULTS_GROUP] = group
            play["module_defaults"] = defaults
    return plays


def _playbook_file(playbook, workdir):
    """Path of the playbook to run: a path as it is, YAML text written with defaults added.

    Text is written into a temporary directory: relative paths in it (``import_playbook``,
    ``src:``) do not resolve against the test's directory. Pass a file path for those.
    """
    if isinstance(playbook, os.PathLike):
        playbook = os.fspath(playbook)
    if "\n" not in playbook and os.path.exists(playbook):
        return os.path.abspath(playbook)
    plays = yaml.safe_load(playbook)
    path = os.path.join(workdir, "playbook.yml")
    with open(path, "w") as f:
        yaml.safe_dump(_with_module_defaults(plays), f, default_flow_style=False, sort_keys=False)
    return path


def run_playbook(host, playbook, extra_vars=None, check=False, diff=False, limit=None,
                 env=None, timeout=600, verbosity=0):
    """Run ``playbook`` (YAML text or a file path) against ``host``; return a PlaybookResult.

    Never raises for a failed play: inspect ``.rc``/``.failed_tasks`` or call
    ``.assert_ok()``. Raises ``subprocess.TimeoutExpired`` after ``timeout`` seconds.
    """
    with tempfile.TemporaryDirectory(prefix="cnm-ansible-") as workdir:
        inventory = os.path.join(workdir, "inventory.yml")
        record = os.path.join(workdir, "results.jsonl")
        with open(inventory, "w") as f:
            yaml.safe_dump(inventory_for(host), f, default_flow_style=False)
        argv = [ANSIBLE_PLAYBOOK, "-i", inventory, _playbook_file(playbook, workdir)]
        if extra_vars:
            vars_file = os.path.join(workdir, "extra_vars.json")
            with open(vars_file, "w") as f:
                json.dump(extra_vars, f)
            argv += ["-e", "@" + vars_file]
        if check:
            argv.append("--check")
        if diff:
            argv.append("--diff")
        if limit:
            argv += ["--limit", limit]
        if verbosity:
            argv.append("-" + "v" * verbosity)

        run_env = dict(os.environ)
        run_env.update(host.env() if hasattr(host, "env") else {})
        run_env.update({
            "ANSIBLE_CONFIG": os.path.join(REPO, "ansible.cfg"),
            "ANSIBLE_COLLECTIONS_PATH": COLLECTIONS,
            "ANSIBLE_CALLBACK_PLUGINS": CALLBACK_PLUGINS,
            "ANSIBLE_CALLBACKS_ENABLED": "cnm_record",
            "CNM_RECORD_FILE": record,
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_LOCAL_TEMP": os.path.join(workdir, "local-tmp"),
            "ANSIBLE_REMOTE_TEMP": os.path.join(workdir, "remote-tmp"),
            "PATH": VENV_BIN + os.pathsep + run_env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        })
        if env:
            run_env.update(env)
        proc = subprocess.run(argv, cwd=REPO, env=run_env, capture_output=True, text=True,
                              timeout=timeout, check=False)
        return PlaybookResult(proc.returncode, proc.stdout, proc.stderr, host.name, argv,
                              record)

"""Each module imports only what its verb runs.

AnsiballZ ships every module_utils file a module imports (its finder reads the import
statements of each file it ships, those inside functions too) and a module run pays
for every import. So the info modules, which only read the store, must not reach the
firewall, the netlink code or the writing engine; and no module imports dnspython:
only the resolver daemon does, in its own process.

Three views, all of the module as Ansible runs it:
- the payload: what ansible-core's own finder (``recursive_finder``) packs;
- the import: ``sys.modules`` of a fresh interpreter after importing the module (and,
  for the info modules, after running their verb);
- a real run (root only): a play on a throwaway namespace host keeps its payloads
  (``ANSIBLE_KEEP_REMOTE_FILES``), each is run again under ``python -X importtime``, and
  the modules it imported are read from that output.
"""
import glob
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS = os.path.join(REPO, "build", "collections")
MODULES = sorted(os.path.basename(p)[:-3]
                 for p in glob.glob(os.path.join(REPO, "plugins", "modules", "cnm_*.py")))
INFO_MODULES = [m for m in MODULES if m.endswith("_info")]
PKG = "ansible_collections.cnm.core.plugins"
MU = PKG + ".module_utils."

# what a read must not carry: the firewall, netlink (links, rtnetlink), the writing
# engine (its session opens netlink and the firewall), drivers, the cluster store's
# client and the host agent's code (a read may only start a dead agent again:
# cluster/agent_process.py)
CLUSTER_CODE = ("client", "networks", "ipam", "keys", "peers", "agent", "agent_service")
READ_FORBIDDEN = ("firewall/", "netns/links.py", "netns/rtnl.py", "controller/session.py",
                  "controller/engine.py", "drivers/") + tuple(
                      "cluster/%s.py" % m for m in CLUSTER_CODE)

_FINDER = r"""
import datetime, io, json, sys, types, zipfile
sys.path.insert(0, %(collections)r)
from ansible.plugins.loader import init_plugin_loader
init_plugin_loader([%(collections)r])
from ansible.executor import module_common
out = {}
for name in %(modules)r:
    path = "%(repo)s/plugins/modules/%%s.py" %% name
    with open(path, "rb") as f:
        data = f.read()
    zf = zipfile.ZipFile(io.BytesIO(), "w")
    ext = types.SimpleNamespace(module_names=[], debugger_enabled=False, source_mapping={})
    module_common.recursive_finder(name, "%(pkg)s.modules." + name, data, zf,
                                   datetime.datetime(2020, 1, 1), ext)
    out[name] = {i.filename: i.file_size for i in zf.infolist()}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def payloads():
    """{module: {path in the payload: size}} as ansible-core's finder packs them."""
    code = _FINDER % {"collections": COLLECTIONS, "modules": MODULES, "repo": REPO,
                      "pkg": PKG}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _engine_files(payload):
    marker = "cnm/core/plugins/module_utils/"
    return {p.split(marker, 1)[1]: size for p, size in payload.items() if marker in p}


def _in_fresh_interpreter(code):
    """Run ``code`` in a new interpreter that imports cnm.core as Ansible would; return
    the names in its ``sys.modules`` at the end."""
    prelude = "import sys\nsys.path.insert(0, %r)\n" % COLLECTIONS
    epilogue = "\nimport json\nprint(json.dumps(sorted(sys.modules)))\n"
    proc = subprocess.run([sys.executable, "-c", prelude + code + epilogue],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def _dnspython(names):
    return sorted(n for n in names if n == "dns" or n.startswith("dns."))


def _read_forbidden(names):
    bad = ("firewall", "netns.links", "netns.rtnl", "controller.session",
           "controller.engine", "drivers") + tuple("cluster." + m for m in CLUSTER_CODE)
    return sorted(n for n in names if n.startswith(MU) and any(
        n[len(MU):] == b or n[len(MU):].startswith(b + ".") for b in bad))


@pytest.mark.parametrize("module", INFO_MODULES)
def test_an_info_payload_carries_no_firewall_netlink_or_writing_engine(payloads, module):
    files = _engine_files(payloads[module])
    assert "controller/reader.py" in files
    assert sorted(f for f in files if f.startswith(READ_FORBIDDEN)) == []


def test_info_payloads_are_much_smaller_than_the_writing_ones(payloads):
    size = {m: sum(_engine_files(payloads[m]).values()) for m in MODULES}
    for info in INFO_MODULES:
        assert size[info] * 2 < size["cnm_endpoint"], size


def test_no_engine_file_a_module_carries_imports_dnspython(payloads):
    """Only the resolver package (shipped as data, installed and run in its own
    process) may name dnspython; nothing a module imports does."""
    import ast
    offenders = []
    for module, payload in payloads.items():
        for rel in _engine_files(payload):
            if rel.startswith("dns/resolver/"):
                continue
            with open(os.path.join(REPO, "plugins", "module_utils", rel)) as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom)
                         and not node.level else [])
                if any(n == "dns" or n.startswith("dns.") for n in names):
                    offenders.append("%s: %s" % (module, rel))
    assert offenders == []


@pytest.mark.parametrize("module", MODULES)
def test_importing_a_module_imports_no_dnspython(module):
    names = _in_fresh_interpreter("import %s.modules.%s\n" % (PKG, module))
    assert _dnspython(names) == []
    assert MU + "controller.engine" in names or module in INFO_MODULES
    if module in INFO_MODULES:
        assert _read_forbidden(names) == []


@pytest.mark.parametrize("verb", ["network_info", "sandbox_info"])
def test_running_an_info_verb_imports_no_firewall_netlink_or_dnspython(tmp_path, verb):
    """The info modules' whole run (Reader on an existing store) stays on the read
    path; the writing engine's own info verbs import no dnspython either."""
    dirs = {k: str(tmp_path / k) for k in ("state_dir", "run_dir", "netns_dir")}
    code = ("from %(mu)sstore import Store\n"
            "Store.open(%(state)r).close()\n"
            "from %(mu)scontroller.reader import Reader\n"
            "r = Reader(**%(dirs)r).%(verb)s({})\n"
            "assert r.data['exists'] is (%(verb)r == 'network_info'), r.data\n"
            % {"mu": MU, "state": dirs["state_dir"], "dirs": dirs, "verb": verb})
    names = _in_fresh_interpreter(code)
    assert _read_forbidden(names) == [] and _dnspython(names) == []
    names = _in_fresh_interpreter(
        "from %scontroller.engine import Engine\nEngine(**%r).%s({})\n" % (MU, dirs, verb))
    assert _dnspython(names) == []


# --- a real run ------------------------------------------------------------------------
PLAY = """
- hosts: all
  gather_facts: false
  tasks:
    - cnm.core.cnm_network: {name: app, ipam: {config: [{subnet: 10.79.0.0/24}]}}
    - cnm.core.cnm_endpoint: {network: app, sandbox: web}
    - cnm.core.cnm_port_mapping: {sandbox: web, ports: [{container_port: 80}]}
    - cnm.core.cnm_dns: {sandbox: web, hostname: web01}
    - cnm.core.cnm_sandbox: {name: spare}
    - cnm.core.cnm_network_info: {name: app}
    - cnm.core.cnm_sandbox_info: {name: web}
    - cnm.core.cnm_prune: {}
"""


PLAYED = sorted({line.split("cnm.core.", 1)[1].split(":", 1)[0]
                 for line in PLAY.splitlines() if "cnm.core." in line})


def _imported(kept, python, netns):
    """{module: [modules imported]} of each kept payload run again (same arguments,
    inside the host's namespace ``netns``) under -X importtime."""
    out = {}
    for path in sorted(glob.glob(os.path.join(kept, "*", "AnsiballZ_cnm_*.py"))):
        name = os.path.basename(path)[len("AnsiballZ_"):-3]
        proc = _run_kept(path, python, netns, "-X", "importtime")
        out[name] = [line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
                     if line.startswith("import time:") and "|" in line]
    return out


def _run_kept(path, python, netns, *options):
    """Run a kept AnsiballZ payload again in namespace ``netns`` (never in this one)."""
    proc = subprocess.run(["nsenter", "--net=%s" % netns, python, *options, path],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, (path, proc.stdout[-2000:], proc.stderr[-2000:])
    assert '"failed": true' not in proc.stdout, (path, proc.stdout[-2000:])
    return proc


def test_a_real_run_of_every_module_imports_only_what_it_runs(tmp_path):
    """Every module as Ansible ran it; then the info module, run alone, still brings a
    killed resolver back (from the copy installed under state_dir)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (a throwaway namespace host)")
    sys.path.insert(0, os.path.join(REPO, "tests", "modules"))
    from ansible_runner import PYTHON, run_playbook
    from harness import SimHost, eventually
    from ansible_collections.cnm.core.plugins.module_utils.dns import resolver_client
    host = SimHost("imp")
    try:
        kept = str(tmp_path / "kept")
        res = run_playbook(host, PLAY, env={"ANSIBLE_KEEP_REMOTE_FILES": "1",
                                            "ANSIBLE_PIPELINING": "0",
                                            "ANSIBLE_REMOTE_TEMP": kept})
        res.assert_ok()
        imported = _imported(kept, PYTHON, host.path)
        pid = resolver_client.resolver_status(host.run_dir)["pid"]
        assert pid
        os.kill(pid, 9)
        assert eventually(lambda: not resolver_client.resolver_status(host.run_dir)[
            "running"], 10)
        info = glob.glob(os.path.join(kept, "*", "AnsiballZ_cnm_network_info.py"))[0]
        _run_kept(info, PYTHON, host.path)
        status = resolver_client.resolver_status(host.run_dir)
        assert status["running"] and status["pid"] != pid
        dig = host.sandbox_run("web", ["dig", "+short", "+time=2", "@127.0.0.11", "web"])
        answers = dig.stdout.split()
        assert len(answers) == 1 and answers[0].startswith("10.79.0."), dig.stdout
    finally:
        host.close()
    assert sorted(imported) == sorted(PLAYED)
    for module, names in imported.items():
        assert _dnspython(names) == [], module
        if module in INFO_MODULES:
            assert _read_forbidden(names) == [], module
            assert MU + "dns.service" not in names, module

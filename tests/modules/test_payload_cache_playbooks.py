"""The payload cache of the action plugins, seen from ansible-playbook (issue #13).

ansible-core builds a module's AnsiballZ payload in every playbook run; the cnm action
plugins keep it under ANSIBLE_HOME. The first run builds and keeps it, the next run uses
the kept copy instead of building (Ansible's own debug output says which), an edit of a
module_utils file builds it again, and CNM_PAYLOAD_CACHE=0 leaves everything to Ansible.
"""
import glob
import os

from ansible_runner import run_playbook

PLAY = """
- hosts: all
  gather_facts: false
  tasks:
    - name: networks
      cnm.core.cnm_network_info:
"""
FQN = "ansible_collections.cnm.core.plugins.modules.cnm_network_info"


def _run(host, home, **env):
    env = dict({"ANSIBLE_HOME": home, "ANSIBLE_DEBUG": "1"}, **env)
    result = run_playbook(host, PLAY, env=env).assert_ok()
    assert "host" in [n["Name"] for n in result["networks"]["networks"]]
    return result.stdout


def _kept(home):
    return sorted(glob.glob(os.path.join(home, "cnm_core", "payloads", FQN, "*", FQN + "-*")))


def test_the_second_run_uses_the_payload_the_first_one_built(host, tmp_path):
    home = str(tmp_path / "home")
    first = _run(host, home)
    assert "ANSIBALLZ: Creating module" in first
    kept = _kept(home)
    assert len(kept) == 1, kept
    second = _run(host, home)
    assert "ANSIBALLZ: Creating module" not in second
    assert "ANSIBALLZ: using cached module" in second
    assert _kept(home) == kept


def test_the_switch_leaves_the_payload_to_ansible(host, tmp_path):
    home = str(tmp_path / "home")
    for dummy in range(2):
        out = _run(host, home, CNM_PAYLOAD_CACHE="0")
        assert "ANSIBALLZ: Creating module" in out
    assert _kept(home) == []


SLIM_PLAY = """
- hosts: all
  gather_facts: false
  tasks:
    - name: first
      cnm.core.cnm_network_info:
      register: first
    - name: second
      cnm.core.cnm_network_info:
      register: second
    - name: our keys never reach the user
      ansible.builtin.assert:
        that:
          - first._cnm_bytecode_cache is not defined
          - second._cnm_bytecode_cache is not defined
          - second._cnm_bytecode_cache_missing is not defined
"""


def _cache_dirs(cache):
    return sorted(n for n in os.listdir(cache) if ".tmp-" not in n) \
        if os.path.isdir(cache) else []


def test_a_host_with_the_compiled_engine_gets_a_slim_payload(host, tmp_path):
    """The first task of a run leaves the compiled engine on the host and the
    controller learns it; the next one is sent slim. A host whose copy went away
    (here: removed between two runs) answers so, gets the whole payload in the same
    task, and the play goes on."""
    import shutil
    home, cache = str(tmp_path / "home"), str(tmp_path / "cache")
    env = {"ANSIBLE_HOME": home, "CNM_MODULE_CACHE_DIR": cache}
    first = run_playbook(host, SLIM_PLAY, env=env, verbosity=3).assert_ok()
    dirs = sorted(_cache_dirs(cache), key=lambda n: not n.startswith("ansible-"))
    # the engine's files, and ansible-core's module_utils, each compiled
    assert len(dirs) == 2 and dirs[0].startswith("ansible-"), dirs
    assert os.path.exists(os.path.join(cache, dirs[1], "controller", "__pycache__"))
    assert os.path.exists(os.path.join(cache, dirs[0], "basic.py"))
    assert os.path.exists(os.path.join(cache, dirs[0], "__pycache__"))
    remembered = os.listdir(os.path.join(home, "cnm_core", "hosts"))
    assert remembered
    keys = os.listdir(os.path.join(home, "cnm_core", "hosts", remembered[0]))
    assert keys == [dirs[1] + "+" + dirs[0][len("ansible-"):]], keys
    assert "has no compiled engine" not in first.stdout
    shutil.rmtree(cache)
    again = run_playbook(host, SLIM_PLAY, env=env, verbosity=3).assert_ok()
    assert again.stdout.count("has no compiled engine %s" % keys[0]) == 1, again.stdout
    assert _cache_dirs(cache) == sorted(dirs)

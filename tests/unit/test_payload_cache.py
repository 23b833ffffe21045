"""The controller's payload cache (plugins/plugin_utils/payload_cache.py).

A payload kept from an earlier playbook run must be used only for exactly the sources it
was built from: any edit of the module or of a module_utils file gives a new key. The
files are copied whole (never half-written), locks are not kept, and only the newest
keys of a module stay on disk.
"""
import os
import time

from ansible_collections.cnm.core.plugins.plugin_utils import payload_cache as pc

FQN = "ansible_collections.cnm.core.plugins.modules.cnm_topology"


def _collection(tmp_path):
    """A minimal collection tree: one module and two module_utils files."""
    root = tmp_path / "ansible_collections" / "cnm" / "core" / "plugins"
    (root / "modules").mkdir(parents=True)
    (root / "module_utils" / "controller").mkdir(parents=True)
    module = root / "modules" / "cnm_topology.py"
    module.write_text("from ..module_utils.controller import engine\n")
    (root / "module_utils" / "constants.py").write_text("A = 1\n")
    (root / "module_utils" / "controller" / "engine.py").write_text("B = 2\n")
    return str(module), root


def test_the_prefix_is_the_name_ansible_gives_the_payload(tmp_path):
    module, dummy = _collection(tmp_path)
    assert pc.payload_prefix(module) == FQN + "-"
    assert pc.payload_prefix("/usr/share/ansible/plugins/modules/mine.py") is None


def test_the_key_changes_with_every_source_of_the_payload(tmp_path):
    module, root = _collection(tmp_path)
    first = pc.payload_key(module)
    assert pc.payload_key(module) == first
    (root / "module_utils" / "controller" / "engine.py").write_text("B = 3\n")
    second = pc.payload_key(module)
    assert second != first
    (root / "module_utils" / "controller" / "new.py").write_text("C = 1\n")
    third = pc.payload_key(module)
    assert third not in (first, second)
    with open(module, "a") as fh:
        fh.write("# edited\n")
    assert pc.payload_key(module) not in (first, second, third)
    # a file that is not Python source is not part of a payload
    (root / "module_utils" / "notes.txt").write_text("x")
    assert pc.payload_key(module) == pc.payload_key(module)


def test_a_configured_module_utils_path_is_part_of_the_key(tmp_path):
    module, dummy = _collection(tmp_path)
    extra = tmp_path / "mu"
    extra.mkdir()
    (extra / "mine.py").write_text("X = 1\n")
    assert pc.payload_key(module, [str(extra)]) != pc.payload_key(module)


def test_a_built_payload_is_kept_then_seeds_the_next_run(tmp_path):
    run1, run2 = tmp_path / "run1", tmp_path / "run2"
    store = tmp_path / "store" / FQN / "key1"
    run1.mkdir()
    (run1 / (FQN + "-ZIP_DEFLATED-none")).write_bytes(b"payload")
    (run1 / (FQN + "-ZIP_DEFLATED-none.lock")).write_bytes(b"")
    (run1 / "ansible_collections.cnm.core.plugins.modules.cnm_dns-ZIP_DEFLATED-none"
     ).write_bytes(b"other module")
    assert not pc.seed(str(run1), str(store), FQN + "-")  # nothing kept yet
    pc.keep(str(run1), str(store), FQN + "-")
    assert sorted(os.listdir(store)) == [FQN + "-ZIP_DEFLATED-none"]
    assert pc.seed(str(run2), str(store), FQN + "-")
    assert sorted(os.listdir(run2)) == [FQN + "-ZIP_DEFLATED-none"]
    assert (run2 / (FQN + "-ZIP_DEFLATED-none")).read_bytes() == b"payload"


def test_only_the_newest_keys_of_a_module_stay(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / (FQN + "-ZIP_DEFLATED-none")).write_bytes(b"payload")
    module_dir = tmp_path / "store" / FQN
    for n in range(pc.KEEP + 2):
        pc.keep(str(run), str(module_dir / ("key%d" % n)), FQN + "-")
        stamp = time.time() - 100 + n
        os.utime(module_dir / ("key%d" % n), (stamp, stamp))
    pc.keep(str(run), str(module_dir / "newest"), FQN + "-")
    left = sorted(os.listdir(module_dir))
    assert len(left) == pc.KEEP and "newest" in left and "key0" not in left


def test_the_switch_turns_the_cache_off():
    assert pc.enabled({})
    assert pc.enabled({"CNM_PAYLOAD_CACHE": "1"})
    for off in ("0", "false", "No", " off "):
        assert not pc.enabled({"CNM_PAYLOAD_CACHE": off})

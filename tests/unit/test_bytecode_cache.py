"""The host's compiled copy of the engine (module_utils/bytecode_cache.py) and the slim
payloads that rely on it (plugin_utils/slim_payload.py).

Each run is a fresh Python (``-S``, the zip first on its path) importing a small package
from a zip laid out as an AnsiballZ payload: the engine package's real
``bytecode_cache.py`` beside a stand-in adapter and engine file.
"""
import base64
import io
import json
import os
import subprocess
import sys
import zipfile

import pytest

from ansible_collections.cnm.core.plugins.module_utils import bytecode_cache
from ansible_collections.cnm.core.plugins.plugin_utils import slim_payload

PREFIX = slim_payload.PACKAGE_PREFIX
SOURCE = os.path.join(os.path.dirname(os.path.abspath(bytecode_cache.__file__)),
                      "bytecode_cache.py")
PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
import ansible_collections.cnm.core.plugins.module_utils.ansible_adapter
from ansible_collections.cnm.core.plugins.module_utils import bytecode_cache, engine_part
import ansible.module_utils.basic_part
print(json.dumps({"file": engine_part.__file__, "value": engine_part.VALUE,
                  "active": bytecode_cache.ACTIVE_KEY,
                  "ansible_file": ansible.module_utils.basic_part.__file__,
                  "ansible_init_ran": getattr(ansible.module_utils, "INIT_RAN", False)}))
"""

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the cache is root's only")


def _payload(tmp_path, value=1):
    """A full payload zip; returns its path."""
    files = {
        "ansible_collections/__init__.py": "",
        "ansible_collections/cnm/__init__.py": "",
        "ansible_collections/cnm/core/__init__.py": "",
        "ansible_collections/cnm/core/plugins/__init__.py": "",
        PREFIX + "__init__.py": "",
        PREFIX + "bytecode_cache.py": open(SOURCE).read(),
        PREFIX + "ansible_adapter.py":
            "from ansible_collections.cnm.core.plugins.module_utils import bytecode_cache\n",
        PREFIX + "engine_part.py": "VALUE = %d\n" % value,
        PREFIX + "controller/__init__.py": "",
        # the bulk a slim payload leaves out (random: it must not compress away)
        PREFIX + "engine_bulk.py": "BULK = %r\n" % base64.b64encode(os.urandom(6000)),
        # ansible-core's own, as AnsiballZ ships them
        "ansible/__init__.py": "",
        "ansible/module_utils/__init__.py": "# licence\nINIT_RAN = True\n",
        "ansible/module_utils/basic_part.py": "VALUE = %d\n" % value,
    }
    path = str(tmp_path / ("payload-%d.zip" % value))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in files.items():
            z.writestr(name, text)
    return path


def _slim(path, tmp_path):
    with open(path, "rb") as f:
        key, literal = slim_payload._make_slim(base64.b64encode(f.read()))
    slim = str(tmp_path / "slim.zip")
    with open(slim, "wb") as f:
        f.write(base64.b64decode(literal))
    return key, slim


def _run(zip_path, cache, **env):
    environ = dict(os.environ, CNM_MODULE_CACHE_DIR=cache, **env)
    environ.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, "-S", "-c", PROBE, zip_path], env=environ,
                          capture_output=True, text=True, timeout=60, check=False)
    return proc.returncode, proc.stdout.strip(), proc.stderr


def test_the_first_run_unpacks_and_compiles_the_next_import_from_there(tmp_path):
    cache = str(tmp_path / "cache")
    payload = _payload(tmp_path)
    rc, out, err = _run(payload, cache)
    assert rc == 0, err
    first = json.loads(out)
    engine_key, dummy, ansible_key = first["active"].partition("+")
    assert engine_key and ansible_key, first
    # this run imported from the zip, and left both compiled for the next
    assert first["file"].startswith(os.path.join(cache, engine_key))
    ansible_dir = os.path.join(cache, "ansible-" + ansible_key)
    assert [n for n in os.listdir(os.path.join(ansible_dir, "__pycache__"))
            if n.startswith("basic_part.")]
    target = os.path.join(cache, engine_key)
    assert os.path.exists(os.path.join(target, bytecode_cache.COMPLETE_MARK))
    assert [n for n in os.listdir(os.path.join(target, "__pycache__"))
            if n.startswith("engine_part.")]
    assert os.stat(cache).st_mode & 0o777 == 0o700
    rc, out, err = _run(payload, cache)
    assert rc == 0 and json.loads(out) == first, err
    # other sources, another directory
    rc, out, err = _run(_payload(tmp_path, value=2), cache)
    second = json.loads(out)
    assert second["value"] == 2 and second["active"] != first["active"]


def test_a_cache_others_can_write_or_switched_off_is_not_used(tmp_path):
    cache = str(tmp_path / "cache")
    payload = _payload(tmp_path)
    rc, out, err = _run(payload, cache, CNM_MODULE_CACHE="0")
    assert rc == 0 and json.loads(out)["active"] is None, err
    assert json.loads(out)["file"].startswith(payload)
    os.makedirs(cache)
    os.chmod(cache, 0o777)
    rc, out, err = _run(payload, cache)
    assert rc == 0 and json.loads(out)["active"] is None, err
    assert os.listdir(cache) == []


def test_a_slim_payload_uses_the_hosts_copy_or_asks_for_the_whole_one(tmp_path):
    cache = str(tmp_path / "cache")
    payload = _payload(tmp_path)
    key, slim = _slim(payload, tmp_path)
    with zipfile.ZipFile(slim) as z:
        names = {n[len(PREFIX):] for n in z.namelist() if n.startswith(PREFIX)}
        # of ansible-core's module_utils, only a stub __init__ that finds the others
        assert [n for n in z.namelist() if n.startswith("ansible/module_utils/")] \
            == ["ansible/module_utils/__init__.py"]
        assert b"_cnm_slim_module_utils" in z.read("ansible/module_utils/__init__.py")
    assert names == set(bytecode_cache.SLIM_KEEPS) | {bytecode_cache.KEY_MEMBER}
    # no copy on the host yet: the run stops before importing anything, saying so
    rc, out, err = _run(slim, cache)
    assert rc == 1 and json.loads(out)[bytecode_cache.MISSING_RESULT_KEY] == key, (out, err)
    # the whole payload makes it; the slim one then runs from it
    rc, out, err = _run(payload, cache)
    assert rc == 0 and json.loads(out)["active"] == key, err
    rc, out, err = _run(slim, cache)
    assert rc == 0, err
    ran = json.loads(out)
    assert ran["active"] == key and ran["value"] == 1
    # ansible-core's module_utils too, with their own __init__ run
    ansible_dir = os.path.join(cache, "ansible-" + key.partition("+")[2])
    assert ran["ansible_file"].startswith(ansible_dir + os.sep), ran
    assert ran["ansible_init_ran"] is True
    # switched off on the host: asks for the whole payload again
    rc, out, err = _run(slim, cache, CNM_MODULE_CACHE="0")
    assert rc == 1 and json.loads(out)[bytecode_cache.MISSING_RESULT_KEY] == key
    # ansible-core's part gone (or not ours): the stub asks for it before anything
    os.chmod(ansible_dir, 0o777)
    rc, out, err = _run(slim, cache)
    assert rc == 1 and json.loads(out)[bytecode_cache.MISSING_RESULT_KEY] == key, (out, err)
    os.chmod(ansible_dir, 0o755)
    import shutil
    shutil.rmtree(ansible_dir)
    rc, out, err = _run(slim, cache)
    assert rc == 1 and json.loads(out)[bytecode_cache.MISSING_RESULT_KEY] == key, (out, err)


def test_slim_zip_rewrites_only_the_zip_literal_of_a_wrapper(tmp_path):
    with open(_payload(tmp_path), "rb") as f:
        literal = base64.b64encode(f.read())
    for template in (b"#!/usr/bin/python\nx = 1\nzip_data='%s'\nmain()\n",
                     b"#!/usr/bin/python\ndef f():\n    ZIPDATA = '%s'\n"):
        script = template % literal
        key, slim = slim_payload.slim_zip(script)
        assert len(slim) < len(script)
        assert slim.startswith(script.split(literal)[0]) and slim.endswith(
            script.split(literal)[1])
    assert slim_payload.slim_zip(b"print('hello')\n") is None
    # a zip without the adapter is not ours to slim
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(PREFIX + "other.py", "")
    assert slim_payload.slim_zip(b"zip_data='%s'\n" % base64.b64encode(buf.getvalue())) \
        is None

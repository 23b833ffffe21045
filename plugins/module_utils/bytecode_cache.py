"""A host-side copy of the engine, compiled, for modules that run from an AnsiballZ zip.

ansible-core runs a module from a zip of its sources (its AnsiballZ payload): Python
imports from a zip without keeping bytecode, so every task compiles every engine module
it imports again (~120 ms of a ~650 ms attach task on the 2-core test machine). The
adapter (``ansible_adapter.py``, the first engine file every module imports) imports
this file first; importing it calls ``use_bytecode_cache`` when the package came from
such a zip (AnsiballZ ships the package's own ``__init__`` empty): the first run unpacks the package's files from the zip into a directory named by a hash
of their contents and compiles them there; this run and the later ones import the
package's modules from that directory, bytecode included.

- Only root's runs use it, in a directory owned by root that nobody else can write
  (``/var/cache/cnm.core/module_utils``; ``CNM_MODULE_CACHE_DIR`` elsewhere,
  ``CNM_MODULE_CACHE=0`` turns it off). Anything unexpected (another owner, a mode
  others can write, a full disk, a read-only /var) and the run imports from the zip,
  as without the cache: never required, never an error.
- A directory is complete or absent: it is written beside its final name and renamed.
  Its name is a hash of every file's name, size and CRC in the zip, so another release,
  or a module shipping other files, gets another directory. The newest
  ``KEEP_DIRECTORIES`` (by last use) are kept.
- ansible-core's own ``module_utils`` files in the zip get the same treatment in a
  directory ``ansible-<hash>`` beside it: a slim payload ships neither, and a stub
  ``ansible/module_utils/__init__.py`` (``ansible_stub``) puts that directory first on
  ``ansible.module_utils``' path before anything of Ansible's is imported from it.
- Mitogen and a checkout import from plain files: this is never called there.
"""
import compileall
import hashlib
import os
import shutil
import stat
import sys
import time
import zipfile

DEFAULT_CACHE_DIR = "/var/cache/cnm.core/module_utils"
CACHE_DIR_ENV = "CNM_MODULE_CACHE_DIR"
CACHE_SWITCH_ENV = "CNM_MODULE_CACHE"
KEEP_DIRECTORIES = 48   # each module ships its own subset: 10 modules (and ansible-core's
#                         module_utils per module), a few releases
COMPLETE_MARK = ".complete"
# A slim payload (plugins/plugin_utils/slim_payload.py) ships only these files of the
# package, and the key of the directory that must hold the others:
SLIM_KEEPS = ("__init__.py", "ansible_adapter.py", "bytecode_cache.py")
KEY_MEMBER = "bytecode_cache.key"
# ansible-core's module_utils in the payload, cached in ANSIBLE_DIR_PREFIX + their hash;
# a slim payload's key is then "<engine key>+<ansible key>"
ANSIBLE_PREFIX = "ansible/module_utils/"
ANSIBLE_DIR_PREFIX = "ansible-"
KEY_SEPARATOR = "+"
MISSING_RESULT_KEY = "_cnm_bytecode_cache_missing"
USED_RESULT_KEY = "_cnm_bytecode_cache"

ACTIVE_KEY = None       # the directory this run imports from (reported to the controller)


def use_bytecode_cache(package_name, package_path, loader):
    """Called when this file is imported and ``loader`` (a zipimporter) imported its
    package ``package_name``.

    Puts the cached, compiled copy of the package's files first on ``package_path``
    (the package's ``__path__``), making it first when it does not exist yet. Returns
    that directory, or None when the run imports from the zip (not root, cache off or
    unusable). Never raises, but a slim payload whose directory is missing ends the
    process (``_use_slim``).
    """
    try:
        archive = getattr(loader, "archive", None)
        if not archive:
            return None
        prefix = package_name.replace(".", "/") + "/"
        root = os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR
        with zipfile.ZipFile(archive) as payload:
            members = members_under(payload.infolist(), prefix)
            if any(i.filename == prefix + KEY_MEMBER for i in members):
                slim_key = payload.read(prefix + KEY_MEMBER).decode("ascii").strip()
            else:
                slim_key = None
            if slim_key is None and (not members or not _wanted()):
                return None
            if slim_key is None:
                key = payload_key(prefix, members)
                target = os.path.join(root, key)
                if not _trusted(root):
                    return None
                made = _cached(payload, prefix, members, target)
                if made is None:
                    return None
                package_path.insert(0, target)
                ansible_key, ansible_made = _cache_ansible(payload, root)
                _set_active(key + KEY_SEPARATOR + ansible_key if ansible_key else key)
                if made or ansible_made:
                    _prune(root, keep=(key, ANSIBLE_DIR_PREFIX + (ansible_key or "")))
                return target
    except Exception:  # pylint: disable=broad-except
        return None
    return _use_slim(slim_key, root, package_path)


def _cached(payload, prefix, members, target):
    """Make sure ``target`` holds ``members`` compiled; its last use is now. True when
    it was unpacked now, False when it was there, None when it is not ours to use."""
    if not os.path.exists(os.path.join(target, COMPLETE_MARK)):
        _unpack(payload, prefix, members, target)
        return True
    if not _trusted(target):
        return None
    os.utime(target)    # last use: what pruning keeps
    return False


def _cache_ansible(payload, root):
    """``(key, unpacked now)`` of ansible-core's module_utils of ``payload``, cached
    and compiled in ``root/ansible-<key>``; ``(None, False)`` when the payload has
    none or they cannot be cached (the run goes on without)."""
    try:
        members = members_under(payload.infolist(), ANSIBLE_PREFIX)
        if any(i.filename == ANSIBLE_PREFIX + "__init__.py" for i in members):
            key = payload_key(ANSIBLE_PREFIX, members)
            made = _cached(payload, ANSIBLE_PREFIX, members,
                           os.path.join(root, ANSIBLE_DIR_PREFIX + key))
            if made is not None:
                return key, made
    except Exception:  # pylint: disable=broad-except
        pass
    return None, False


def _wanted():
    return os.environ.get(CACHE_SWITCH_ENV, "1") != "0" and os.geteuid() == 0


def _set_active(key):
    global ACTIVE_KEY  # pylint: disable=global-statement
    ACTIVE_KEY = key


def _use_slim(key, root, package_path):
    """A slim payload: the package's other files are in ``root/key`` or this run stops
    before doing anything, telling the controller, which sends the full payload."""
    engine_key, dummy, ansible_key = key.partition(KEY_SEPARATOR)
    target = os.path.join(root, engine_key)
    needed = [target]
    if ansible_key:
        needed.append(os.path.join(root, ANSIBLE_DIR_PREFIX + ansible_key))
    try:
        usable = _wanted() and all(_complete(path) for path in needed)
    except Exception:  # pylint: disable=broad-except
        usable = False
    if usable:
        for path in needed:
            os.utime(path)
        package_path.insert(0, target)
        _set_active(key)
        return target
    import json
    sys.stdout.write(json.dumps({
        "failed": True, MISSING_RESULT_KEY: key,
        "msg": "cnm.core: this host has no compiled engine %s; the controller sends the "
               "whole module next" % key}) + "\n")
    sys.stdout.flush()
    raise SystemExit(1)


def members_under(infos, prefix):
    """The file members (ZipInfo) of ``infos`` whose names start with ``prefix``, by
    name: what ``payload_key`` hashes."""
    return sorted((i for i in infos if i.filename.startswith(prefix) and not i.is_dir()),
                  key=lambda i: i.filename)


def _complete(path):
    """``path`` is a whole cache directory of ours."""
    if not os.path.exists(os.path.join(path, COMPLETE_MARK)):
        return False
    return _trusted(path)


def payload_key(prefix, members):
    """The cache directory's name for the zip ``members`` (ZipInfo) under ``prefix``:
    a hash of their names (below ``prefix``), sizes and CRCs. The controller computes
    it too, from the full payload, to name the directory a slim payload needs."""
    digest = hashlib.sha256()
    for info in members:
        line = "%s\0%d\0%08x\n" % (info.filename[len(prefix):], info.file_size, info.CRC)
        digest.update(line.encode("utf-8"))
    return digest.hexdigest()[:24]


def _trusted(path):
    """``path`` is a directory of ours: owned by root, nobody else can write it (made
    so when missing, for the cache's root)."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == 0 and not st.st_mode & 0o022


def _unpack(payload, prefix, members, target):
    """Write the members under a temporary name, compile them, rename into place."""
    tmp = "%s.tmp-%d" % (target, os.getpid())
    shutil.rmtree(tmp, ignore_errors=True)
    os.mkdir(tmp, 0o700)
    try:
        for info in members:
            rel = info.filename[len(prefix):]
            dest = os.path.normpath(os.path.join(tmp, rel))
            if not dest.startswith(tmp + os.sep):
                raise ValueError("member outside the package: %s" % info.filename)
            os.makedirs(os.path.dirname(dest), mode=0o755, exist_ok=True)
            with payload.open(info) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out)
        # bytecode whatever PYTHONDONTWRITEBYTECODE says; tracebacks name the final
        # path; the files never change once renamed, so their pyc need no source check
        import py_compile
        if not compileall.compile_dir(
                tmp, ddir=target, quiet=1, workers=1,
                invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH):
            raise ValueError("compile failed")
        with open(os.path.join(tmp, COMPLETE_MARK), "w", encoding="ascii"):
            pass
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, target)
        except OSError:
            if not os.path.exists(os.path.join(target, COMPLETE_MARK)):
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another run made it first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _prune(root, keep):
    """Keep the ``KEEP_DIRECTORIES`` directories used last (and those named in
    ``keep``)."""
    entries = []
    now = time.time()
    for name in os.listdir(root):
        path = os.path.join(root, name)
        try:
            mtime = os.lstat(path).st_mtime
        except OSError:
            continue
        if ".tmp-" in name and now - mtime < 3600:
            continue                    # another run is writing it
        entries.append((mtime, name, path))
    entries.sort(reverse=True)
    for index, (dummy, name, path) in enumerate(entries):
        if name not in keep and index >= KEEP_DIRECTORIES:
            shutil.rmtree(path, ignore_errors=True)


ANSIBLE_STUB = '''# cnm.core: a slim payload (plugins/module_utils/bytecode_cache.py). ansible-core's
# module_utils are not in it: they come compiled from this host's cache, or the run stops
# before anything is done and the controller sends the whole module.
def _cnm_slim_module_utils(slim_key, name):
    import os
    import sys
    root = os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR
    target = os.path.join(root, name)
    import stat
    try:
        st = os.lstat(target)
        usable = (os.environ.get(CACHE_SWITCH_ENV, "1") != "0" and os.geteuid() == 0
                  and stat.S_ISDIR(st.st_mode) and st.st_uid == 0
                  and not st.st_mode & 0o022
                  and os.path.exists(os.path.join(target, COMPLETE_MARK)))
    except OSError:
        usable = False
    if usable:
        __path__.insert(0, target)
        original = os.path.join(target, "__init__.py")
        with open(original, "rb") as source:
            exec(compile(source.read(), original, "exec"), globals())
        return
    import json
    sys.stdout.write(json.dumps({
        "failed": True, MISSING_RESULT_KEY: slim_key,
        "msg": "cnm.core: this host has no compiled module_utils " + name
               + "; the controller sends the whole module next"}) + "\\n")
    sys.stdout.flush()
    raise SystemExit(1)


'''


def ansible_stub(slim_key):
    """The ``ansible/module_utils/__init__.py`` of a slim payload whose key is
    ``slim_key`` (``<engine key>+<ansible key>``): called by the controller when it
    makes the payload. Run on the host, it puts ``ansible-<ansible key>`` first on the
    package's path, or writes the missing-cache result and exits."""
    ansible_key = slim_key.partition(KEY_SEPARATOR)[2]
    constants = "".join("%s = %r\n" % (name, globals()[name]) for name in (
        "CACHE_DIR_ENV", "DEFAULT_CACHE_DIR", "CACHE_SWITCH_ENV", "COMPLETE_MARK",
        "MISSING_RESULT_KEY"))
    call = "_cnm_slim_module_utils(%r, %r)\n" % (slim_key, ANSIBLE_DIR_PREFIX + ansible_key)
    cleanup = "del _cnm_slim_module_utils, %s\n" % ", ".join(
        line.split(" = ")[0] for line in constants.splitlines())
    return (ANSIBLE_STUB + constants + call + cleanup).encode("utf-8")


def _activate():
    package = sys.modules.get(__name__.rpartition(".")[0])
    loader = getattr(package, "__loader__", None)
    if package is not None and getattr(loader, "archive", None):
        use_bytecode_cache(package.__name__, package.__path__, loader)


_activate()

"""The daemon's log: one named logger, a size-capped file, and rate-limited messages."""
import logging
import os
import time

LOG_MAX_BYTES = 1 << 20

log = logging.getLogger("cnm_resolver")

_logged = {}


def log_once(key, level, msg, *args, every=60.0):
    """Log ``msg`` at most once per ``every`` seconds per ``key`` (no log floods)."""
    now = time.monotonic()
    last = _logged.get(key)
    if last is not None and now - last < every:
        return
    _logged[key] = now
    log.log(level, msg, *args)


def setup_logging(path, debug=False):
    """Log to ``path`` (moved to ``path.1`` first when it passed LOG_MAX_BYTES)."""
    try:
        if os.path.getsize(path) > LOG_MAX_BYTES:
            os.replace(path, path + ".1")
    except OSError:
        pass
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(
        "%(asctime)s cnm_resolver[%(process)d] %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if debug else logging.INFO)
    log.propagate = False
    return handler

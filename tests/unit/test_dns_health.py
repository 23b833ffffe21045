"""The engine's health check of the resolver (service.resolver_health) against a fake
control socket: what counts as healthy, unhealthy, and as "cannot tell"."""
import json
import os
import socket
import threading

import pytest

from ansible_collections.cnm.core.plugins.module_utils.dns import service


@pytest.fixture
def control(tmp_path):
    """``serve(reply)``: a control socket answering every request with ``reply`` (a
    dict, or None: never answer); returns the requests it got."""
    path = service.resolver_paths(str(tmp_path))["control"]
    os.makedirs(os.path.dirname(path))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.bind(path)
    sock.listen(4)
    got, held = [], []

    def serve(reply):
        def loop():
            while True:
                try:
                    conn = sock.accept()[0]
                except OSError:
                    return
                got.append(json.loads(conn.recv(4096)))
                if reply is None:
                    held.append(conn)         # connected, never answered
                    continue
                with conn:
                    conn.send(json.dumps(reply).encode())
        threading.Thread(target=loop, daemon=True).start()
        return got

    try:
        yield str(tmp_path), serve
    finally:
        sock.close()
        for conn in held:
            conn.close()


def test_healthy_daemon(control):
    run_dir, serve = control
    got = serve({"ok": True, "failed": [], "age_ms": {"udp": 1.0, "tcp": 2.0}})
    assert service.resolver_health(run_dir) is True
    assert got == [{"op": "health"}]


def test_a_dead_loop_is_unhealthy(control):
    run_dir, serve = control
    serve({"ok": False, "failed": ["tcp"], "age_ms": {}})
    assert service.resolver_health(run_dir) is False


def test_no_answer_in_time_is_unhealthy(control):
    run_dir, serve = control
    serve(None)
    assert service.resolver_health(run_dir, timeout=0.2) is False


def test_an_older_daemon_without_health_cannot_tell(control):
    run_dir, serve = control
    serve({"ok": False, "error": "unknown op 'health'"})
    assert service.resolver_health(run_dir) is None


def test_no_socket_or_nobody_listening_cannot_tell(tmp_path):
    run_dir = str(tmp_path)
    assert service.resolver_health(run_dir) is None                  # no socket file
    path = service.resolver_paths(run_dir)["control"]
    os.makedirs(os.path.dirname(path))
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    stale.bind(path)                  # the file of a daemon gone, or one starting
    stale.close()
    assert service.resolver_health(run_dir) is None
    assert service.notify_resolver(run_dir, ["x"]) is None

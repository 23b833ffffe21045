"""The resolver does not reload every sandbox when the engine has just written one
sandbox's file: it waits briefly for the engine to name it on the control socket (a
full reload raced that notice under load), and still applies a change nobody names."""
import json
import os

from ansible_collections.cnm.core.plugins.module_utils.dns.resolver import daemon


def _server(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"version": 1, "sandboxes": {}, "networks": {}}))
    (tmp_path / "sandboxes").mkdir()
    server = daemon.Server(str(cfg))
    reloads = []
    real = server.files.load_config

    def counting():
        reloads.append(1)
        return real()
    server.files.load_config = counting
    server.listeners.apply = lambda *a, **k: None  # no namespaces here
    return server, reloads


def test_a_fresh_sandbox_file_waits_for_the_engine_then_is_applied_anyway(tmp_path):
    server, reloads = _server(tmp_path)
    server._tick(False)
    assert len(reloads) == 1  # the first config load
    (tmp_path / "sandboxes" / "web.json").write_text("{}")
    start = 1000.0
    assert server._engine_will_tell(server.files.stamp(), start)
    assert server._engine_will_tell(server.files.stamp(), start + 0.5)
    assert not server._engine_will_tell(server.files.stamp(), start
                                        + daemon.FRAGMENT_GRACE + 0.01)


def test_a_changed_config_is_never_postponed(tmp_path):
    server, reloads = _server(tmp_path)
    server._tick(False)
    (tmp_path / "sandboxes" / "web.json").write_text("{}")
    os.utime(tmp_path / "config.json", ns=(1, 1))
    assert not server._engine_will_tell(server.files.stamp(), 0.0)
    server._tick(False)
    assert len(reloads) == 2


def test_a_tick_right_after_an_engine_write_does_not_reload_everything(tmp_path):
    server, reloads = _server(tmp_path)
    server._tick(False)
    (tmp_path / "sandboxes" / "web.json").write_text("{}")
    server._tick(False)  # the engine has not told it yet: no full reload
    assert len(reloads) == 1
    server.apply_request("update", ["web"])  # the engine's notice
    server._tick(False)
    assert len(reloads) == 1

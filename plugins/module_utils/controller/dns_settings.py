"""DNS settings: ``cnm_dns`` (the host resolver and one sandbox's name settings)."""
import dataclasses
import os

from .. import validation as V
from ..difference import DifferenceTracker
from ..errors import NotFoundError, ValidationError
from . import dns_sync
from .dns_sync import DnsSync
from .result import Result


class DnsSettings(DnsSync):
    """The DNS settings operation."""

    def dns(self, params):
        """cnm_dns: the host resolver (``resolver``, ``upstreams``, ``ttl``) and/or one
        sandbox's name settings (``nameservers``, ``search``, ``options``, ``hostname``,
        ``domainname``, ``extra_hosts``). Validates everything before writing anything;
        the diff holds the settings and the files before/after."""
        from ..dns import files
        resolver = {}
        if params.get("resolver") is not None:
            if params["resolver"] not in ("started", "stopped"):
                raise ValidationError("must be started or stopped", field="resolver")
            resolver["state"] = params["resolver"]
        if params.get("upstreams") is not None:
            resolver["upstreams"] = files.validate_upstreams(params["upstreams"])
        if params.get("ttl") is not None:
            resolver["ttl"] = V.integer(params["ttl"], "ttl", 1, 2147483647)
        sandbox = None
        settings = {}
        if params.get("sandbox") is not None:
            sandbox = V.object_name(params["sandbox"], "sandbox", "sandbox")
            if params.get("nameservers") is not None:
                settings["nameservers"] = files.validate_nameservers(params["nameservers"])
            if params.get("search") is not None:
                settings["search"] = files.validate_search(params["search"])
            if params.get("options") is not None:
                settings["options"] = files.validate_options(params["options"])
            for key in ("hostname", "domainname"):
                if params.get(key) is not None:
                    settings[key] = files.validate_name(params[key], key)
            if params.get("extra_hosts") is not None:
                settings["extra_hosts"] = [list(e) for e in
                                           files.parse_extra_hosts(
                                               params["extra_hosts"],
                                               host_gateway=files.HOST_GATEWAY)]
            if params.get("sandbox_upstreams") is not None:
                settings["upstreams"] = files.validate_upstreams(
                    params["sandbox_upstreams"], "sandbox_upstreams")
        else:
            for key in ("nameservers", "search", "options", "hostname", "domainname",
                        "extra_hosts", "sandbox_upstreams"):
                if params.get(key) is not None:
                    raise ValidationError("needs sandbox", field=key)
        return self._run(self._dns_op, resolver, sandbox, settings)

    def _dns_op(self, resolver, sandbox, settings):
        from ..dns import service
        diff = DifferenceTracker()
        current = dns_sync.resolver_settings(self.store)
        wanted = dict(current, **resolver)
        for key in sorted(resolver):
            if current.get(key) != wanted[key]:
                diff.add("resolver.%s" % key, current.get(key), wanted[key])
        status = service.resolver_status(self.run_dir)
        needed = dns_sync.needed(self.store)
        if wanted.get("state", "started") == "started" and needed and not status["running"]:
            diff.add("resolver.running", False, True)
        if wanted.get("state") == "stopped" and status["running"]:
            diff.add("resolver.running", True, False)
        sb = None
        files_before, files_after = {}, {}
        if sandbox is not None:
            sb = self._sandbox(sandbox)
            if sb is None and self.check_mode:
                return Result(changed=True, actions=["set DNS of %s (sandbox not created "
                                                     "yet)" % sandbox])
            if sb is None:
                raise NotFoundError("sandbox %s does not exist" % sandbox, field="sandbox")
            want_dns = dict(sb.dns, **settings)
            for key in sorted(settings):
                if sb.dns.get(key) != want_dns[key]:
                    diff.add("sandbox.%s" % key, sb.dns.get(key), want_dns[key])
            if sb.mode == "own":
                rendered = dns_sync.render_files(self, dataclasses.replace(sb, dns=want_dns))
                for directory in dns_sync.file_dirs(self, sb):
                    for name, content in sorted(rendered.items()):
                        path = os.path.join(directory, name)
                        try:
                            with open(path) as fh:
                                old = fh.read()
                        except OSError:
                            old = None
                        if old != content:
                            files_before[path] = old
                            files_after[path] = content
        result = Result(changed=bool(diff or files_after))
        result.actions = diff.describe() + ["write %s" % p for p in sorted(files_after)]
        result.diff = diff.as_diff()
        result.diff["before"].update({"file:" + p: c for p, c in files_before.items()})
        result.diff["after"].update({"file:" + p: c for p, c in files_after.items()})
        if result.changed and not self.check_mode:
            if resolver:
                self.store.set_setting("resolver", wanted)
            if sb is not None and settings:
                sb.dns = dict(sb.dns, **settings)
                with self.store.transaction():
                    self._save_sandbox(sb)
                    self._intend_dns(sb)
            if wanted.get("state") == "stopped":
                service.stop_resolver(self.run_dir)
            touched = tuple(s for s in (sb,) if s is not None)
            self._sync_dns(touched)
            self._clear_dns_intents(touched, False)
        status = service.resolver_status(self.run_dir)
        result.data["resolver"] = dict(wanted, running=status["running"], pid=status["pid"])
        if sb is not None:
            sb = self._sandbox(sandbox)
            result.data["sandbox"] = {"name": sb.name, "dns": dict(sb.dns),
                                      "files": dns_sync.file_dirs(self, sb)}
        return result

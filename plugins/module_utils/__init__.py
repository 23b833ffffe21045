"""The engine: everything cnm.core does on a host, importable and testable without
Ansible (only ``ansible_adapter.py`` knows AnsibleModule). ``docs/architecture.md`` maps it."""

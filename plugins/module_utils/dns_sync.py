"""Keeps the resolver's configuration and the per-sandbox files in step with the store."""


def sync(engine):
    """Called by the controller after every change of sandboxes or endpoints."""
    return None

"""What an operation returns: changed, diff, actions, data and warnings."""
import dataclasses


@dataclasses.dataclass
class Result:
    """What an operation did (or, in check mode, would do)."""
    changed: bool = False
    diff: dict = dataclasses.field(default_factory=lambda: {"before": {}, "after": {}})
    actions: list = dataclasses.field(default_factory=list)
    data: dict = dataclasses.field(default_factory=dict)
    warnings: list = dataclasses.field(default_factory=list)

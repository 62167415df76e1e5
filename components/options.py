"""The one way a component gives options to the resources it creates."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pulumi


def child_opts(parent: pulumi.Resource, *, provider: pulumi.ProviderResource | None = None,
               depends_on: Sequence[pulumi.Resource] = (), **extra: Any) -> pulumi.ResourceOptions:
    """Parented to the component (so URNs and `pulumi stack --show-urns` nest), on its provider, after
    ``depends_on``; ``extra`` carries the rest (replace_on_changes, custom_timeouts, ...)."""
    return pulumi.ResourceOptions(parent=parent, provider=provider, depends_on=list(depends_on), **extra)

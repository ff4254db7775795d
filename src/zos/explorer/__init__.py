"""The web explorer of the grid (`zos explorer serve`): its own package because it is a
separate reader of the grid — read-only pages of what the registry answers, and, when a
twin runs it on its own machine with its own key (`--mine`), that twin's deployments.

- `snapshot`: the whole registry read through `RegistryClient`, and its totals;
- `history`: what the explorer samples from those answers over the last hour;
- `live`: the poller that keeps a snapshot fresh and tells pages what changed;
- `query`: the node search (the filters of `zos nodes`, sorting, pages);
- `mine`: the twin's own deployments, through read-only bus commands;
- `charts`, `markup`, `pages`: server-rendered HTML with inline SVG;
- `server`: the aiohttp app (GET only, server-sent events, security headers).
"""

from zos.explorer.server import Explorer

__all__ = ["Explorer"]

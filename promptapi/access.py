"""Who may see, call or change what: the one place every surface asks (invoke, listings,
the catalog, /openapi.json, admin routes)."""

from __future__ import annotations

from promptapi.keys import Caller

# What an admin operation needs, declared once per operation beside its handler.
READ = "read"  # any admin credential: owner, maintainer, viewer
WRITE = "write"  # the owner, or a maintainer of the team the target belongs to
OWNER = "owner"  # the owner only


def admin_allows(caller: Caller, permission: str, team: str | None = None) -> bool:
    """May `caller` use an admin operation that needs `permission`, on something that belongs
    to `team` (None: not tied to one team)?"""
    return caller.admin


def sees_drafts(caller: Caller) -> bool:
    """May `caller` see and call draft versions (listings, describe, catalog, OpenAPI, invoke)?"""
    return caller.drafts

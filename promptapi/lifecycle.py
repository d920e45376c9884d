"""Version lifecycle and labels: the states, the transition rules and the label rules.

Pure functions over plain values; the store applies them inside its transactions and the
registry serves their outcome from memory.

    draft       publish -> published         retire -> retired
    published   deprecate -> deprecated      retire -> retired
    deprecated  publish -> published (undo)  deprecate (new sunset / successor)  retire -> retired
    retired     final: nothing

Labels are named pointers to versions: any label but not at a retired version, and
`production` not at a draft.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from promptapi.errors import LabelRefused, RequestInvalid, TransitionRefused

DRAFT, PUBLISHED, DEPRECATED, RETIRED = "draft", "published", "deprecated", "retired"
STATES = (DRAFT, PUBLISHED, DEPRECATED, RETIRED)
INITIAL_STATES = (DRAFT, PUBLISHED)
# States whose versions are served to every caller (drafts only to admin / allow_drafts keys).
SERVED = (PUBLISHED, DEPRECATED)
PRODUCTION = "production"

# action -> target state, per current state.
TRANSITIONS: dict[str, dict[str, str]] = {
    DRAFT: {"publish": PUBLISHED, "retire": RETIRED},
    PUBLISHED: {"deprecate": DEPRECATED, "retire": RETIRED},
    DEPRECATED: {"publish": PUBLISHED, "deprecate": DEPRECATED, "retire": RETIRED},
    RETIRED: {},
}
ACTIONS = ("publish", "deprecate", "retire")
_BODY_FIELDS = {"publish": set(), "deprecate": {"sunset", "successor"}, "retire": {"successor"}}


@dataclass(frozen=True, slots=True)
class Change:
    """The new lifecycle columns of a version after a transition."""

    state: str
    deprecated_at: datetime | None
    sunset_at: datetime | None
    successor: int | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "deprecated_at": _iso(self.deprecated_at),
            "sunset": _iso(self.sunset_at),
            "successor": self.successor,
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def parse_body(action: str, raw: Any) -> dict[str, Any]:
    """The optional body of a transition: deprecate takes `sunset` (RFC 3339 date-time) and
    `successor` (a version number); retire takes `successor`; publish takes nothing."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RequestInvalid(
            "Send a JSON object (or no body).",
            errors=[{"path": "", "message": "expected an object"}],
        )
    errors: list[dict[str, str]] = []
    allowed = _BODY_FIELDS[action]
    for extra in sorted(set(raw) - allowed):
        errors.append({"path": f"/{extra}", "message": f"unexpected property '{extra}'"})
    body: dict[str, Any] = {}
    if raw.get("successor") is not None and "successor" in allowed:
        successor = raw["successor"]
        if isinstance(successor, bool) or not isinstance(successor, int) or successor < 1:
            errors.append({"path": "/successor", "message": "expected a version number (>= 1)"})
        else:
            body["successor"] = successor
    if raw.get("sunset") is not None and "sunset" in allowed:
        sunset = parse_datetime(raw["sunset"])
        if sunset is None:
            errors.append(
                {
                    "path": "/sunset",
                    "message": "expected an RFC 3339 date-time with a time zone, between "
                    "years 0001 and 9999 in UTC, e.g. 2031-06-30T23:59:59Z",
                }
            )
        else:
            body["sunset"] = sunset
    if errors:
        raise RequestInvalid(f"The {action} request has {len(errors)} problem(s).", errors=errors)
    return body


def parse_datetime(value: Any) -> datetime | None:
    """An RFC 3339 date-time with an offset, as UTC; None if it is not one, or if it is not
    between years 0001 and 9999 once in UTC (`0001-01-01T00:00:00+14:00` is in year 0)."""
    if not isinstance(value, str) or not 20 <= len(value) <= 40 or value[10:11] not in "Tt":
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            return None
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def plan(
    *,
    name: str,
    version: int,
    action: str,
    current: dict[str, Any],
    states: dict[int, str],
    labels: dict[str, int],
    body: dict[str, Any],
    at: datetime,
) -> Change:
    """Check a transition against the rules and return the version's new lifecycle columns.

    `current` holds the version's state, deprecated_at and successor; `states` every version's
    state (number -> state); `labels` the prompt's labels (label -> version number)."""
    state = current["state"]
    allowed = TRANSITIONS.get(state, {})
    target = allowed.get(action)
    if target is None:
        final = " Retired versions are final." if state == RETIRED else ""
        raise TransitionRefused(
            f"Cannot {action} version {version} of {name!r}: it is {state}.{final}",
            state=state,
            action=action,
            allowed=sorted(allowed),
        )
    if target == PUBLISHED:
        return Change(PUBLISHED, None, None, None)
    if target == RETIRED:
        pointing = sorted(label for label, number in labels.items() if number == version)
        if pointing:
            raise TransitionRefused(
                f"Cannot retire version {version} of {name!r}: label(s) {', '.join(pointing)} "
                "point at it; move or delete them first.",
                state=state,
                action=action,
                # Retiring is what the labels refuse: it is not allowed until they move.
                allowed=sorted(a for a, t in allowed.items() if t != RETIRED),
                labels=pointing,
            )
    successor = _successor(name, version, states, body.get("successor"))
    if target == RETIRED:
        if body.get("successor") is None and current.get("successor") is not None:
            successor = current["successor"]
        return Change(RETIRED, current.get("deprecated_at"), current.get("sunset_at"), successor)
    sunset = body.get("sunset")
    deprecated_at = current.get("deprecated_at") if state == DEPRECATED else None
    deprecated_at = deprecated_at or at
    if sunset is not None and sunset < deprecated_at:
        raise RequestInvalid(
            "The sunset is earlier than the deprecation.",
            errors=[
                {
                    "path": "/sunset",
                    "message": f"must not be earlier than the deprecation ({_iso(deprecated_at)})",
                }
            ],
        )
    return Change(DEPRECATED, deprecated_at, sunset, successor)


def _successor(name: str, version: int, states: dict[int, str], wanted: int | None) -> int | None:
    """The version callers should move to: the one asked for (it must be published), else the
    newest published version other than this one, else none."""
    if wanted is None:
        candidates = [n for n, s in states.items() if s == PUBLISHED and n != version]
        return max(candidates) if candidates else None
    problem = None
    if wanted == version:
        problem = "a version cannot succeed itself"
    elif wanted not in states:
        problem = f"{name!r} has no version {wanted}"
    elif states[wanted] != PUBLISHED:
        problem = f"must be a published version; version {wanted} is {states[wanted]}"
    if problem is not None:
        raise RequestInvalid(
            "The successor is not usable.", errors=[{"path": "/successor", "message": problem}]
        )
    return wanted


def check_label(name: str, label: str, version: int, state: str) -> None:
    """A label may point at any version but a retired one; `production` not at a draft."""
    if state == RETIRED or (label == PRODUCTION and state == DRAFT):
        rule = (
            "labels cannot point at retired versions"
            if state == RETIRED
            else "production cannot point at a draft; publish it first"
        )
        raise LabelRefused(
            f"Label {label!r} of {name!r} cannot point at version {version}: it is {state} "
            f"({rule}).",
            label=label,
            version=version,
            state=state,
        )

"""Command Code plans: which models a plan may use, and the quota a plan has left.

Both come from ``GET /alpha/billing/credits`` (docs/protocol.md §9.2).  The model gates mirror
the CLI's client-side table (docs/protocol.md §8.2): Go < GOAT < Pro < Max, each catalog model
naming the cheapest tier that includes it.  Command Code's server stays the judge (a model above
the plan answers 403 ``model_not_in_plan``); this only keeps ``/v1/models`` to what the plan can
use.
"""
from __future__ import annotations

import time

TIERS = ("go", "goat", "pro", "max")
_LEVEL = {t: i for i, t in enumerate(TIERS)}
#: planId -> tier; Provider, Max, Ultra and Teams Pro include every model
PLAN_TIERS = {"individual-go": "go", "individual-goat": "goat", "individual-pro": "pro",
              "individual-pro-v1": "pro", "individual-provider": "max", "individual-max": "max",
              "individual-ultra": "max", "teams-pro": "max"}


def _number(v) -> float:
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else 0


def tier(credits_body: dict) -> str | None:
    """The tier whose models the account may use; None when unknown (then nothing is hidden).

    Purchased or free extra credits lift the plan's gate, as the CLI's table says.
    """
    credits = credits_body.get("credits") if isinstance(credits_body, dict) else None
    if not isinstance(credits, dict):
        return None
    if _number(credits.get("purchasedCredits")) > 0 or _number(credits.get("freeCredits")) > 0:
        return "max"
    return PLAN_TIERS.get(str(credits.get("planId") or ""))


def usable(min_plan: str | None, account_tier: str | None) -> bool:
    """Whether a model with ``min_plan`` is in ``account_tier`` (unlisted models are for all)."""
    if account_tier is None or min_plan not in _LEVEL:
        return True
    return _LEVEL[min_plan] <= _LEVEL[account_tier]


def _iso(ms) -> str | None:
    if not isinstance(ms, (int, float)) or isinstance(ms, bool) or ms <= 0:
        return None
    seconds = ms / 1000 if ms > 1e11 else ms        # the API uses milliseconds; accept seconds
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _window(w) -> dict | None:
    if not isinstance(w, dict):
        return None
    return {"used": _number(w.get("used")), "cap": _number(w.get("cap")),
            "exceeded": bool(w.get("exceeded")), "resets_at": _iso(w.get("resetAt"))}


def quota(credits_body: dict) -> dict:
    """The ``upstream`` section of ``/usage``: plan, remaining credits (USD) and usage windows."""
    credits = credits_body.get("credits") if isinstance(credits_body, dict) else None
    credits = credits if isinstance(credits, dict) else {}
    windows = credits_body.get("windowLimits") if isinstance(credits_body, dict) else None
    windows = windows if isinstance(windows, dict) else {}
    return {
        "plan": credits.get("planId"),
        "credits": {"monthly": _number(credits.get("monthlyCredits")),
                    "purchased": _number(credits.get("purchasedCredits")),
                    "free": _number(credits.get("freeCredits"))},
        "windows": {"five_hour": _window(windows.get("fiveHour")),
                    "weekly": _window(windows.get("weekly"))},
    }

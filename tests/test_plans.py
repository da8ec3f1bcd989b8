"""Plans, tiers and quotas read from the credits endpoint (gateway/plans.py)."""
from __future__ import annotations

import pytest

from gateway import plans


# ---- plans -----------------------------------------------------------------------------------------

def credits(**c) -> dict:
    return {"credits": c}


@pytest.mark.parametrize("body, tier", [
    (credits(planId="individual-go"), "go"),
    (credits(planId="individual-goat"), "goat"),
    (credits(planId="individual-pro"), "pro"),
    (credits(planId="individual-pro-v1"), "pro"),
    (credits(planId="individual-max"), "max"),
    (credits(planId="individual-ultra"), "max"),
    (credits(planId="individual-provider"), "max"),
    (credits(planId="teams-pro"), "max"),
    (credits(planId="individual-go", purchasedCredits=5), "max"),
    (credits(planId="individual-go", freeCredits=0.5), "max"),
    (credits(planId="individual-goat", purchasedCredits=0, freeCredits=0), "goat"),
    (credits(planId="individual-go", purchasedCredits=True), "go"),
    (credits(planId="individual-go", purchasedCredits="10"), "go"),
    (credits(planId="individual-go", purchasedCredits=-3), "go"),
    (credits(planId=None, purchasedCredits=1), "max"),
    (credits(planId="enterprise-2099"), None),
    (credits(planId=None), None),
    (credits(), None),
    ({"credits": None}, None),
    ({}, None),
    (None, None),
    ([], None),
])
def test_plan_tier(body, tier):
    assert plans.tier(body) == tier


@pytest.mark.parametrize("min_plan, account, ok", [
    ("go", None, True), ("max", None, True), (None, "go", True), ("enterprise", "go", True),
    ("go", "go", True), ("goat", "go", False), ("pro", "goat", False), ("goat", "pro", True),
    ("max", "pro", False), ("max", "max", True), ("pro", "max", True)])
def test_plan_usable(min_plan, account, ok):
    assert plans.usable(min_plan, account) is ok


def test_plan_quota_formats_windows_with_iso_reset_times():
    body = {"credits": {"planId": "individual-pro", "monthlyCredits": 12.5,
                        "purchasedCredits": 0, "freeCredits": 1, "other": "ignored"},
            "windowLimits": {
                "fiveHour": {"used": 3, "cap": 10, "exceeded": False, "resetAt": 1767225600000},
                "weekly": {"used": 10.5, "cap": 10, "exceeded": True, "resetAt": 1773500966}}}
    assert plans.quota(body) == {
        "plan": "individual-pro",
        "credits": {"monthly": 12.5, "purchased": 0, "free": 1},
        "windows": {
            "five_hour": {"used": 3, "cap": 10, "exceeded": False,
                          "resets_at": "2026-01-01T00:00:00Z"},
            "weekly": {"used": 10.5, "cap": 10, "exceeded": True,
                       "resets_at": "2026-03-14T15:09:26Z"}}}


def test_plan_quota_odd_bodies():
    empty = {"plan": None, "credits": {"monthly": 0, "purchased": 0, "free": 0},
             "windows": {"five_hour": None, "weekly": None}}
    assert plans.quota({}) == empty
    assert plans.quota(None) == empty
    assert plans.quota({"credits": "x", "windowLimits": []}) == empty
    body = {"credits": {"monthlyCredits": True, "freeCredits": "3"},
            "windowLimits": {"fiveHour": {"resetAt": 0}, "weekly": {"resetAt": True, "used": None}}}
    assert plans.quota(body) == {
        "plan": None, "credits": {"monthly": 0, "purchased": 0, "free": 0},
        "windows": {"five_hour": {"used": 0, "cap": 0, "exceeded": False, "resets_at": None},
                    "weekly": {"used": 0, "cap": 0, "exceeded": False, "resets_at": None}}}
    for bad in (None, -5, "1767225600000", [1]):
        assert plans.quota({"windowLimits": {"weekly": {"resetAt": bad}}})[
            "windows"]["weekly"]["resets_at"] is None

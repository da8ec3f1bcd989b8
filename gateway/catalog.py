"""The model catalog: which ids exist, what each accepts, and how loose names resolve.

Upstream has no model list on the CLI route, so the catalog ships as data (``models.json``, the
table of the CLI release we follow).  Ids are case-sensitive on the wire, so every name a client
sends is resolved to the exact catalog spelling here, once, before anything is sent.
"""
from __future__ import annotations

import fnmatch
import json
import os
import re
from dataclasses import dataclass

from . import errors

EFFORT_ORDER = ("low", "medium", "high", "xhigh", "max")
_DATE_SUFFIX = re.compile(r"[-@]\d{8}$")


@dataclass(frozen=True, slots=True)
class Model:
    """One model.  A model only the Provider API's list knows has ``vision`` None (unknown: images
    go through and upstream decides), no efforts and no minimum plan."""
    id: str
    vision: bool | None
    efforts: tuple[str, ...]
    context: int
    max_output: int | None
    min_plan: str | None

    def as_openai(self) -> dict:
        """The ``/v1/models`` entry: the OpenAI fields plus what a client needs to pick a model."""
        return {"id": self.id, "object": "model", "created": 0, "owned_by": self.owner,
                "context_length": self.context, "max_output_tokens": self.max_output,
                "vision": self.vision, "reasoning_efforts": list(self.efforts),
                "min_plan": self.min_plan}

    def as_codex(self, priority: int) -> dict:
        """The model as Codex CLI's ``ModelInfo`` (the ``models`` list of ``/v1/models``).

        Codex reads its model metadata from that list; for a slug it does not find there it
        uses fallback metadata with no context window and no reasoning levels, so it would
        never send a reasoning effort nor know when to compact.  Field names and enum values
        follow ``ModelInfo`` in ``codex-rs/protocol/src/openai_models.rs``: every field that
        struct requires in any release we read is here (``supports_reasoning_summaries`` only
        older ones require; newer ones ignore it), and the optional ones a gateway can fill
        truthfully.  One value Codex cannot parse drops the whole list, so
        ``tests/test_catalog.py`` runs Codex's own deserializer on it.  ``priority`` orders
        Codex's picker (the catalog's order).
        """
        levels = codex_reasoning_levels(self.efforts)
        default = clamp_effort(self, "medium")
        return {
            "slug": self.id, "display_name": self.id,
            "description": _codex_description(self),
            "default_reasoning_level": default,
            "supported_reasoning_levels": levels,
            "shell_type": "shell_command", "visibility": "list", "supported_in_api": True,
            "priority": priority, "additional_speed_tiers": [], "availability_nux": None,
            "upgrade": None, "base_instructions": CODEX_BASE_INSTRUCTIONS,
            "supports_reasoning_summaries": bool(levels),
            "default_reasoning_summary": "auto" if levels else "none",
            "support_verbosity": False, "default_verbosity": None,
            "apply_patch_tool_type": "freeform", "web_search_tool_type": "text",
            "truncation_policy": {"mode": "tokens", "limit": 10000},
            "supports_parallel_tool_calls": True, "supports_image_detail_original": False,
            "context_window": self.context, "max_context_window": self.context,
            "effective_context_window_percent": 95, "experimental_supported_tools": [],
            # vision None (a model only the Provider API's list knows) is not advertised: Codex
            # would offer image input that the model may refuse
            "input_modalities": ["text", "image"] if self.vision else ["text"],
            "supports_search_tool": False,
        }

    @property
    def owner(self) -> str:
        if "/" in self.id:
            return self.id.split("/", 1)[0]
        return "anthropic" if self.id.startswith("claude") else "openai" if self.id.startswith("gpt") else "commandcode"


#: Codex puts ``base_instructions`` in every request's ``instructions``: kept neutral and short,
#: because the model's own habits (and the user's AGENTS.md) should decide, and every token of it
#: is billed on every turn.
CODEX_BASE_INSTRUCTIONS = ("You are a coding agent working in the user's workspace through the "
                           "tools you are given. Be concise, make careful changes, and say what "
                           "you did.")

# Codex's ``ReasoningEffort`` takes every effort the catalog uses, ``max`` included (0.171's own
# bundled catalog lists ``max``; Codex releases from before ``max`` existed reject the whole list
# and fall back to their default metadata, as they would without it).
_CODEX_EFFORT_TEXT = {
    "low": "Fast answers with light reasoning",
    "medium": "Balanced speed and reasoning depth",
    "high": "Deeper reasoning for complex problems",
    "xhigh": "Extra-deep reasoning for the hardest problems",
    "max": "The model's maximum reasoning effort",
}


def codex_reasoning_levels(efforts: tuple[str, ...]) -> list[dict]:
    """Codex's ``supported_reasoning_levels`` for a model's efforts, lowest first (none for a
    model that chooses its own: Codex then sends no effort, which is what such a model needs)."""
    return [{"effort": e, "description": _CODEX_EFFORT_TEXT[e]}
            for e in EFFORT_ORDER if e in efforts]


def _codex_description(model: "Model") -> str:
    parts = [f"{model.id} through Command Code", f"{model.context:,}-token context"]
    if model.efforts:
        parts.append("reasoning " + "/".join(model.efforts))
    if model.vision:
        parts.append("images")
    return "; ".join(parts)


def _short(model_id: str) -> str:
    return model_id.rsplit("/", 1)[-1]


def prefixed(model_id: str, prefixes: tuple[str, ...]) -> bool:
    """Whether the part of ``model_id`` after its last ``/`` starts with one of the lowercase
    ``prefixes`` (how ``exclude_models`` and ``include_models`` name models)."""
    return bool(prefixes) and _short(model_id).lower().startswith(prefixes)


def _positive_int(v) -> int | None:
    """``v`` when the model list gives a usable count (a positive integer), else None."""
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def _listed(mid: str, old: Model | None, ctx: int | None, out: int | None) -> Model:
    """The model ``mid`` as the Provider API's list describes it: what the list gives wins over
    the shipped table, which keeps what the list does not say (vision, efforts, plan)."""
    if old is None:
        return Model(mid, None, (), ctx or 200000, out, None)
    return Model(mid, old.vision, old.efforts, ctx or old.context, out or old.max_output,
                 old.min_plan)


class Catalog:
    """Lookup tables built once at startup; resolution is a few dict hits per request."""

    def __init__(self, models: list[Model], aliases: dict[str, str], exclude: list[str] = (),
                 model_map: dict[str, str] | None = None):
        self._args = (aliases, exclude, model_map)
        self._exclude = tuple(p.lower() for p in exclude if p)
        self._map = [(p.lower(), t) for p, t in (model_map or {}).items()]
        self.models = [m for m in models if not self.excluded(m.id)]
        self._by_id = {m.id: m for m in models}
        self._by_lower = {m.id.lower(): m.id for m in models}
        self._aliases = {k.lower(): v for k, v in aliases.items()}
        shorts: dict[str, list[str]] = {}
        for m in models:
            shorts.setdefault(_short(m.id).lower(), []).append(m.id)
        # a short name resolves only when it is unambiguous
        self._by_short = {k: v[0] for k, v in shorts.items() if len(v) == 1}

    @classmethod
    def load(cls, exclude: list[str] = (), model_map: dict[str, str] | None = None) -> "Catalog":
        path = os.path.join(os.path.dirname(__file__), "models.json")
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        models = [Model(m["id"], m["vision"], tuple(m["efforts"]), m["context"], m["max_output"],
                        m["min_plan"]) for m in data["models"]]
        return cls(models, data["aliases"], exclude, model_map)

    def with_upstream(self, entries: list[dict]) -> "Catalog":
        """A new catalog that also holds the models of the Provider API's list (``/provider/v1/models``).

        Known models take the list's context length and output cap when it gives them (they
        are newer than the shipped table); unknown ones are added with what the list says.
        """
        models = {m.id: m for m in self._by_id.values()}
        for e in entries:
            mid = e.get("id") if isinstance(e, dict) else None
            if not isinstance(mid, str) or not mid:
                continue
            mid = self._by_lower.get(mid.lower(), mid)     # the catalog's spelling wins
            models[mid] = _listed(mid, models.get(mid), _positive_int(e.get("context_length")),
                                  _positive_int(e.get("max_output_tokens")))
        return Catalog(list(models.values()), *self._args)

    def excluded(self, model_id: str) -> bool:
        return prefixed(model_id, self._exclude)

    def _lookup(self, name: str) -> str | None:
        low = name.lower()
        for table in (self._by_lower, self._aliases, self._by_short):
            if low in table:
                return table[low]
        return None

    def mapped(self, name: str) -> str:
        """``name`` rewritten by the first matching ``model_map`` pattern (glob, any case)."""
        if self._map:
            low = name.lower()
            for pattern, target in self._map:
                if fnmatch.fnmatchcase(low, pattern):
                    return target
        return name

    def resolve(self, name: str) -> Model | None:
        """The catalog model for a client's name, or None when unknown or excluded.

        ``model_map`` applies first (so Claude Code's own ``claude-*`` ids can go to the models
        of a plan); then tried in order: exact id, case-insensitive id, the CLI's aliases, the
        short name after the last ``/``; each as sent and without a ``-YYYYMMDD`` suffix.
        """
        name = self.mapped(name)
        model = self._by_id.get(name)
        if model is None:
            found = self._lookup(name)
            if found is None:
                stripped = _DATE_SUFFIX.sub("", name)
                found = self._lookup(stripped) if stripped != name else None
            model = self._by_id.get(found) if found else None
        if model is None or self.excluded(model.id):
            return None
        return model


def require(catalog: "Catalog", name: str, param: str = "model") -> Model:
    """Like :meth:`Catalog.resolve`, but an unknown or excluded model is a 404 naming it."""
    model = catalog.resolve(name)
    if model is None:
        raise errors.NotFound(f"The model '{name}' does not exist or is not available on this "
                              "gateway (GET /v1/models lists the ones that are)",
                              code="model_not_found", param=param)
    return model


def clamp_effort(model: Model, effort: str) -> str | None:
    """The model's supported effort nearest to ``effort`` (ties go up); None if it takes none."""
    if not model.efforts:
        return None
    if effort in model.efforts:
        return effort
    want = EFFORT_ORDER.index(effort) if effort in EFFORT_ORDER else 0   # none/minimal -> lowest
    ranked = sorted(model.efforts, key=lambda e: (abs(EFFORT_ORDER.index(e) - want),
                                                 -EFFORT_ORDER.index(e)))
    return ranked[0]

"""The catalog as Codex CLI reads it: ``Model.as_codex`` (``ModelInfo``) and the ``models`` list
that ``GET /v1/models`` carries beside OpenAI's ``data``, checked field by field against Codex's
``ModelInfo`` and then with Codex's own deserializer (``codex debug models``)."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from gateway import create_app
from gateway.catalog import EFFORT_ORDER, Catalog, Model
from tests.conftest import LOCAL_KEY, ROOT, gateway_config

CODEX = os.path.join(ROOT, "tests", "clients", "node_modules", ".bin", "codex")

#: ``ModelInfo`` (codex-rs/protocol/src/openai_models.rs): field -> accepted JSON types.  Every
#: field Codex requires is here, plus the optional ones the gateway fills.
MODEL_INFO = {
    "slug": str, "display_name": str, "description": str,
    "default_reasoning_level": (str, type(None)), "supported_reasoning_levels": list,
    "shell_type": str, "visibility": str, "supported_in_api": bool, "priority": int,
    "additional_speed_tiers": list, "availability_nux": type(None), "upgrade": type(None),
    "base_instructions": str, "supports_reasoning_summaries": bool,
    "default_reasoning_summary": str, "support_verbosity": bool,
    "default_verbosity": type(None), "apply_patch_tool_type": str, "web_search_tool_type": str,
    "truncation_policy": dict, "supports_parallel_tool_calls": bool,
    "supports_image_detail_original": bool, "context_window": int, "max_context_window": int,
    "effective_context_window_percent": int, "experimental_supported_tools": list,
    "input_modalities": list, "supports_search_tool": bool,
}
#: the enum values Codex accepts for the fields that are enums
ENUMS = {"shell_type": {"default", "local", "unified_exec", "disabled", "shell_command"},
         "visibility": {"list", "hide", "none"},
         "apply_patch_tool_type": {"freeform"},
         "web_search_tool_type": {"text", "text_and_image"},
         "default_reasoning_summary": {"auto", "concise", "detailed", "none"}}
EFFORTS = {"none", "minimal", "low", "medium", "high", "xhigh", "max"}


def check_model_info(info: dict) -> None:
    assert set(info) == set(MODEL_INFO), set(info) ^ set(MODEL_INFO)
    for field, types in MODEL_INFO.items():
        assert isinstance(info[field], types) and not (
            types is int and isinstance(info[field], bool)), (field, info[field])
    for field, values in ENUMS.items():
        assert info[field] in values, (field, info[field])
    assert info["truncation_policy"] == {"mode": "tokens", "limit": 10000}
    assert set(info["input_modalities"]) <= {"text", "image"} and "text" in info["input_modalities"]
    levels = info["supported_reasoning_levels"]
    for level in levels:
        assert set(level) == {"effort", "description"} and level["effort"] in EFFORTS
        assert isinstance(level["description"], str) and level["description"]
    if levels:
        assert info["default_reasoning_level"] in {lv["effort"] for lv in levels}
    else:
        assert info["default_reasoning_level"] is None


# ---- Model.as_codex ----------------------------------------------------------------------------

def test_a_reasoning_vision_model():
    m = Model("lab/big", True, ("low", "medium", "high", "xhigh", "max"), 400000, 64000, "pro")
    info = m.as_codex(3)
    check_model_info(info)
    assert info["slug"] == info["display_name"] == "lab/big" and info["priority"] == 3
    assert [lv["effort"] for lv in info["supported_reasoning_levels"]] == \
        ["low", "medium", "high", "xhigh", "max"]
    assert info["default_reasoning_level"] == "medium"
    assert info["context_window"] == info["max_context_window"] == 400000
    assert info["input_modalities"] == ["text", "image"]
    assert info["supports_reasoning_summaries"] is True and info["default_reasoning_summary"] == "auto"
    assert (info["shell_type"], info["apply_patch_tool_type"], info["visibility"]) == \
        ("shell_command", "freeform", "list")
    assert info["effective_context_window_percent"] == 95 and info["supports_search_tool"] is False


def test_efforts_come_lowest_first_and_the_default_is_the_nearest_to_medium():
    info = Model("lab/deep", False, ("max", "high"), 1000000, None, None).as_codex(0)
    check_model_info(info)
    assert [lv["effort"] for lv in info["supported_reasoning_levels"]] == ["high", "max"]
    assert info["default_reasoning_level"] == "high"
    assert info["input_modalities"] == ["text"]


@pytest.mark.parametrize("vision", [False, None], ids=["text-only", "unknown"])
def test_a_model_that_chooses_its_own_reasoning_has_no_levels(vision):
    info = Model("lab/auto", vision, (), 256000, None, None).as_codex(7)
    check_model_info(info)
    assert info["supported_reasoning_levels"] == [] and info["default_reasoning_level"] is None
    assert info["supports_reasoning_summaries"] is False
    assert info["default_reasoning_summary"] == "none"
    assert info["input_modalities"] == ["text"]     # unknown vision is not advertised


def test_every_shipped_model_is_a_valid_model_info():
    for i, m in enumerate(Catalog.load().models):
        info = m.as_codex(i)
        check_model_info(info)
        assert [lv["effort"] for lv in info["supported_reasoning_levels"]] == \
            [e for e in EFFORT_ORDER if e in m.efforts]
        assert info["context_window"] == m.context
        assert ("image" in info["input_modalities"]) == bool(m.vision)


# ---- GET /v1/models ----------------------------------------------------------------------------

def test_models_list_carries_data_and_codex_models_for_the_same_models(client):
    body = client.get("/v1/models").json
    assert body["object"] == "list"
    catalog = {m.id: m for m in Catalog.load().models}
    assert [e["id"] for e in body["data"]] == [m["slug"] for m in body["models"]] == list(catalog)
    for info in body["models"]:
        check_model_info(info)
        m = catalog[info["slug"]]
        assert info["context_window"] == m.context
        assert [lv["effort"] for lv in info["supported_reasoning_levels"]] == \
            [e for e in EFFORT_ORDER if e in m.efforts]
        assert ("image" in info["input_modalities"]) == bool(m.vision)
    by_slug = {m["slug"]: m for m in body["models"]}
    assert [lv["effort"] for lv in by_slug["deepseek/deepseek-v4-flash"]["supported_reasoning_levels"]] \
        == ["high", "max"]
    assert by_slug["moonshotai/Kimi-K3"]["input_modalities"] == ["text", "image"]


def test_codex_models_follow_the_plan_filter(fake, tmp_path):
    app = create_app(gateway_config(fake.url, tmp_path, plan="go", include_models=["claude-sonnet-5"]))
    body = app.test_client().get("/v1/models", headers={"Authorization": f"Bearer {LOCAL_KEY}"}).json
    ids = [e["id"] for e in body["data"]]
    assert [m["slug"] for m in body["models"]] == ids
    assert "claude-sonnet-5" in ids and len(ids) < len(Catalog.load().models)


def test_codex_entries_are_built_once_per_catalog(app):
    gw = app.extensions["gateway"]
    c = app.test_client()
    c.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {LOCAL_KEY}"
    built = gw.codex_models
    c.get("/v1/models")
    assert gw.codex_models is built                         # nothing rebuilt per request
    gw._merge_model_list([{"id": "newlab/nova-2", "context_length": 300000}])
    assert gw.codex_models is not built                     # a new catalog, new entries
    info = {m["slug"]: m for m in c.get("/v1/models").json["models"]}["newlab/nova-2"]
    check_model_info(info)
    assert info["context_window"] == 300000 and info["supported_reasoning_levels"] == []


# ---- Codex's own deserializer ------------------------------------------------------------------

def test_codex_reads_the_list(gateway, fake, tmp_path):
    """``codex debug models`` fetches ``/v1/models?client_version=...`` and prints its catalog:
    Codex's bundled models plus ours.  Codex drops the whole list if one field of one model
    does not deserialize, so every gateway model showing up is the check.  Codex only asks a
    custom provider for its models when the provider's key comes from a command (``auth``), not
    from ``env_key``."""
    if not os.access(CODEX, os.X_OK):
        pytest.fail("Codex CLI is not installed: run `npm ci --prefix tests/clients`")
    home, codex_home = tmp_path / "home", tmp_path / "codex-home"
    home.mkdir()
    codex_home.mkdir()
    (codex_home / "config.toml").write_text(f"""\
model = "deepseek/deepseek-v4-flash"
model_provider = "ccgw"
check_for_update_on_startup = false

[analytics]
enabled = false

[model_providers.ccgw]
name = "Command Code Gateway"
base_url = {json.dumps(gateway.url + "/v1")}
wire_api = "responses"
request_max_retries = 0

[model_providers.ccgw.auth]
command = "echo"
args = [{json.dumps(LOCAL_KEY)}]
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CODEX_"))}
    env.update(HOME=str(home), CODEX_HOME=str(codex_home), NO_PROXY="127.0.0.1,localhost")
    proc = subprocess.run([CODEX, "debug", "models"], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = {m["slug"]: m for m in json.loads(proc.stdout)["models"]}
    catalog = Catalog.load().models
    assert [m.id for m in catalog if m.id not in seen] == []
    flash = seen["deepseek/deepseek-v4-flash"]
    assert [lv["effort"] for lv in flash["supported_reasoning_levels"]] == ["high", "max"]
    assert flash["context_window"] == 1000000 and flash["input_modalities"] == ["text"]
    assert seen["moonshotai/Kimi-K3"]["input_modalities"] == ["text", "image"]


# ---- catalog: the Provider API's model list --------------------------------------------------------
# (moved from test_provider_wire.py)

from gateway.catalog import prefixed  # noqa: E402
from tests.wire_fixtures import CATALOG, FLASH, GLM_FLASH, SONNET, HAIKU  # noqa: E402

UPSTREAM_MODELS = [
    {"id": "deepseek/deepseek-v4-flash", "name": "DeepSeek V4 Flash", "context_length": 2000000,
     "max_output_tokens": 384000, "supported_endpoints": ["/v1/chat/completions"]},
    {"id": "claude-sonnet-5", "name": "Claude Sonnet 5", "context_length": 1000000,
     "supported_endpoints": ["/v1/messages"]},
    {"id": "z-ai/glm-5.3-flash", "context_length": 0, "max_output_tokens": None},
    {"id": "newlab/model-x", "name": "X", "context_length": 128000, "max_output_tokens": 8192},
    {"id": "newlab/model-y"},
    {"id": "newlab/odd-numbers", "context_length": True, "max_output_tokens": -5},
    {"id": "newlab/float", "context_length": 1000.5, "max_output_tokens": "8192"},
    {"id": ""}, {"id": 5}, {"name": "no id"}, "junk", None,
]


def test_with_upstream_updates_known_models_and_adds_unknown_ones():
    base = Catalog.load()
    merged = base.with_upstream(UPSTREAM_MODELS)
    flash = merged.resolve("deepseek/deepseek-v4-flash")
    assert flash == Model("deepseek/deepseek-v4-flash", False, ("high", "max"), 2000000, 384000, "go")
    assert merged.resolve("claude-sonnet-5") == SONNET                  # nothing new to take
    assert merged.resolve("z-ai/glm-5.3-flash") == GLM_FLASH            # invalid numbers ignored
    assert merged.resolve("newlab/model-x") == Model("newlab/model-x", None, (), 128000, 8192, None)
    assert merged.resolve("newlab/model-y") == Model("newlab/model-y", None, (), 200000, None, None)
    assert merged.resolve("newlab/odd-numbers") == Model("newlab/odd-numbers", None, (), 200000,
                                                         None, None)
    assert merged.resolve("newlab/float").context == 200000
    assert merged.resolve("newlab/float").max_output is None
    ids = [m.id for m in merged.models]
    assert len(ids) == len(set(ids)) == len(base.models) + 4
    assert "" not in ids and 5 not in ids
    # the original catalog is untouched
    assert base.resolve("deepseek/deepseek-v4-flash") == FLASH and base.resolve("newlab/model-x") is None


def test_with_upstream_new_models_resolve_like_the_others_and_list_their_unknowns():
    merged = Catalog.load().with_upstream(UPSTREAM_MODELS)
    assert merged.resolve("model-x").id == "newlab/model-x"             # short name
    assert merged.resolve("NEWLAB/MODEL-X").id == "newlab/model-x"      # any case
    assert merged.resolve("model-x-20260101").id == "newlab/model-x"    # date suffix
    assert merged.resolve("claude-haiku-4-5").id == "claude-haiku-4-5-20251001"   # aliases kept
    assert merged.resolve("newlab/model-x").as_openai() == {
        "id": "newlab/model-x", "object": "model", "created": 0, "owned_by": "newlab",
        "context_length": 128000, "max_output_tokens": 8192, "vision": None,
        "reasoning_efforts": [], "min_plan": None}


def test_with_upstream_keeps_exclude_models_and_model_map():
    base = Catalog.load(exclude=["deepseek-v4", "Model-X"], model_map={"claude-*": "newlab/model-y"})
    merged = base.with_upstream(UPSTREAM_MODELS)
    ids = {m.id for m in merged.models}
    assert "newlab/model-x" not in ids and merged.resolve("newlab/model-x") is None
    assert "deepseek/deepseek-v4-flash" not in ids
    assert merged.resolve("deepseek/deepseek-v4-flash") is None
    assert merged.resolve("deepseek-v4-pro") is None
    assert "newlab/model-y" in ids
    assert merged.resolve("claude-anything").id == "newlab/model-y"
    assert merged.resolve("gpt-5.5").id == "gpt-5.5"
    assert merged.with_upstream([]).resolve("newlab/model-x") is None  # and again


def test_with_upstream_on_an_empty_list_is_the_same_catalog():
    merged = CATALOG.with_upstream([])
    assert merged.models == CATALOG.models
    assert merged.resolve("claude-haiku-4-5") == HAIKU


@pytest.mark.parametrize("model_id, prefixes, result", [
    ("deepseek/deepseek-v4-flash", ("deepseek",), True),
    ("deepseek/deepseek-v4-flash", ("deepseek-v4-pro",), False),
    ("deepseek/deepseek-v4-flash", ("deepseek/",), False),       # only the part after the last /
    ("MiniMaxAI/MiniMax-M3", ("minimax",), True),                 # any case of the id
    ("gpt-5.5", ("gpt-5",), True),
    ("claude-opus-5", ("opus",), False),
    ("claude-opus-5", ("glm", "claude-o"), True),
    ("a/b/c-model", ("c-",), True),
    ("deepseek/deepseek-v4-flash", (), False),
])
def test_prefixed(model_id, prefixes, result):
    assert prefixed(model_id, prefixes) is result



def test_with_upstream_keeps_the_catalog_spelling_of_a_known_id():
    merged = CATALOG.with_upstream([{"id": "TENCENT/HY3", "context_length": 123456}])
    assert [m.id for m in merged.models if m.id.lower() == "tencent/hy3"] == ["tencent/Hy3"]
    assert merged.resolve("hy3").context == 123456

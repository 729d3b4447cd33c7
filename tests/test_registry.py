"""The registry behind sources, splits, engines and models: names, errors, discovery."""

from __future__ import annotations

import sys

import pytest

from forelen.errors import ForelenError
from forelen.registry import Registry, UnknownName, describe


def make(*names: str) -> Registry:
    reg: Registry[object] = Registry("thing")
    for n in names:
        reg.add(n, object())
    return reg


def test_add_and_get_return_the_same_object():
    reg: Registry[object] = Registry("thing")
    obj = object()
    assert reg.add("alpha", obj) is obj
    assert reg.get("alpha") is obj
    assert "alpha" in reg and "beta" not in reg
    assert reg.names() == ["alpha"]


def test_register_decorator_returns_the_object_unchanged():
    reg: Registry[type] = Registry("engine")

    @reg.register("mine")
    class Mine:
        pass

    assert isinstance(Mine, type) and reg.get("mine") is Mine


def test_duplicate_names_raise():
    reg = make("egtp")
    with pytest.raises(ValueError, match="duplicate thing name 'egtp'"):
        reg.add("egtp", object())
    with pytest.raises(ValueError):
        reg.register("egtp")(object())


def test_unknown_name_lists_known_names_and_closest_match():
    reg = make("egtp", "mean", "last")
    with pytest.raises(UnknownName) as info:
        reg.get("egpt")
    msg = str(info.value)
    assert isinstance(info.value, ForelenError)  # the CLI turns it into one line, exit 2
    assert "unknown thing 'egpt'" in msg
    assert "did you mean 'egtp'?" in msg
    assert "known: egtp, last, mean" in msg
    assert "\n" not in msg


def test_unknown_name_without_close_match_has_no_suggestion():
    reg = make("egtp", "mean")
    with pytest.raises(UnknownName) as info:
        reg.get("zzzzzzzz")
    assert "did you mean" not in str(info.value)
    assert "known: egtp, mean" in str(info.value)


def test_get_is_case_insensitive():
    reg = make("Qwen2.5-3B", "smollm2-135m")
    assert reg.get("qwen2.5-3b") is reg.get("Qwen2.5-3B")
    assert reg.get("SMOLLM2-135M") is reg.get("smollm2-135m")


def test_names_and_items_are_sorted():
    reg = make("b", "c", "a")
    assert reg.names() == ["a", "b", "c"]
    assert [n for n, _ in reg.items()] == ["a", "b", "c"]


def test_discovery_imports_plugin_modules_but_not_private_ones(tmp_path, monkeypatch):
    pkg = tmp_path / "fl_plugins_test"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from forelen.registry import Registry\nREG = Registry('plugin', package=__name__)\n")
    (pkg / "one.py").write_text("from . import REG\nREG.add('one', 1)\n")
    (pkg / "two.py").write_text("from . import REG\nREG.add('two', 2)\n")
    (pkg / "_private.py").write_text("from . import REG\nREG.add('private', 3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        import fl_plugins_test

        reg = fl_plugins_test.REG
        assert "fl_plugins_test.one" not in sys.modules  # lazily, on first use
        assert reg.names() == ["one", "two"]
        assert reg.get("TWO") == 2
        assert "fl_plugins_test._private" not in sys.modules
        reg.names()  # discovery runs once: a second import pass would raise duplicate names
    finally:
        for name in [m for m in sys.modules if m.startswith("fl_plugins_test")]:
            del sys.modules[name]


def test_discovery_registers_the_packaged_sources():
    from forelen.builders.sources import SOURCES

    names = set(SOURCES.names())
    packaged = {"ifeval-pkg", "writingbench-pkg", "arenahard-pkg", "alpacaeval-pkg", "mmath-pkg",
                "humaneval-pkg", "gsm-symbolic", "longdocs-pkg"}
    hub = {"longbench", "zeroscrolls", "ifeval", "gsm8k", "math500"}
    assert packaged | hub <= names
    for name in packaged:
        assert SOURCES.get(name).info.offline, name
    # Every split's default mix must resolve offline, from the registry alone.
    from forelen.builders.splits import SPLITS

    for _, recipe in SPLITS.items():
        for src in recipe.sources:
            assert SOURCES.get(src).info.offline, (recipe.name, src)
        for src in recipe.hub_sources:
            assert src in SOURCES, (recipe.name, src)


def test_discovery_registers_the_engines():
    from forelen.builders.engines import ENGINES

    assert ENGINES.names() == ["hf", "hf-static", "vllm"]
    assert ENGINES.get("HF").info.name == "hf"


def test_splits_and_models_registries():
    from forelen.builders.splits import SPLITS
    from forelen.models import MODELS

    assert SPLITS.names() == ["chat", "cot", "long", "rl"]
    assert SPLITS.get("rl").samples_per_prompt == 8
    assert "smollm2-135m" in MODELS and MODELS.get("smollm2-135m").offline
    with pytest.raises(UnknownName, match="did you mean 'long'"):
        SPLITS.get("lng")


def test_describe_reads_dataclass_info():
    from forelen.builders.engines import ENGINES

    d = describe(ENGINES.get("vllm"))
    assert d["name"] == "vllm" and d["devices"] == "cuda"

    def plain():
        """First line.

        More text."""

    assert "First line." in str(describe(plain)["description"])
    assert "More text" not in str(describe(plain)["description"])

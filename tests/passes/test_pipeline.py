"""The pass registry and the pipeline text: options, round trips, and errors that point."""

from __future__ import annotations

from typing import Literal

import pytest

from slimgraph.errors import PassError, RegistrationError, SlimgraphError
from slimgraph.passes import (
    OptionValueError,
    Pass,
    PipelineSyntaxError,
    UnknownOptionError,
    UnknownPassError,
    format_pipeline,
    get_pass,
    named_pipelines,
    option,
    parse_pipeline,
    register_pass,
    registered_passes,
)
from slimgraph.passes import registry as registry_module


@pytest.fixture
def scratch_registry():
    """Passes registered inside a test vanish after it."""
    with registry_module.PASSES.scoped():
        yield


BUILTIN = ("canonicalize", "cse", "dce", "fold-constants", "merge-linears", "fuse")


def test_builtin_passes_are_registered_with_docs_and_typed_options():
    passes = registered_passes()
    assert set(BUILTIN) <= set(passes)
    for name in BUILTIN:
        info = passes[name]
        assert info.name == name and info.doc and "\n" not in info.doc
        for opt in info.options:
            assert opt.doc, f"{name}.{opt.name} has no doc"
            assert opt.check(opt.default, name) == opt.default
    fuse = {o.name: o for o in passes["fuse"].options}
    assert fuse["max-ops"].type is int and fuse["max-ops"].default == 16
    assert fuse["anchors"].type_name == "list[str]"


def test_kebab_case_options_fill_snake_case_fields():
    (fuse,) = parse_pipeline("fuse{max-ops=12, residual=false, anchors=[conv,linear]}")
    assert (fuse.max_ops, fuse.residual, fuse.anchors) == (12, False, ("conv", "linear"))
    (same,) = parse_pipeline("fuse{max_ops=12}")
    assert same.max_ops == 12


def test_pipeline_text_round_trips():
    text = "fold-constants,cse,dce,fuse{max-ops=12,chains=false}"
    passes = parse_pipeline(text)
    assert [p.name for p in passes] == ["fold-constants", "cse", "dce", "fuse"]
    assert format_pipeline(passes) == text
    assert format_pipeline(parse_pipeline(" dce , fuse { max-ops = 3 } ")) == "dce,fuse{max-ops=3}"
    assert parse_pipeline("") == [] and parse_pipeline("   ") == []


def test_default_pipeline_is_named_and_expands():
    text, doc = named_pipelines()["default"]
    assert doc
    assert [p.name for p in parse_pipeline("default")] == [p.name for p in parse_pipeline(text)]
    assert [p.name for p in parse_pipeline("dce,default")][0] == "dce"
    assert {p.name for p in parse_pipeline("default")} == set(BUILTIN)


@pytest.mark.parametrize(
    "text, error, position, reason, choice",
    [
        ("fold-constants,fuze", UnknownPassError, 15, "unknown pass 'fuze'", "fuse"),
        ("dce,fuse{max-opz=3}", UnknownOptionError, 9, "unknown option 'max-opz' for pass 'fuse'", "max-ops"),
        ("fuse{max-ops=many}", OptionValueError, 13, "bad value 'many' for option 'max-ops'", None),
        ("fuse{residual=maybe}", OptionValueError, 14, "bad value 'maybe' for option 'residual'", None),
        ("fuse{max-ops=[1,2]}", OptionValueError, 13, "option 'max-ops'", None),
        ("fuse{anchors=[conv,bogus]}", OptionValueError, 13, "'bogus' for option 'anchors'", "conv"),
        ("fuse{max-ops=0}", OptionValueError, 13, "must be at least 1", None),
        ("dce,,cse", PipelineSyntaxError, 4, "expected a pass name", "cse"),
        ("fuse{=3}", PipelineSyntaxError, 5, "expected an option name", "max-ops"),
        ("dce cse", PipelineSyntaxError, 4, "expected ',' between passes", None),
        ("fuse{max-ops=3", PipelineSyntaxError, 14, "expected ',' or '}'", None),
        ("fuse{max-ops}", PipelineSyntaxError, 12, "expected '=' after option 'max-ops'", None),
        ("fuse{max-ops=3,max-ops=4}", PipelineSyntaxError, 15, "given twice", None),
        ("default{x=1}", PipelineSyntaxError, 7, "takes no options", None),
        ("dce{x=1}", UnknownOptionError, 4, "unknown option 'x' for pass 'dce'", None),
    ],
)
def test_pipeline_errors_name_the_culprit_its_position_and_the_choices(text, error, position, reason, choice):
    with pytest.raises(error) as info:
        parse_pipeline(text)
    exc = info.value
    assert isinstance(exc, PassError) and isinstance(exc, SlimgraphError)
    assert exc.position == position
    assert reason in str(exc)
    assert f"at column {position + 1}" in str(exc)
    assert str(exc).endswith(f"  {text}\n  {' ' * position}^")  # the caret points at the culprit
    if choice:
        assert choice in exc.choices and choice in str(exc)


def test_unknown_pass_lists_passes_and_pipelines():
    with pytest.raises(UnknownPassError) as info:
        parse_pipeline("fold")
    assert set(BUILTIN) <= set(info.value.choices)
    assert "default (pipeline)" in info.value.choices
    assert info.value.pass_name == "fold"


def test_options_are_checked_from_python_too():
    fuse = get_pass("fuse")
    with pytest.raises(OptionValueError, match="option 'max-ops' of pass 'fuse'"):
        fuse.create({"max-ops": "12"})
    with pytest.raises(UnknownOptionError) as info:
        fuse.create({"size": 3})
    assert "max-ops" in info.value.choices
    assert fuse.create({"max_ops": 3}).max_ops == 3


def test_passes_are_frozen():
    (fuse,) = parse_pipeline("fuse")
    with pytest.raises(Exception):
        fuse.max_ops = 3  # type: ignore[misc]


def test_register_a_pass_with_every_option_kind(scratch_registry):
    @register_pass("opts-example")
    class OptsExample(Pass):
        """Exercises option kinds."""

        ratio: float = option(0.5, "a float")
        count: int = option(2, "an int")
        mode: Literal["fast", "exact"] = option("fast", "a choice")
        names: tuple[str, ...] = option((), "a list")

        def apply(self, graph):
            return graph

    (p,) = parse_pipeline("opts-example{ratio=1,count=-3,mode=exact,names=[a,b]}")
    assert p == OptsExample(ratio=1.0, count=-3, mode="exact", names=("a", "b"))
    assert isinstance(p.ratio, float)
    assert p.pipeline_text() == "opts-example{ratio=1.0,count=-3,mode=exact,names=[a,b]}"
    assert parse_pipeline(p.pipeline_text()) == [p]
    with pytest.raises(OptionValueError) as info:
        parse_pipeline("opts-example{mode=slow}")
    assert info.value.choices == ("fast", "exact") and info.value.position == 18
    info = registered_passes()["opts-example"]
    assert [(o.name, o.type_name) for o in info.options] == [
        ("ratio", "float"), ("count", "int"), ("mode", "fast|exact"), ("names", "list[str]")
    ]


def test_register_a_function_as_a_pass(scratch_registry):
    @register_pass("drop-everything-example")
    def drop_everything(graph):
        """Remove every node (an example)."""
        graph.nodes.clear()
        return graph

    assert registered_passes()["drop-everything-example"].doc == "Remove every node (an example)."
    assert [p.name for p in parse_pipeline("drop-everything-example")] == ["drop-everything-example"]


def test_registration_mistakes_are_errors(scratch_registry):
    with pytest.raises(RegistrationError, match="pass 'dce' is already registered"):
        register_pass("dce")(type("Again", (Pass,), {"__doc__": "x"}))
    with pytest.raises(PassError, match="needs a default"):

        @register_pass("no-default-example")
        class NoDefault(Pass):
            """Doc."""

            ratio: float

    with pytest.raises(PassError, match="needs a one-line doc"):

        @register_pass("no-doc-example")
        class NoDoc(Pass):
            pass

    with pytest.raises(PassError, match="unsupported type"):

        @register_pass("bad-type-example")
        class BadType(Pass):
            """Doc."""

            table: dict = option(None, "no")

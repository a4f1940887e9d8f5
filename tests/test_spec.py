"""The architecture spec: JSON and one-line round trips, the hash, validation and refusals."""

from __future__ import annotations

import copy
import json
import math

import optuna
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from searchcore.arch.spec import decode, encode, from_json, spec_hash, to_json, validate
from searchcore.engine.config import load_space, resolve
from searchcore.errors import SpecError
from searchcore.plugins.building import build, param_count  # build(spec) with the loaded plugins' blocks
from searchcore.plugins.host import get_host

SEED_DIGITS_HASH = "3bab456ebef4"
SEED_DIGITS_LINE = (
    "v1 1x8x8>10 stem[]"
    " | [conv(out=32,k=3,d=1,s=1,bn=F,act=relu)] att[] sc=~ down=maxpool(k=2,s=2)"
    " | [conv(out=64,k=3,d=1,s=1,bn=F,act=relu)] att[] sc=~ down=maxpool(k=2,s=2)"
    " | [conv(out=128,k=3,d=1,s=1,bn=F,act=relu)] att[] sc=~ down=maxpool(k=2,s=2)"
    " | head[flatten(),linear()]"
)


@pytest.fixture(scope="module")
def space():
    return resolve(load_space(None), get_host(), [1, 8, 8], 10)


@pytest.fixture(scope="module")
def seed_spec(space) -> dict:
    return space.spec(space.off_params())


@pytest.fixture(scope="module")
def sampled(space) -> list[dict]:
    """120 specs drawn by a seeded random sampler over the default space."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=7))
    return [space.to_spec(study.ask())[0] for _ in range(120)]


# --- JSON -----------------------------------------------------------------------------------


def test_json_round_trip_rebuilds_the_same_model(space):
    params = space.off_params()
    params.update({"dense.s2": True, "dense.s2.growth": 16, "dense.s2.layers": 3, "attention.s1": "se", "attention.s1.reduction": 8,
                   "residual.s3": True, "normact.bn": True, "pooling.s2": "conv", "kernel.s1": 5, "widthdepth.s3.depth": 2})
    spec = space.spec(space.rebuild_params(params))
    text = to_json(spec)
    again = from_json(text, "x.json")
    assert again == spec
    assert to_json(again) == text
    a, b = build(spec, seed=3), build(again, seed=3)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert {k: v.shape for k, v in sa.items()} == {k: v.shape for k, v in sb.items()}
    assert param_count(a) == param_count(b) > 93_962
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    # the seed decides the weights: another seed gives other weights, same structure
    c = build(again, seed=4)
    assert {k: v.shape for k, v in c.state_dict().items()} == {k: v.shape for k, v in sa.items()}
    assert not torch.equal(c.state_dict()["stages.0.body.0.0.weight"], sa["stages.0.body.0.0.weight"])


def test_json_round_trip_of_sampled_specs(sampled):
    for spec in sampled:
        assert from_json(to_json(spec)) == spec
        assert from_json(to_json(spec, indent=None)) == spec


def test_from_json_refuses_invalid_json():
    with pytest.raises(SpecError) as e:
        from_json('{"schema": 1,', "arch.json")
    assert str(e.value) == "arch.json: not valid JSON: Expecting property name enclosed in double quotes at line 1 column 14"


def test_build_does_not_change_rng_state_and_returns_training_model(seed_spec):
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    model = build(seed_spec, seed=5)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(m.training for m in model.modules())


# --- one-line form --------------------------------------------------------------------------


def test_encode_seed_cnn_is_pinned(seed_spec):
    assert encode(seed_spec) == SEED_DIGITS_LINE
    assert decode(SEED_DIGITS_LINE) == seed_spec


def test_one_line_round_trip_of_sampled_specs(sampled):
    lines = set()
    for spec in sampled:
        line = encode(spec)
        assert "\n" not in line
        assert decode(line) == spec
        assert encode(decode(line)) == line
        lines.add(line)
    assert len(lines) > 100  # the sampler really varied the specs


def test_decode_tolerates_surrounding_whitespace(seed_spec):
    assert decode(f"  {SEED_DIGITS_LINE}\n") == seed_spec


_key = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,5}", fullmatch=True).filter(lambda k: k != "type")
_type = st.one_of(st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-]{0,8}", fullmatch=True), st.sampled_from(["T", "F", "inf", "nan", "conv"]))
_text = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["T", "F", "~", "inf", "nan", "-inf", "1x8", "a b", "a,b", "(x)", "[y]", '"q"', "back\\slash", "a | b", "é", "", "auto", "3", "1e5"]),
)
_scalar = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**20), max_value=10**20), st.floats(allow_nan=False), _text)


def _block(depth: int) -> st.SearchStrategy:
    value = st.one_of(_scalar, st.lists(_scalar, max_size=4))
    if depth > 0:
        value = st.one_of(value, st.lists(_block(depth - 1), min_size=1, max_size=3))
    return st.builds(lambda t, opts: {"type": t, **opts}, _type, st.dictionaries(_key, value, max_size=4))


_blocks = st.lists(_block(2), max_size=3)
_stage = st.fixed_dictionaries({
    "body": _blocks,
    "attention": _blocks,
    "shortcut": st.sampled_from([None, "auto"]),
    "down": st.one_of(st.none(), _block(1)),
})
_specs = st.fixed_dictionaries({
    "schema": st.just(1),
    "input": st.lists(st.integers(1, 4096), min_size=3, max_size=3),
    "classes": st.integers(2, 100_000),
    "stem": _blocks,
    "stages": st.lists(_stage, max_size=4),
    "head": _blocks,
})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_specs)
def test_one_line_round_trip_property(spec):
    validate(copy.deepcopy(spec))
    line = encode(spec)
    assert decode(line) == spec
    assert encode(decode(line)) == line
    assert from_json(to_json(spec)) == spec


def test_one_line_values_that_need_care():
    spec = {
        "schema": 1, "input": [3, 32, 32], "classes": 100,
        "stem": [{"type": "x.weird", "s": "two words", "t": "T", "f": "F", "n": "~", "i": "inf", "q": 'say "hi"', "e": "", "u": "ü"}],
        "stages": [{
            "body": [{"type": "conv", "out": None, "k": 3, "bn": True, "act": "gelu", "p": 0.1, "big": 1e300, "tiny": 5e-324,
                      "neg": -0.5, "whole": 2.0, "inf": math.inf, "minf": -math.inf, "negint": -7}],
            "attention": [{"type": "nest", "blocks": [{"type": "a", "x": [1, 2.5, None, True, "s p"]}, {"type": "b", "y": []}]}],
            "shortcut": "auto",
            "down": None,
        }],
        "head": [{"type": "flatten"}, {"type": "linear", "out": 100}],
    }
    line = encode(spec)
    assert decode(line) == spec
    got = decode(line)
    body = got["stages"][0]["body"][0]
    assert type(body["whole"]) is float and type(body["negint"]) is int and type(body["bn"]) is bool
    assert got["stem"][0]["t"] == "T" and got["stem"][0]["n"] == "~" and got["stem"][0]["i"] == "inf"
    assert '"T"' in line and '"~"' in line and "bn=T" in line and "out=~" in line
    # nan survives the trip as nan (it is not equal to itself, so compared apart)
    spec["stem"][0]["nan"] = math.nan
    assert math.isnan(decode(encode(spec))["stem"][0]["nan"])


def test_encode_refuses_a_block_type_the_grammar_cannot_read(seed_spec):
    spec = copy.deepcopy(seed_spec)
    spec["head"][0]["type"] = "flat ten"
    with pytest.raises(SpecError) as e:
        encode(spec)
    assert str(e.value) == "cannot encode block type 'flat ten': the one-line form needs letters, digits, '_', '.' or '-'"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (SEED_DIGITS_LINE + " junk", "one-line spec: unexpected trailing text at column 275 (near ' junk')"),
        (SEED_DIGITS_LINE + ")", "one-line spec: unexpected trailing text at column 275 (near ')')"),
        (SEED_DIGITS_LINE.replace("stem[]", "foo[]"), "one-line spec: expected ' stem' at column 12 (near ' foo[] | [conv(out=3')"),
        (SEED_DIGITS_LINE.replace("att[]", "attn[]", 1), "one-line spec: expected a list of blocks at column 66 (near 'n[] sc=~ down=maxpoo')"),
        (SEED_DIGITS_LINE.replace("head[", "tail[", 1), "one-line spec: expected a list of blocks at column 251 (near 'tail[flatten(),linea')"),
        (SEED_DIGITS_LINE.replace("out=32", "out=3.2.1", 1), "one-line spec: expected ',' at column 35 (near '.1,k=3,d=1,s=1,bn=F,')"),
        (SEED_DIGITS_LINE.replace("k=3", "k=--3", 1), "one-line spec: unexpected token at column 37 (near '--3,d=1,s=1,bn=F,act')"),
        (SEED_DIGITS_LINE.replace(",d=1", ",=1", 1), "one-line spec: unexpected token at column 39 (near '=1,s=1,bn=F,act=relu')"),
        (SEED_DIGITS_LINE.replace("1x8x8", "1x8", 1), "one-line spec: unexpected token at column 4 (near '1x8>10 stem[] | [con')"),
        (SEED_DIGITS_LINE.replace(">10", "", 1), "one-line spec: expected '>' at column 9 (near ' stem[] | [conv(out=')"),
        (SEED_DIGITS_LINE.rsplit(" | ", 1)[0], "one-line spec: expected ' | ' at column 248 (near 'end of text')"),
        (SEED_DIGITS_LINE[:-1], "one-line spec: expected ',' at column 274 (near 'end of text')"),
        ("", "one-line spec: expected 'v' at column 1 (near 'end of text')"),
        ("v1", "one-line spec: expected ' ' at column 3 (near 'end of text')"),
        (SEED_DIGITS_LINE.replace("act=relu", 'act="relu', 1), "one-line spec: unterminated string at column 56 (near '\"relu)] att[] sc=~ d')"),
        (SEED_DIGITS_LINE.replace("down=maxpool(k=2,s=2)", "down=3", 1), "one-line spec: down must be a block or ~ at column 80 (near ' | [conv(out=64,k=3,')"),
        (SEED_DIGITS_LINE.replace("k=3,d=1", "k=3,k=1", 1), "one-line spec: duplicate option 'k' at column 40 (near '=1,s=1,bn=F,act=relu')"),
        (SEED_DIGITS_LINE.replace("stem[]", "stem[1]"), "one-line spec: expected a list of blocks at column 20 (near ' | [conv(out=32,k=3,')"),
        (SEED_DIGITS_LINE.replace("v1", "v2", 1), "one-line spec: schema: version 2 is not supported; this searchcore reads schema 1"),
        (SEED_DIGITS_LINE.replace("sc=~", "sc=yes", 1), "one-line spec: stages[0].shortcut: expected null or 'auto', got 'yes'"),
        (SEED_DIGITS_LINE.replace(">10", ">1", 1), "one-line spec: classes: expected an integer >= 2, got 1"),
        (SEED_DIGITS_LINE.replace("flatten()", "flatten(x=conv())", 1), "one-line spec: head[0].x: expected a scalar, list or list of blocks, got dict"),
        (SEED_DIGITS_LINE.replace("flatten()", "flatten(x=[1,conv()])", 1), "one-line spec: head[0].x: a list holds scalars or blocks, not both"),
    ],
)
def test_decode_refuses_malformed_text(text, message):
    with pytest.raises(SpecError) as e:
        decode(text)
    assert str(e.value) == message


# --- hash -----------------------------------------------------------------------------------


def test_spec_hash_is_pinned_for_the_seed_cnn(seed_spec):
    assert spec_hash(seed_spec) == SEED_DIGITS_HASH
    assert spec_hash(json.loads(json.dumps(seed_spec))) == SEED_DIGITS_HASH
    # key order does not matter, values do
    reordered = {k: seed_spec[k] for k in reversed(list(seed_spec))}
    assert spec_hash(reordered) == SEED_DIGITS_HASH
    assert spec_hash(decode(encode(seed_spec))) == SEED_DIGITS_HASH
    other = copy.deepcopy(seed_spec)
    other["stages"][0]["body"][0]["k"] = 5
    assert spec_hash(other) != SEED_DIGITS_HASH
    other = copy.deepcopy(seed_spec)
    other["classes"] = 11
    assert spec_hash(other) != SEED_DIGITS_HASH


def test_spec_hash_tells_sampled_specs_apart(sampled):
    by_line = {encode(s): spec_hash(s) for s in sampled}
    assert len(set(by_line.values())) == len(by_line)
    assert all(len(h) == 12 and int(h, 16) >= 0 for h in by_line.values())


# --- validate -------------------------------------------------------------------------------


def _seed() -> dict:
    return decode(SEED_DIGITS_LINE)


def _with(edit) -> dict:
    spec = _seed()
    edit(spec)
    return spec


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([1, 2], "spec: expected a JSON object, got list"),
        (_with(lambda s: s.update(extra=1)), "spec: unknown key 'extra'; allowed: schema, input, classes, stem, stages, head"),
        (_with(lambda s: s.pop("head")), "spec: missing key 'head'"),
        (_with(lambda s: s.update(schema=2)), "spec: schema: version 2 is not supported; this searchcore reads schema 1"),
        (_with(lambda s: s.update(input=[1, 8])), "spec: input: expected [channels, height, width] of positive integers, got [1, 8]"),
        (_with(lambda s: s.update(input=[1, 0, 8])), "spec: input: expected [channels, height, width] of positive integers, got [1, 0, 8]"),
        (_with(lambda s: s.update(classes=True)), "spec: classes: expected an integer >= 2, got True"),
        (_with(lambda s: s.update(stages={})), "spec: stages: expected a list of stages"),
        (_with(lambda s: s["stages"][1].pop("down")), "spec: stages[1]: missing key 'down'; a stage has exactly: body, attention, shortcut, down"),
        (_with(lambda s: s["stages"][0].update(gate=1)), "spec: stages[0]: unknown key 'gate'; a stage has exactly: body, attention, shortcut, down"),
        (_with(lambda s: s["stages"][2].update(shortcut="proj")), "spec: stages[2].shortcut: expected null or 'auto', got 'proj'"),
        (_with(lambda s: s["stem"].append({"k": 3})), "spec: stem[0]: expected a block object with a string 'type'"),
        (_with(lambda s: s["stages"][0]["body"][0].update({"bad-key": 1})), "spec: stages[0].body[0].bad-key: option names are identifiers"),
        (_with(lambda s: s["stages"][0]["body"][0].update(x=[1, {"type": "a"}])), "spec: stages[0].body[0].x: a list holds scalars or blocks, not both"),
        (_with(lambda s: s["stages"][0]["body"][0].update(x={"a": 1})), "spec: stages[0].body[0].x: expected a scalar, list or list of blocks, got dict"),
        (_with(lambda s: s["stages"][0].update(down=[])), "spec: stages[0].down: expected a block object with a string 'type'"),
        (_with(lambda s: s.update(head={"type": "linear"})), "spec: head: expected a list of blocks, got dict"),
    ],
)
def test_validate_errors_are_pinned(spec, message):
    with pytest.raises(SpecError) as e:
        validate(spec)
    assert str(e.value) == message


def test_validate_names_the_source(seed_spec):
    with pytest.raises(SpecError, match=r"^arch\.json: classes: expected an integer >= 2, got 'ten'$"):
        validate({**seed_spec, "classes": "ten"}, "arch.json")
    assert validate(seed_spec) is seed_spec


# --- blocks no plugin provides ----------------------------------------------------------------


def test_build_names_the_missing_plugin(seed_spec):
    spec = copy.deepcopy(seed_spec)
    spec["stages"][1]["attention"] = [{"type": "ghost.module", "strength": 2}]
    with pytest.raises(SpecError) as e:
        build(spec)
    assert str(e.value) == (
        "block type 'ghost.module' is not provided by any loaded plugin; "
        "it is provided by plugin 'ghost', which is not loaded: install it or remove it from --disable"
    )


def test_build_lists_core_types_for_an_unknown_core_block(seed_spec):
    spec = copy.deepcopy(seed_spec)
    spec["stem"] = [{"type": "convv"}]
    with pytest.raises(SpecError) as e:
        build(spec)
    assert str(e.value) == (
        "block type 'convv' is not provided by any loaded plugin; "
        "core block types are: avgpool, conv, dropout, flatten, gap, linear, maxpool"
    )


def test_build_reports_bad_block_options(seed_spec):
    spec = copy.deepcopy(seed_spec)
    spec["stages"][0]["body"][0]["act"] = "tanh"
    with pytest.raises(SpecError) as e:
        build(spec)
    assert str(e.value).startswith("block 'conv' with options {'out': 32, 'k': 3, 'd': 1, 's': 1, 'bn': False, 'act': 'tanh'}: ")
    assert str(e.value).endswith("act must be one of relu, gelu, silu, none, got 'tanh'")


def test_copy_spec_is_deep_and_equal_and_copies_what_json_cannot_hold(seed_spec):
    from searchcore.arch.spec import copy_spec

    spec = {**seed_spec, "extra": {"shape": (1, [2, 3]), "tags": {"a"}}}
    copied = copy_spec(spec)
    assert copied == spec
    copied["stages"][0]["body"].append({"type": "x"})
    copied["extra"]["shape"][1].append(4)
    copied["extra"]["tags"].add("b")
    assert spec["stages"][0]["body"] != copied["stages"][0]["body"]
    assert spec["extra"] == {"shape": (1, [2, 3]), "tags": {"a"}}

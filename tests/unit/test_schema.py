"""schema/matrix.schema.json and the loader agree: the same keys, and the same documents accepted.

The loader's side comes from its key tables (cpforge.matrix.TOP_KEYS and the tables below it), the
schema's from the schema file; validation uses the jsonschema library (Draft 2020-12)."""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from cpforge import matrix as mx
from cpforge.errors import MatrixError

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = ROOT / "schema" / "matrix.schema.json"
SCHEMA: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
GOOD = (ROOT / "matrix.yaml").read_text(encoding="utf-8")
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def as_json(text: str) -> Any:
    """matrix.yaml as the JSON document an editor validates (dates become YYYY-MM-DD strings)."""

    def plain(obj: object) -> str:
        assert isinstance(obj, datetime.date), obj
        return obj.isoformat()

    return json.loads(json.dumps(yaml.safe_load(text), default=plain))


def schema_errors(text: str) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(as_json(text))]


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/$defs/"), ref
        node = SCHEMA["$defs"][ref.removeprefix("#/$defs/")]
    return node


def below(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """What a value's schema constrains: itself, its list items, its named values, its alternatives."""
    node = resolve(node)
    yield node
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from below(node[key])
    for branch in node.get("anyOf", []):
        yield from below(branch)


def mapping_of(node: dict[str, Any]) -> dict[str, Any]:
    """The object schema (the one with `properties`) that a key's value, list items or named values use."""
    found = [n for n in below(node) if "properties" in n]
    assert len(found) == 1, node
    return found[0]


def every_object_schema(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if "properties" in node:
            yield node
        for value in node.values():
            yield from every_object_schema(value)
    elif isinstance(node, list):
        for value in node:
            yield from every_object_schema(value)


def walk(keys: tuple[mx.Key, ...]) -> Iterator[mx.Key]:
    for key in keys:
        if key.keys:
            yield key
            yield from walk(key.keys)


def every_node(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from every_node(value)
    elif isinstance(node, list):
        for value in node:
            yield from every_node(value)


def check_table(keys: tuple[mx.Key, ...], obj: dict[str, Any], where: str, seen: list[dict[str, Any]]) -> None:
    seen.append(obj)
    assert sorted(obj["properties"]) == sorted(k.name for k in keys), f"keys of {where}"
    assert sorted(obj.get("required", [])) == sorted(k.name for k in keys if k.required), f"required in {where}"
    assert obj.get("additionalProperties") is False, f"{where} must refuse unknown keys, as the loader does"
    for key in keys:
        prop = obj["properties"][key.name]
        path = f"{where}.{key.name}"
        if key.pattern is not None:
            assert key.pattern.pattern in [n.get("pattern") for n in below(prop)], f"pattern of {path}"
        if key.enum:
            assert [list(key.enum)] == [n["enum"] for n in below(prop) if "enum" in n], f"values of {path}"
        if key.names is not None:
            assert resolve(prop)["propertyNames"] == {"pattern": key.names.pattern}, f"names in {path}"
        if key.keys:
            check_table(key.keys, mapping_of(prop), path, seen)


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_schema_and_loader_have_the_same_keys_required_keys_patterns_and_enums() -> None:
    seen: list[dict[str, Any]] = []
    check_table(mx.TOP_KEYS, SCHEMA, "matrix", seen)
    # ... and the schema describes no mapping the loader's tables do not have
    unvisited = [o for o in every_object_schema(SCHEMA) if not any(o is s for s in seen)]
    assert unvisited == []
    assert len(seen) == 1 + sum(1 for _ in walk(mx.TOP_KEYS))


def test_build_platform_is_in_both() -> None:
    assert "build-platform" in [k.name for k in mx.TOP_KEYS]
    assert "build-platform" in SCHEMA["properties"]


def test_matrix_yaml_names_the_schema_and_validates_against_it() -> None:
    first = GOOD.splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema=")
    assert (ROOT / first.split("$schema=", 1)[1]).resolve() == SCHEMA_PATH
    assert schema_errors(GOOD) == []
    mx.loads(GOOD)


DIGEST = "sha256:" + "0123456789abcdef" * 4
ACCEPTED = {
    "build-platform": ("platforms: [linux/amd64, linux/arm64]", "$&\nbuild-platform: linux/arm64"),
    "pull by digest": ("pull: debian:trixie-slim ", f"pull: debian:trixie-slim@{DIGEST} "),
    "pull by name and digest": ("pull: debian:trixie-slim ", f"pull: debian@{DIGEST} "),
    "a profile with no options": ("  quick:                            # no", "  quick:\n  fast:  # no"),
    "jit as a YAML boolean": ('jit: {jit: "yes"}', "jit: {jit: yes}"),
    "llvm quoted": ("llvm: 18", 'llvm: "18"'),
    "a local source mirror": ("    - debian+http://deb.debian.org/debian", "    - ./mirror"),
    "no optional section": ("repository: cpforge/python ", "# "),
}
REFUSED = {
    "misspelled top-level key": ("variants:", "varients:"),
    "misspelled profile key": ("tag-suffix: -quick", "tag-sufix: -quick"),
    "misspelled distro key": ("    opt-in: true", "    opt_in: true"),
    "misspelled signer key": ("{identity: hugo@python.org,", "{identiy: hugo@python.org,"),
    "missing required key": ("    suite: bullseye\n", ""),
    "unknown platform": ("linux/arm64]", "linux/arm46]"),
    "unknown build-platform": ("platforms: [linux/amd64, linux/arm64]", "$&\nbuild-platform: linux/s390x"),
    "unknown jit mode": ('jit: {jit: "yes"}', 'jit: {jit: "maybe"}'),
    "a derived configure flag": ("freethreaded: {freethreaded: true}", "freethreaded: {configure: [--disable-gil]}"),
    "an injected configure flag": ("configure: [--enable-optimizations,", 'configure: ["--x=$(id)",'),
    "a malformed digest": ("pull: debian:trixie-slim ", "pull: debian:trixie-slim@sha256:abc "),
    "a bad variant name": ("  freethreaded: {", "  Free_threaded: {"),
    "a bad date": ("released: 2025-06-11", "released: 11.06.2025"),
    "a bad sha256": ("sha256: 93e583f2", "sha256: zze583f2"),
    "a non-boolean": ("    shared: true ", "    shared: maybe "),
    "a duplicated builtin module": ("builtin-modules: [_asyncio,", "builtin-modules: [math,"),
    "no platforms": ("platforms: [linux/amd64, linux/arm64]", "platforms: []"),
}


def mutate(old: str, new: str) -> str:
    text = GOOD.replace(old, new.replace("$&", old), 1)
    assert text != GOOD, old
    return text


@pytest.mark.parametrize("case", ACCEPTED)
def test_both_accept(case: str) -> None:
    text = mutate(*ACCEPTED[case])
    mx.loads(text)
    assert schema_errors(text) == []


@pytest.mark.parametrize("case", REFUSED)
def test_both_refuse(case: str) -> None:
    text = mutate(*REFUSED[case])
    with pytest.raises(MatrixError):
        mx.loads(text)
    assert schema_errors(text) != []


def test_a_misspelled_key_fails_schema_validation_naming_the_key() -> None:
    errors = schema_errors(mutate("tag-suffix: -quick", "tag-sufix: -quick"))
    assert len(errors) == 1
    assert errors[0].startswith("profiles/quick: ") and "'tag-sufix' was unexpected" in errors[0]


def test_every_flag_cpforge_derives_is_refused_by_the_schema_too() -> None:
    for flag in mx.DERIVED_FLAGS:
        for written in (flag, f"{flag}=x"):
            text = mutate("freethreaded: {freethreaded: true}", f"freethreaded: {{configure: [{written}]}}")
            with pytest.raises(MatrixError, match="managed by cpforge"):
                mx.loads(text)
            assert schema_errors(text) != [], written
    assert schema_errors(mutate("freethreaded: {freethreaded: true}", "x: {configure: [--disable-gil-x]}")) == []


def test_the_schema_patterns_are_the_loaders_regexes() -> None:
    """Every schema pattern is a valid regex, and the loader's own regexes are among them verbatim."""
    patterns = {n["pattern"] for n in every_node(SCHEMA) if isinstance(n.get("pattern"), str)}
    for pattern in patterns:
        re.compile(pattern)
    for regex in (mx.FLAG_RE, mx.VERSION_RE, mx.NAME_RE, mx.REPO_RE, mx.PULL_RE, mx.MIRROR_RE, mx.CC_FLAG_RE):
        assert regex.pattern in patterns

"""The policy language, pattern semantics and the deny-by-default decision."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from latchkey_server.access.authz import ResourceKind
from latchkey_server.access.policy import (
    CAPABILITIES,
    DENY,
    Pattern,
    Rule,
    decide,
    is_clean_resource,
    load_policy,
    parse_policy,
)
from latchkey_server.errors import InvalidArgument

K = ResourceKind


def rules(text: str) -> tuple[Rule, ...]:
    return parse_policy(text, name="t", source="t.hcl").rules


def allowed(text: str, kind: ResourceKind, resource: str, capability: str) -> bool:
    return decide(rules(text), kind, resource, capability)


# ---------------------------------------------------------------- the language

EXAMPLE = """
# resource kinds: secret, database, config, service, gateway
secret   "secret/data/billing/*" { capabilities = ["read"] }
database "billing-*"             { capabilities = ["read", "watch", "renew", "revoke"] }
config   "billing/"              { capabilities = ["read", "watch"] }
service  "payments"              { capabilities = ["discover"] }
database "*"                     { capabilities = ["list_leases", "revoke_any"] }   # operator
secret   "secret/data/billing/root" { capabilities = ["deny"] }
gateway  "*"                     { capabilities = ["status"] }
"""


def test_every_kind_parses() -> None:
    parsed = rules(EXAMPLE)
    assert [(r.kind, r.pattern.text) for r in parsed] == [
        (K.SECRET, "secret/data/billing/*"),
        (K.SECRET, "secret/data/billing/root"),
        (K.DATABASE, "billing-*"),
        (K.DATABASE, "*"),
        (K.CONFIG, "billing/"),
        (K.SERVICE, "payments"),
        (K.GATEWAY, "*"),
    ]
    by_pattern = {r.pattern.text: r.capabilities for r in parsed}
    assert by_pattern["billing-*"] == {"read", "watch", "renew", "revoke"}
    assert by_pattern["secret/data/billing/root"] == {DENY}


def test_json_form_is_accepted() -> None:
    document = {
        "secret": {"secret/data/billing/*": {"capabilities": ["read"]}},
        "database": [{"billing-*": {"capabilities": ["read"]}}, {"x": {"capabilities": ["deny"]}}],
    }
    parsed = rules(json.dumps(document))
    assert {(r.kind, r.pattern.text) for r in parsed} == {
        (K.SECRET, "secret/data/billing/*"),
        (K.DATABASE, "billing-*"),
        (K.DATABASE, "x"),
    }


def test_empty_and_comment_only_files_grant_nothing() -> None:
    assert rules("") == ()
    assert rules("# nothing yet\n") == ()


@pytest.mark.parametrize(
    ("kind", "bad"),
    [
        ("secret", "write"),
        ("secret", "list"),
        ("database", "discover"),
        ("config", "write"),
        ("service", "read"),
        ("gateway", "read"),
        ("database", "READ"),
    ],
)
def test_unknown_capability_names_file_kind_pattern_and_capability(kind: str, bad: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_policy(
            f'{kind} "some/pattern*" {{ capabilities = ["{bad}"] }}', name="p", source="p.hcl"
        )
    message = caught.value.message
    assert "p.hcl" in message
    assert kind in message
    assert "'some/pattern*'" in message
    assert repr(bad) in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('bogus "a" { capabilities = ["read"] }', "unknown resource kind 'bogus'"),
        ('secret "a" { capabilities = ["read" }', "not valid HCL or JSON"),
        ('{"secret": ', "not valid HCL or JSON"),
        ('secret "a" { capabilities = "read" }', "must be a list of strings"),
        ('secret "a" { capabilities = [] }', "is empty"),
        ('secret "a" { capabilites = ["read"] }', "unknown key 'capabilites'"),
        ('secret "a" "b" { capabilities = ["read"] }', "unknown key 'b'"),
        ('secret { capabilities = ["read"] }', "expected a block"),
        ('secret "a/*/b" { capabilities = ["read"] }', "'*' is only allowed as the last"),
        ('secret "a/" { capabilities = ["read"] }', "use 'a/*' for a prefix"),
        ('secret "a//b" { capabilities = ["read"] }', "empty segment"),
        ('secret "a/../b" { capabilities = ["read"] }', "'..' segment"),
        ('secret "/a" { capabilities = ["read"] }', "starts with '/'"),
        ('secret "a%2e" { capabilities = ["read"] }', "contains '%'"),
        ('secret "\uff42illing" { capabilities = ["read"] }', "NFKC"),
        ('secret "" { capabilities = ["read"] }', "empty"),
    ],
)
def test_bad_policies_get_clear_errors(text: str, expected: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_policy(text, name="p", source="p.hcl")
    assert expected in caught.value.message
    assert "p.hcl" in caught.value.message


@pytest.mark.parametrize(
    "text",
    [
        # pyhcl would keep only the last of these blocks or keys, possibly dropping the deny.
        'secret "a" { capabilities = ["deny"] }\nsecret "a" { capabilities = ["read"] }',
        'secret "a" { capabilities = ["read"] }\nsecret "a" { capabilities = ["deny"] }',
        'secret "a" {\n capabilities = ["deny"]\n capabilities = ["read"]\n}',
        '{"secret": {"a": {"capabilities": ["deny"]}, "a": {"capabilities": ["read"]}}}',
    ],
)
def test_repeated_blocks_and_keys_are_refused(text: str) -> None:
    with pytest.raises(InvalidArgument, match=r"repeated|twice"):
        parse_policy(text, name="p", source="p.hcl")


def test_load_policy_names_it_after_the_file(tmp_path: Path) -> None:
    path = tmp_path / "billing.hcl"
    path.write_text('service "payments" { capabilities = ["discover"] }\n')
    policy = load_policy(path)
    assert policy.name == "billing"
    assert policy.source == str(path)
    with pytest.raises(InvalidArgument, match="cannot be read"):
        load_policy(tmp_path / "missing.hcl")


# ---------------------------------------------------------------- pattern semantics


@pytest.mark.parametrize(
    ("kind", "pattern", "resource", "expected"),
    [
        (K.SERVICE, "payments", "payments", True),
        (K.SERVICE, "payments", "payments2", False),
        (K.SERVICE, "payments", "Payments", False),
        (K.SERVICE, "payments", "payment", False),
        (K.DATABASE, "billing-*", "billing-", True),
        (K.DATABASE, "billing-*", "billing-ro", True),
        (K.DATABASE, "billing-*", "billing", False),
        (K.DATABASE, "billing-*", "billing_ro", False),
        (K.SECRET, "secret/data/billing/*", "secret/data/billing/db", True),
        (K.SECRET, "secret/data/billing/*", "secret/data/billing/a/b/c", True),
        (K.SECRET, "secret/data/billing/*", "secret/data/billing", False),
        (K.SECRET, "secret/data/billing/*", "secret/data/billingx", False),
        (K.SECRET, "secret/data/bill*", "secret/data/billing/a/b", True),
        (K.SECRET, "*", "anything/at/all", True),
        (K.DATABASE, "*", "*", True),
        (K.SECRET, "secret/data/+/db", "secret/data/billing/db", True),
        (K.SECRET, "secret/data/+/db", "secret/data/db", False),
        (K.SECRET, "secret/data/+/db", "secret/data/a/b/db", False),
        (K.SECRET, "secret/data/+/db", "secret/data//db", False),
        (K.SECRET, "secret/+/+", "secret/data/x", True),
        (K.SECRET, "secret/+/+", "secret/data/x/y", False),
        (K.SECRET, "secret/data/+/*", "secret/data/billing/db/x", True),
        (K.SECRET, "secret/data/+/*", "secret/data/billing", False),
        (K.SECRET, "a+b", "a+b", True),  # `+` that is not a whole segment is literal
        (K.SECRET, "a+b", "aab", False),
        (K.SECRET, "a/+*", "a/+x", True),  # the `+` of `+*` is literal too
        (K.SECRET, "a/+*", "a/x", False),
        (K.SECRET, "a/b?c", "a/bxc", False),  # no other glob characters
        (K.SECRET, "a/[bc]", "a/b", False),
        (K.SECRET, "a/[bc]", "a/[bc]", True),
        (K.SECRET, "a/b.c", "a/bxc", False),
        (K.CONFIG, "billing/", "billing/", True),
        (K.CONFIG, "billing/", "billing/x", True),
        (K.CONFIG, "billing/", "billing/x/y", True),
        (K.CONFIG, "billing/", "billing", False),
        (K.CONFIG, "billing/", "billingx", False),
        (K.CONFIG, "billing/x", "billing/x", True),
        (K.CONFIG, "billing/x", "billing/x/", False),
        (K.CONFIG, "billing*", "billing", True),
    ],
)
def test_pattern_semantics(kind: ResourceKind, pattern: str, resource: str, expected: bool) -> None:
    assert Pattern.parse(kind, pattern).matches(resource) is expected


def test_config_prefix_grant() -> None:
    policy = 'config "billing/" { capabilities = ["read", "watch"] }'
    assert allowed(policy, K.CONFIG, "billing/", "watch")
    assert allowed(policy, K.CONFIG, "billing/", "read")
    assert allowed(policy, K.CONFIG, "billing/x", "read")
    assert not allowed(policy, K.CONFIG, "billingx", "read")
    assert not allowed(policy, K.CONFIG, "billing", "watch")


# ---------------------------------------------------------------- decisions


def test_default_deny() -> None:
    assert not decide((), K.SECRET, "secret/data/x", "read")
    assert not allowed(EXAMPLE, K.SERVICE, "orders", "discover")


def test_grants_are_per_capability_and_kind() -> None:
    assert allowed(EXAMPLE, K.DATABASE, "billing-ro", "watch")
    assert allowed(EXAMPLE, K.DATABASE, "billing-ro", "revoke_any")  # via database "*"
    assert not allowed(EXAMPLE, K.SECRET, "billing-ro", "read")  # kinds do not mix
    assert not allowed(EXAMPLE, K.SERVICE, "payments", "read")  # not a service capability
    assert allowed(EXAMPLE, K.DATABASE, "*", "list_leases")
    assert not allowed(EXAMPLE, K.DATABASE, "*", "read")


def test_union_of_matching_rules() -> None:
    policy = """
    database "billing-*"  { capabilities = ["read"] }
    database "billing-ro" { capabilities = ["watch"] }
    """
    assert allowed(policy, K.DATABASE, "billing-ro", "read")
    assert allowed(policy, K.DATABASE, "billing-ro", "watch")
    assert not allowed(policy, K.DATABASE, "billing-rw", "watch")


def test_explicit_deny_wins_whatever_the_specificity() -> None:
    assert not allowed(EXAMPLE, K.SECRET, "secret/data/billing/root", "read")
    assert allowed(EXAMPLE, K.SECRET, "secret/data/billing/rootx", "read")
    broad_deny = """
    secret "secret/data/*"            { capabilities = ["deny"] }
    secret "secret/data/billing/root" { capabilities = ["read"] }
    """
    assert not allowed(broad_deny, K.SECRET, "secret/data/billing/root", "read")


def test_deny_is_never_a_grantable_capability() -> None:
    assert not allowed(EXAMPLE, K.SECRET, "secret/data/billing/root", DENY)
    assert not allowed('secret "*" { capabilities = ["read"] }', K.SECRET, "a", DENY)


# ---------------------------------------------------------------- bypass attempts

# Allow-everything rules, plus a broad grant and a deny per kind: none of these requests may be
# allowed, whatever rule they try to slip past.
EVERYTHING = """
secret   "*"                      { capabilities = ["read"] }
database "*"                      { capabilities = ["read", "watch", "renew", "revoke"] }
config   "*"                      { capabilities = ["read", "watch"] }
service  "*"                      { capabilities = ["discover"] }
gateway  "*"                      { capabilities = ["status"] }
"""
GUARDED = """
secret   "secret/data/billing/*"    { capabilities = ["read"] }
secret   "secret/data/billing/root" { capabilities = ["deny"] }
database "billing"                  { capabilities = ["read"] }
database "billing-ro"               { capabilities = ["deny"] }
config   "billing/"                 { capabilities = ["read"] }
config   "billing/root"             { capabilities = ["deny"] }
service  "billing"                  { capabilities = ["discover"] }
gateway  "billing"                  { capabilities = ["status"] }
"""
CAPABILITY = {
    K.SECRET: "read",
    K.DATABASE: "read",
    K.CONFIG: "read",
    K.SERVICE: "discover",
    K.GATEWAY: "status",
}
# (kind, base) the attacks are built on: the guarded, granted resource of each kind.
BASES = {
    K.SECRET: "secret/data/billing/x",
    K.DATABASE: "billing",
    K.CONFIG: "billing/x",
    K.SERVICE: "billing",
    K.GATEWAY: "billing",
}
ATTACKS = [
    lambda b: b + "/../root",
    lambda b: b + "/..",
    lambda b: "../" + b,
    lambda b: b + "/./x",
    lambda b: b.replace("b", "b/", 1).replace("/", "//", 1),
    lambda b: "/" + b,
    lambda b: b + "//",
    lambda b: b + "%2e%2e",
    lambda b: b + "/%2e%2e/root",
    lambda b: b + "%2F..%2Froot",
    lambda b: b + "\x00",
    lambda b: b + "\n",
    lambda b: b.replace("b", "\uff42", 1),  # full-width b
    lambda b: b.replace("i", "\u0131", 1),  # dotless i: NFKC-stable, must not match `billing`
    lambda b: b.upper(),
    lambda b: b.capitalize(),
    lambda b: "",
]


@pytest.mark.parametrize("kind", list(K))
@pytest.mark.parametrize("attack", range(len(ATTACKS)))
def test_bypass_attempts_are_denied(kind: ResourceKind, attack: int) -> None:
    resource = ATTACKS[attack](BASES[kind])
    capability = CAPABILITY[kind]
    assert decide(rules(GUARDED), kind, BASES[kind], capability)  # the base itself is allowed
    assert not decide(rules(GUARDED), kind, resource, capability), resource
    if not is_clean_resource(kind, resource):  # unclean resources are denied even under "*"
        assert not decide(rules(EVERYTHING), kind, resource, capability), resource


@pytest.mark.parametrize("kind", list(K))
@pytest.mark.parametrize("request_text", ["*", "+", "billing*", "bill*", "+/x", "billing/+", "b+"])
def test_glob_characters_in_requests_are_literals(kind: ResourceKind, request_text: str) -> None:
    literal = f'{kind.value} "{BASES[kind]}" {{ capabilities = ["{CAPABILITY[kind]}"] }}'
    assert not decide(rules(literal), kind, request_text, CAPABILITY[kind])
    # A `*` or `+` in a request matches a prefix grant only as the literal character it is.
    prefix = f'{kind.value} "bill*" {{ capabilities = ["{CAPABILITY[kind]}"] }}'
    expected = request_text.startswith("bill")
    assert decide(rules(prefix), kind, request_text, CAPABILITY[kind]) is expected


def test_trailing_slash_only_for_config_prefixes() -> None:
    assert not allowed(EVERYTHING, K.SECRET, "secret/data/billing/", "read")
    assert not allowed(EVERYTHING, K.DATABASE, "billing/", "read")
    assert allowed(EVERYTHING, K.CONFIG, "billing/", "read")
    assert not allowed(EVERYTHING, K.CONFIG, "billing//", "read")


# ---------------------------------------------------------------- properties

SEGMENTS = ["a", "b", "ab", "+", "*", "..", ".", "", "%2e", "A", "\uff41"]
PATTERN_SEGMENTS = ["a", "b", "ab", "+", "a+", "x.y"]


def reference_matches(kind: ResourceKind, pattern: str, resource: str) -> bool:
    """Obviously-correct matching: recursive over segment lists, no shared code."""
    if kind is ResourceKind.CONFIG and pattern.endswith("/"):
        pattern += "*"

    def go(psegs: list[str], rsegs: list[str]) -> bool:
        if not psegs:
            return not rsegs
        head = psegs[0]
        if len(psegs) == 1 and head.endswith("*"):
            rest = "/".join(rsegs)  # everything left, slashes and all
            return bool(rsegs) and rest[: len(head) - 1] == head[:-1]
        if not rsegs:
            return False
        if head == "+":
            return rsegs[0] != "" and go(psegs[1:], rsegs[1:])
        return head == rsegs[0] and go(psegs[1:], rsegs[1:])

    return go(pattern.split("/"), resource.split("/"))


def reference_clean(kind: ResourceKind, resource: str) -> bool:
    if resource == "" or resource[0] == "/":
        return False
    if any(c in "%\\" or (unicodedata.category(c)[0] in "CZ" and c != " ") for c in resource):
        return False
    if unicodedata.normalize("NFKC", resource) != resource:
        return False
    parts = resource.split("/")
    if kind is ResourceKind.CONFIG and len(parts) > 1 and parts[-1] == "":
        parts = parts[:-1]
    return all(p not in ("", ".", "..") for p in parts)


@st.composite
def patterns(draw: st.DrawFn) -> str:
    segments = draw(st.lists(st.sampled_from(PATTERN_SEGMENTS), min_size=1, max_size=4))
    text = "/".join(segments)
    ending = draw(st.sampled_from(["", "*", "/*", "-*", "/"]))
    if ending == "/" and draw(st.booleans()):
        ending = ""
    return draw(st.sampled_from(["*", text + ending]))


resources = st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=5).map("/".join)
kinds = st.sampled_from(list(ResourceKind))


def parse_or_none(kind: ResourceKind, text: str) -> Pattern | None:
    try:
        return Pattern.parse(kind, text)
    except ValueError:
        return None


@settings(max_examples=200, deadline=None)
@given(kind=kinds, pattern=patterns(), resource=resources)
def test_matcher_agrees_with_reference(kind: ResourceKind, pattern: str, resource: str) -> None:
    parsed = parse_or_none(kind, pattern)
    if parsed is None:
        assert pattern.endswith("/")
        assert kind is not ResourceKind.CONFIG
        return
    assert parsed.matches(resource) is reference_matches(kind, pattern, resource)


@settings(max_examples=200, deadline=None)
@given(kind=kinds, pattern=patterns(), resource=resources)
def test_literal_patterns_match_only_themselves(
    kind: ResourceKind, pattern: str, resource: str
) -> None:
    literal = pattern.rstrip("*/")
    if not literal or "+" in literal.split("/"):
        return
    assert Pattern.parse(kind, literal).matches(resource) is (resource == literal)


@st.composite
def rule_sets(draw: st.DrawFn, kind: ResourceKind) -> list[tuple[str, list[str]]]:
    capabilities = sorted(CAPABILITIES[kind])
    found: list[tuple[str, list[str]]] = []
    for _ in range(draw(st.integers(min_value=0, max_value=5))):
        pattern = draw(patterns())
        if pattern.endswith("/") and kind is not ResourceKind.CONFIG:
            pattern += "*"
        found.append((pattern, draw(st.lists(st.sampled_from(capabilities), min_size=1))))
    return found


@settings(max_examples=200, deadline=None)
@given(data=st.data(), kind=kinds, resource=resources)
def test_allowed_iff_some_rule_grants_and_no_deny_covers(
    data: st.DataObject, kind: ResourceKind, resource: str
) -> None:
    written = data.draw(rule_sets(kind))
    capability = data.draw(st.sampled_from(sorted(CAPABILITIES[kind] - {DENY})))
    document = {kind.value: [{p: {"capabilities": caps}} for p, caps in written]}
    parsed = parse_policy(json.dumps(document), name="t", source="t.json").rules

    matching = [caps for p, caps in written if reference_matches(kind, p, resource)]
    expected = (
        reference_clean(kind, resource)
        and any(capability in caps for caps in matching)
        and not any(DENY in caps for caps in matching)
    )
    assert decide(parsed, kind, resource, capability) is expected
    # A deny covering the resource wins over whatever the other rules grant.
    deny_all = Rule(kind=kind, pattern=Pattern.parse(kind, "*"), capabilities=frozenset({DENY}))
    assert not decide((*parsed, deny_all), kind, resource, capability)


@settings(max_examples=200, deadline=None)
@given(kind=kinds, pattern=patterns(), resource=resources)
def test_unclean_requests_never_match(kind: ResourceKind, pattern: str, resource: str) -> None:
    parsed = parse_or_none(kind, pattern)
    if parsed is None or reference_clean(kind, resource):
        return
    rule = Rule(kind=kind, pattern=parsed, capabilities=CAPABILITIES[kind] - {DENY})
    assert not any(decide((rule,), kind, resource, c) for c in CAPABILITIES[kind])

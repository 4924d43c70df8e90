"""docs/openapi.json, checked against the code so that the two cannot drift apart.

The routes against ``app.app.routes`` and Chalice's own API Gateway definition; the
fields, limits, defaults and required-ness against the parsers in chalicelib/commands.py
(by asking the parsers themselves); the documented answers against real answers of the
app, validated with the document's own schemas; and, with schemathesis, requests
generated from the document against the app.
"""

import copy
import inspect
import json
import re
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from urllib.parse import urlencode

import boto3
import pytest
import schemathesis
from botocore.loaders import create_loader
from chalice import ChaliceViewError, IAMAuthorizer
from chalice.deploy.swagger import SwaggerGenerator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws
from moto.core.exceptions import JsonRESTError
from moto.stepfunctions.models import StepFunctionBackend
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate as validate_spec
from schemathesis.config import SchemathesisConfig

import app as chalice_app
from chalicelib import errors
from chalicelib.arns import AccountRegion, parse_state_machine_arn
from chalicelib.commands import (
    ABORT_ERROR,
    ABORT_FIELDS,
    DEFAULT_PAGE,
    HOLD_FIELDS,
    MAX_CAUSE,
    MAX_ERROR,
    MAX_EXECUTIONS,
    MAX_MACHINES,
    MAX_PAGE,
    MAX_REASON,
    RECURRENCE_FIELDS,
    RENEW_FIELDS,
    RESUME_FIELDS,
    SWITCH_FIELDS,
    HoldLimits,
    parse_abort,
    parse_hold_audit_page,
    parse_hold_id,
    parse_holds_query,
    parse_new_hold,
    parse_page,
    parse_renew,
    parse_resume,
    parse_status,
    parse_switch,
)
from chalicelib.config import DEFAULT_HOLD_MAX_TTL_SECONDS, DEFAULT_HOLD_TTL_SECONDS
from chalicelib.errors import InvalidArn, InvalidInput, MissingField, UnknownField
from chalicelib.events import GUARD_NAME, MAX_GUARDS
from chalicelib.holds import MAX_HOLDS, MAX_SCOPE_MACHINES, MAX_SERIES
from chalicelib.resumer import REMAINING_COUNT_CAP
from chalicelib.sections import COUNTED, FILTERED, SHOWN
from tests.conftest import BUCKET
from tests.harness import ACCOUNT, REGION, ROOT
from tests.sends import counting_sends

DOC = json.loads((ROOT / "docs" / "openapi.json").read_text())
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
ORDERS = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:Orders"
JSON = {"Content-Type": "application/json"}
PASS = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}})


def at(pointer, document=DOC):
    """The node a JSON pointer (``#/a/b``) names, following each ``$ref`` on the way."""
    node = document
    for part in pointer.removeprefix("#/").split("/"):
        while "$ref" in node:
            node = at(node["$ref"], document)
        node = node[int(part) if isinstance(node, list) else part.replace("~1", "/").replace("~0", "~")]
    return node


def resolve(node):
    while "$ref" in node:
        node = at(node["$ref"])
    return node


def operations_of(document):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield path, method, operation


def operations():
    yield from operations_of(DOC)


def request_schema(path, method):
    return resolve(DOC["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"])


def query_parameters(path, method):
    return [resolve(parameter) for parameter in DOC["paths"][path][method].get("parameters", [])]


def page_of_one(query):
    return parse_page(query, machine_required=True)


def overview_page(query):
    return parse_page(query, machine_required=False)


# The dev stage's hold limits: it sets neither HoldDefaultTtlSeconds nor HoldMaxTtlSeconds.
HOLD_LIMITS = HoldLimits(DEFAULT_HOLD_TTL_SECONDS, DEFAULT_HOLD_MAX_TTL_SECONDS)
# One "now" for every hold parsed here, so that two parses of a body give equal holds.
NOW = datetime.now(UTC)
WEEKLY = "cron(0 2 ? * SUN *)"


def new_hold(body):
    return parse_new_hold(body, HOLD_LIMITS, NOW)


def renewal(body):
    return parse_renew(body, HOLD_LIMITS)


def recurrence(body):
    """A hold's ``recurrence``, read as part of a hold that is valid but for it."""
    return new_hold({"guards": ["orders-db"], "recurrence": body})


# What reads each body and each query string: the route's view calls these.
BODY_PARSERS = {
    ("/maintenance", "post"): (parse_switch, SWITCH_FIELDS),
    ("/resume", "post"): (parse_resume, RESUME_FIELDS),
    ("/abort", "post"): (parse_abort, ABORT_FIELDS),
    ("/holds", "post"): (new_hold, HOLD_FIELDS),
    ("/holds/{hold_id}/renew", "post"): (renewal, RENEW_FIELDS),
}
# The objects inside a body, each with what reads it.
NESTED_PARSERS = {"#/components/schemas/HoldRequest/properties/recurrence": (recurrence, RECURRENCE_FIELDS)}
QUERY_PARSERS = {
    ("/maintenance", "get"): (parse_status, overview_page),
    ("/maintenance/paused", "get"): (page_of_one,),
    ("/audit", "get"): (page_of_one,),
    ("/holds", "get"): (parse_holds_query,),
    ("/holds/{hold_id}/audit", "get"): (parse_hold_audit_page,),
}
CALLED_BY_VIEW = {
    overview_page: "parse_page(",
    page_of_one: "parse_page(",
    new_hold: "parse_new_hold(",
    renewal: "parse_renew(",
}


def called_by_view(parse, path, method):
    return CALLED_BY_VIEW.get(parse, f"{parse.__name__}(") in source_of_view(path, method)


def source_of_view(path, method):
    return inspect.getsource(chalice_app.app.routes[path][method.upper()].view_function)


def accepted_by(parse):
    """The names a parser accepts, as it says itself when refusing an unknown one."""
    with pytest.raises(UnknownField) as refused:
        parse({"sfnPauserProbe": "1"})
    return set(str(refused.value).split("expected only ", 1)[1].split(", "))


# -- the document itself


def test_the_document_is_valid_openapi_3_0():
    assert DOC["openapi"].startswith("3.0.")
    validate_spec(DOC)


def test_the_document_describes_exactly_the_routes_of_the_app():
    routes = {(path, method.lower()) for path, methods in chalice_app.app.routes.items() for method in methods}

    assert {(path, method) for path, method, _ in operations()} == routes


def test_every_operation_is_signed_with_sigv4_as_api_gateway_will_enforce_it():
    deployed = SwaggerGenerator(
        REGION, {"api_handler_arn": "arn:aws:lambda:::function:sfn-pauser-dev"}
    ).generate_swagger(chalice_app.app)

    for path, method, operation in operations():
        route = chalice_app.app.routes[path][method.upper()]
        assert isinstance(route.authorizer, IAMAuthorizer), f"{method} {path}"
        assert operation["security"] == [{route.authorizer.name: []}] == deployed["paths"][path][method]["security"]
    schemes = DOC["components"]["securitySchemes"]
    for name, definition in deployed["securityDefinitions"].items():
        assert {key: schemes[name][key] for key in definition} == definition
    assert DOC["security"] == [{"sigv4": []}]


def test_the_version_is_the_projects():
    project = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)

    assert DOC["info"]["version"] == project[1]


# -- request bodies and query strings against the parsers


@pytest.mark.parametrize(("path", "method"), BODY_PARSERS.keys(), ids=lambda value: str(value))
def test_each_body_has_exactly_the_fields_its_parser_accepts_and_no_others(path, method):
    parse, fields = BODY_PARSERS[path, method]
    schema = request_schema(path, method)

    assert set(schema["properties"]) == set(fields) == accepted_by(parse)
    assert schema["additionalProperties"] is False
    # A view that reads its body with empty_ok takes no body as {} (a renew with the defaults).
    optional = "empty_ok=True" in source_of_view(path, method)
    assert DOC["paths"][path][method]["requestBody"]["required"] is not optional
    assert called_by_view(parse, path, method)


@pytest.mark.parametrize("pointer", NESTED_PARSERS.keys())
def test_each_object_inside_a_body_has_exactly_the_fields_its_parser_accepts_and_requires(pointer):
    parse, fields = NESTED_PARSERS[pointer]
    schema = at(pointer)
    example = schema["example"]

    assert set(schema["properties"]) == set(fields) == accepted_by(parse)
    assert schema["additionalProperties"] is False
    validator(schema, closed=False).validate(example)
    parse(example)
    for name in schema["required"]:
        with pytest.raises(MissingField) as refused:
            parse({key: value for key, value in example.items() if key != name})
        # Named alone, or by its path in the body (recurrence.durationSeconds).
        assert refused.value.field.split(".")[-1] == name


def test_only_the_posts_have_bodies_and_they_are_json_as_the_routes_accept():
    for path, method, operation in operations():
        if (path, method) in BODY_PARSERS:
            route = chalice_app.app.routes[path][method.upper()]
            assert list(operation["requestBody"]["content"]) == route.content_types
        else:
            assert "requestBody" not in operation, f"{method} {path}"


@pytest.mark.parametrize(("path", "method"), QUERY_PARSERS.keys(), ids=lambda value: str(value))
def test_each_query_has_exactly_the_parameters_its_parsers_accept(path, method):
    parsers = QUERY_PARSERS[path, method]
    parameters = query_parameters(path, method)

    # The hold id in a path is parse_hold_id's (test_each_path_parameter_is_a_hold_id_...).
    assert all(parameter["in"] in ("query", "path") for parameter in parameters)
    names = {parameter["name"] for parameter in parameters if parameter["in"] == "query"}
    assert names == set().union(*(accepted_by(parse) for parse in parsers))
    # Every listing pages: a page size (limit, or maxResults for the holds) and a nextToken.
    assert "nextToken" in names and names & {"limit", "maxResults"}
    for parse in parsers:
        assert called_by_view(parse, path, method)


def test_the_listings_of_one_machine_require_it_and_the_overview_and_the_holds_do_not():
    for path in ("/maintenance/paused", "/audit"):
        [machine] = [p for p in query_parameters(path, "get") if p["name"] == "stateMachineArn"]
        assert machine["required"] is True
    with pytest.raises(MissingField, match=r"^stateMachineArn:"):
        page_of_one({})
    for path in ("/maintenance", "/holds"):
        [optional] = [p for p in query_parameters(path, "get") if p["name"] == "stateMachineArn"]
        assert optional["required"] is False
    assert overview_page({}).machine is None
    assert parse_holds_query({}).machine is None
    for path, method, _ in operations():
        others = [p for p in query_parameters(path, method) if p["in"] == "query" and p["name"] != "stateMachineArn"]
        assert not any(parameter["required"] for parameter in others), f"{method} {path}"


def test_the_holds_listing_reads_an_empty_state_machine_as_none_as_documented():
    [machine] = [p for p in query_parameters("/holds", "get") if p["name"] == "stateMachineArn"]

    validator(machine["schema"], closed=False).validate("")
    assert parse_holds_query({"stateMachineArn": ""}).machine is None


def test_each_path_parameter_is_a_hold_id_its_view_reads_with_parse_hold_id():
    for path, method, _ in operations():
        in_path = [parameter for parameter in query_parameters(path, method) if parameter["in"] == "path"]
        assert [parameter["name"] for parameter in in_path] == re.findall(r"{(\w+)}", path), f"{method} {path}"
        for parameter in in_path:
            assert parameter["required"] is True
            assert parameter["schema"] == {"$ref": f"{SCHEMAS}/HoldId"}
            assert called_by_view(parse_hold_id, path, method)


HOLD_ID_PATTERN = re.compile(at("#/components/schemas/HoldId/pattern").removeprefix("^").removesuffix("$"))


def accepts_hold_id(text):
    try:
        parse_hold_id(text)
    except InvalidInput:
        return False
    return True


@settings(max_examples=150, deadline=None)
@given(
    st.from_regex(HOLD_ID_PATTERN, fullmatch=True) | st.from_regex(r"hold-[0-9a-fA-F]{15,17}") | st.text(max_size=30)
)
def test_the_documented_hold_id_pattern_accepts_exactly_what_the_parser_accepts(text):
    assert (HOLD_ID_PATTERN.fullmatch(text) is not None) == accepts_hold_id(text)


def test_the_documented_guard_name_is_the_one_checkpoints_and_holds_are_checked_against():
    assert at("#/components/schemas/Guard/pattern") == f"^{GUARD_NAME.pattern}$"
    assert at("#/components/parameters/Guard/schema") == at("#/components/schemas/HoldRequest/properties/guards/items")


SCHEMAS = "#/components/schemas"
LIMITS = {
    f"{SCHEMAS}/SwitchRequest/properties/reason/maxLength": MAX_REASON,
    f"{SCHEMAS}/SwitchRequest/properties/stateMachineArns/maxItems": MAX_MACHINES,
    f"{SCHEMAS}/ResumeRequest/properties/executionArns/maxItems": MAX_EXECUTIONS,
    f"{SCHEMAS}/AbortRequest/properties/executionArns/maxItems": MAX_EXECUTIONS,
    f"{SCHEMAS}/AbortRequest/properties/error/maxLength": MAX_ERROR,
    f"{SCHEMAS}/AbortRequest/properties/error/default": ABORT_ERROR,
    f"{SCHEMAS}/AbortRequest/properties/cause/maxLength": MAX_CAUSE,
    f"{SCHEMAS}/HoldRequest/properties/stateMachineArns/maxItems": MAX_SCOPE_MACHINES,
    f"{SCHEMAS}/HoldRequest/properties/guards/maxItems": MAX_GUARDS,
    f"{SCHEMAS}/HoldRequest/properties/reason/maxLength": MAX_REASON,
}
# Limits the document can only say in words, each where it says it.
LIMITS_IN_WORDS = [
    (f"{SCHEMAS}/ResumeResult/properties/remainingCapped/description", f"{REMAINING_COUNT_CAP:,}"),
    ("#/paths/~1holds/post/description", f"at most {MAX_HOLDS} holds"),
    ("#/components/responses/Conflict/description", f"already has {MAX_HOLDS} holds"),
    (f"{SCHEMAS}/HoldRequest/properties/expiresAt/description", f"at most {MAX_SERIES.days} days"),
    ("#/paths/~1holds~1{hold_id}~1renew/post/description", f"{MAX_SERIES.days} days from now"),
    (f"{SCHEMAS}/Status/properties/inside/description", f"up to {COUNTED:,}"),
    (f"{SCHEMAS}/Status/properties/insideExecutions/description", f"Up to {SHOWN} "),
    (f"{SCHEMAS}/HoldDetail/properties/inside/description", f"more than {FILTERED} inside"),
    (f"{SCHEMAS}/HoldDetail/properties/inside/description", f"up to {COUNTED:,} per machine"),
    (f"{SCHEMAS}/HoldDetail/properties/insideExecutions/description", f"Up to {SHOWN} "),
]


def test_the_documented_limits_are_the_codes_constants():
    assert {pointer: at(pointer) for pointer in LIMITS} == LIMITS
    for pointer, words in LIMITS_IN_WORDS:
        assert words in at(pointer), pointer
    for path, method, _ in operations():
        for parameter in query_parameters(path, method):
            if parameter["name"] in ("limit", "maxResults"):
                limit = parameter["schema"]
                assert (limit["minimum"], limit["maximum"], limit["default"]) == (1, MAX_PAGE, DEFAULT_PAGE)


def arns(count):
    return [f"{ORDERS}{n}" for n in range(count)]


def long_until(length):
    return "2099-01-01T00:00:00Z".ljust(length)  # the parser trims, as fromisoformat needs


def a_window(**window):
    """A recurring hold on a dependency, valid but for what ``window`` changes."""
    return {"guards": ["orders-db"], "recurrence": {"schedule": WEEKLY, "durationSeconds": 3600, **window}}


# Each documented bound, the parser that must enforce it, and a request that is
# valid but for the size given.
BOUNDS = {
    "switch-reason": (
        f"{SCHEMAS}/SwitchRequest/properties/reason/maxLength",
        parse_switch,
        lambda n: {"stateMachineArn": ORDERS, "enabled": True, "reason": "r" * n},
    ),
    "switch-until": (
        f"{SCHEMAS}/SwitchRequest/properties/until/maxLength",
        parse_switch,
        lambda n: {"stateMachineArn": ORDERS, "enabled": True, "until": long_until(n)},
    ),
    "switch-arns-at-most": (
        f"{SCHEMAS}/SwitchRequest/properties/stateMachineArns/maxItems",
        parse_switch,
        lambda n: {"stateMachineArns": arns(n), "enabled": True},
    ),
    "switch-arns-at-least": (
        f"{SCHEMAS}/SwitchRequest/properties/stateMachineArns/minItems",
        parse_switch,
        lambda n: {"stateMachineArns": arns(n), "enabled": True},
    ),
    "resume-executions-at-most": (
        f"{SCHEMAS}/ResumeRequest/properties/executionArns/maxItems",
        parse_resume,
        lambda n: {"stateMachineArn": ORDERS, "executionArns": [f"e{i}" for i in range(n)]},
    ),
    "resume-executions-at-least": (
        f"{SCHEMAS}/ResumeRequest/properties/executionArns/minItems",
        parse_resume,
        lambda n: {"stateMachineArn": ORDERS, "executionArns": [f"e{i}" for i in range(n)]},
    ),
    "resume-limit": (
        f"{SCHEMAS}/ResumeRequest/properties/limit/minimum",
        parse_resume,
        lambda n: {"stateMachineArn": ORDERS, "limit": n},
    ),
    "abort-executions-at-most": (
        f"{SCHEMAS}/AbortRequest/properties/executionArns/maxItems",
        parse_abort,
        lambda n: {"stateMachineArn": ORDERS, "executionArns": [f"e{i}" for i in range(n)]},
    ),
    "abort-executions-at-least": (
        f"{SCHEMAS}/AbortRequest/properties/executionArns/minItems",
        parse_abort,
        lambda n: {"stateMachineArn": ORDERS, "executionArns": [f"e{i}" for i in range(n)]},
    ),
    "abort-error": (
        f"{SCHEMAS}/AbortRequest/properties/error/maxLength",
        parse_abort,
        lambda n: {"stateMachineArn": ORDERS, "all": True, "error": "E" * n},
    ),
    "abort-cause": (
        f"{SCHEMAS}/AbortRequest/properties/cause/maxLength",
        parse_abort,
        lambda n: {"stateMachineArn": ORDERS, "all": True, "cause": "c" * n},
    ),
    "page-limit-at-most": (
        "#/components/parameters/Limit/schema/maximum",
        page_of_one,
        lambda n: {"stateMachineArn": ORDERS, "limit": str(n)},
    ),
    "page-limit-at-least": (
        "#/components/parameters/Limit/schema/minimum",
        page_of_one,
        lambda n: {"stateMachineArn": ORDERS, "limit": str(n)},
    ),
    "page-next-token": (
        "#/components/parameters/NextToken/schema/maxLength",
        page_of_one,
        # A token as the API gives them out: "MTEx" is "111" in base64url.
        lambda n: {"stateMachineArn": ORDERS, "nextToken": ("MTEx" * n)[:n]},
    ),
    "hold-arns-at-most": (
        f"{SCHEMAS}/HoldRequest/properties/stateMachineArns/maxItems",
        new_hold,
        lambda n: {"stateMachineArns": arns(n)},
    ),
    "hold-arns-at-least": (
        f"{SCHEMAS}/HoldRequest/properties/stateMachineArns/minItems",
        new_hold,
        lambda n: {"stateMachineArns": arns(n)},
    ),
    "hold-arn-pattern": (
        f"{SCHEMAS}/HoldRequest/properties/stateMachineArns/items/anyOf/1/maxLength",
        new_hold,
        lambda n: {"stateMachineArns": [ORDERS.ljust(n - 1, "x") + "*"]},
    ),
    "hold-guards-at-most": (
        f"{SCHEMAS}/HoldRequest/properties/guards/maxItems",
        new_hold,
        lambda n: {"guards": [f"db-{i}" for i in range(n)]},
    ),
    "hold-guards-at-least": (
        f"{SCHEMAS}/HoldRequest/properties/guards/minItems",
        new_hold,
        lambda n: {"guards": [f"db-{i}" for i in range(n)]},
    ),
    "hold-reason": (
        f"{SCHEMAS}/HoldRequest/properties/reason/maxLength",
        new_hold,
        lambda n: {"guards": ["orders-db"], "reason": "r" * n},
    ),
    "hold-ttl": (
        f"{SCHEMAS}/HoldRequest/properties/ttlSeconds/minimum",
        new_hold,
        lambda n: {"guards": ["orders-db"], "ttlSeconds": n},
    ),
    "hold-starts-at": (
        f"{SCHEMAS}/HoldRequest/properties/startsAt/maxLength",
        new_hold,
        lambda n: {"guards": ["orders-db"], "startsAt": long_until(n)},
    ),
    "hold-expires-at": (
        f"{SCHEMAS}/HoldRequest/properties/expiresAt/maxLength",
        new_hold,
        lambda n: {"guards": ["orders-db"], "startsAt": "2098-12-31T23:00:00Z", "expiresAt": long_until(n)},
    ),
    "hold-schedule": (
        f"{SCHEMAS}/HoldRequest/properties/recurrence/properties/schedule/maxLength",
        new_hold,
        lambda n: a_window(schedule=WEEKLY.ljust(n)),
    ),
    "hold-window": (
        f"{SCHEMAS}/HoldRequest/properties/recurrence/properties/durationSeconds/minimum",
        new_hold,
        lambda n: a_window(durationSeconds=n),
    ),
    "renew-ttl": (f"{SCHEMAS}/RenewRequest/properties/ttlSeconds/minimum", renewal, lambda n: {"ttlSeconds": n}),
    "holds-page-at-most": (
        "#/components/parameters/MaxResults/schema/maximum",
        parse_holds_query,
        lambda n: {"maxResults": str(n)},
    ),
    "holds-page-at-least": (
        "#/components/parameters/MaxResults/schema/minimum",
        parse_holds_query,
        lambda n: {"maxResults": str(n)},
    ),
    "holds-guard": ("#/components/parameters/Guard/schema/maxLength", parse_holds_query, lambda n: {"guard": "g" * n}),
    "holds-next-token": (
        "#/components/parameters/NextToken/schema/maxLength",
        parse_holds_query,
        lambda n: {"nextToken": ("MTEx" * n)[:n]},
    ),
    "hold-audit-limit-at-most": (
        "#/components/parameters/Limit/schema/maximum",
        parse_hold_audit_page,
        lambda n: {"limit": str(n)},
    ),
    "hold-audit-limit-at-least": (
        "#/components/parameters/Limit/schema/minimum",
        parse_hold_audit_page,
        lambda n: {"limit": str(n)},
    ),
    "hold-audit-next-token": (
        "#/components/parameters/NextToken/schema/maxLength",
        parse_hold_audit_page,
        lambda n: {"nextToken": ("MTEx" * n)[:n]},
    ),
}


@pytest.mark.parametrize("bound", BOUNDS.keys())
def test_the_parsers_enforce_each_documented_bound_exactly(bound):
    pointer, parse, request = BOUNDS[bound]
    value = at(pointer)
    beyond = value + 1 if pointer.endswith(("maxLength", "maxItems", "maximum")) else value - 1
    if "/properties/" in pointer:
        field = pointer.rsplit("/properties/", 1)[1].split("/")[0]
    else:
        field = at(pointer.rsplit("/schema/", 1)[0])["name"]

    parse(request(value))
    with pytest.raises(InvalidInput) as refused:
        parse(request(beyond))
    # A bound on the items of a list is named by the item's index.
    assert refused.value.field == (f"{field}[0]" if "/items/" in pointer else field)


# The hold limits a deployment sets (HoldDefaultTtlSeconds, HoldMaxTtlSeconds): the document
# names each setting and its default, and the parser enforces the default.
MAX_TTL_BOUNDS = {
    "hold-ttl": (
        f"{SCHEMAS}/HoldRequest/properties/ttlSeconds",
        new_hold,
        lambda n: {"guards": ["a"], "ttlSeconds": n},
    ),
    "hold-expires-at": (
        f"{SCHEMAS}/HoldRequest/properties/expiresAt",
        new_hold,
        lambda n: {
            "guards": ["a"],
            "startsAt": "2098-01-01T00:00:00Z",
            "expiresAt": (datetime(2098, 1, 1, tzinfo=UTC) + timedelta(seconds=n)).isoformat(),
        },
    ),
    "hold-window": (
        f"{SCHEMAS}/HoldRequest/properties/recurrence/properties/durationSeconds",
        new_hold,
        lambda n: a_window(durationSeconds=n),
    ),
    "renew-ttl": (f"{SCHEMAS}/RenewRequest/properties/ttlSeconds", renewal, lambda n: {"ttlSeconds": n}),
}


@pytest.mark.parametrize("bound", MAX_TTL_BOUNDS.keys())
def test_the_longest_hold_is_described_by_its_setting_and_enforced_at_its_default(bound):
    pointer, parse, request = MAX_TTL_BOUNDS[bound]

    assert f"HoldMaxTtlSeconds ({DEFAULT_HOLD_MAX_TTL_SECONDS:,} unless configured)" in at(pointer)["description"]
    parse(request(DEFAULT_HOLD_MAX_TTL_SECONDS))
    with pytest.raises(InvalidInput) as refused:
        parse(request(DEFAULT_HOLD_MAX_TTL_SECONDS + 1))
    assert refused.value.field == pointer.rsplit("/", 1)[1]


def test_a_hold_given_no_end_lasts_the_described_default():
    default = f"HoldDefaultTtlSeconds ({DEFAULT_HOLD_TTL_SECONDS:,} unless configured)"

    for schema in ("HoldRequest", "RenewRequest"):
        assert default in at(f"{SCHEMAS}/{schema}/properties/ttlSeconds/description")
    assert new_hold({"guards": ["a"]}).expires_at == NOW + timedelta(seconds=DEFAULT_HOLD_TTL_SECONDS)
    assert renewal({}) == renewal(None) == DEFAULT_HOLD_TTL_SECONDS


def test_a_series_lasts_at_most_and_by_default_the_documented_days():
    assert f"{MAX_SERIES.days} days when left out" in at(f"{SCHEMAS}/HoldRequest/properties/expiresAt/description")
    assert new_hold(a_window()).expires_at == NOW + MAX_SERIES
    new_hold({**a_window(), "expiresAt": (NOW + MAX_SERIES).isoformat()})
    with pytest.raises(InvalidInput, match=r"^expiresAt:"):
        new_hold({**a_window(), "expiresAt": (NOW + MAX_SERIES + timedelta(minutes=1)).isoformat()})


def examples():
    for path, method in BODY_PARSERS:
        example = DOC["paths"][path][method]["requestBody"]["content"]["application/json"]["example"]
        yield pytest.param(path, method, example, id=f"{method} {path}")


@pytest.mark.parametrize(("path", "method", "example"), examples())
def test_each_documented_example_fits_its_schema_and_is_accepted_by_the_parser(path, method, example):
    validator(request_schema(path, method), closed=False).validate(example)

    BODY_PARSERS[path, method][0](example)


def required_sets(schema):
    """Each way the schema allows to meet its requirements (its oneOf or anyOf branches, if any)."""
    branches = schema.get("oneOf") or schema.get("anyOf") or [{}]
    return [set(schema.get("required", [])) | set(branch.get("required", [])) for branch in branches]


@pytest.mark.parametrize(("path", "method", "example"), examples())
def test_the_documented_required_fields_are_the_ones_the_parser_requires(path, method, example):
    parse = BODY_PARSERS[path, method][0]
    [required] = [needed for needed in required_sets(request_schema(path, method)) if needed <= set(example)]

    parse({name: example[name] for name in required})  # nothing else is needed
    for name in required:
        with pytest.raises(MissingField) as refused:
            parse({key: value for key, value in example.items() if key != name})
        assert refused.value.field == name


# Each pair of fields the document says not to send together: a request with both, and the
# field the parser names in refusing it.
EXCLUSIVE = {
    "switch-one-or-many": (
        parse_switch,
        "SwitchRequest",
        {"stateMachineArn": ORDERS, "enabled": True, "stateMachineArns": [ORDERS]},
        "stateMachineArns",
    ),
    "switch-until-only-on": (
        parse_switch,
        "SwitchRequest",
        {"stateMachineArn": ORDERS, "enabled": False, "until": "2099-01-01T00:00:00Z"},
        "until",
    ),
    "switch-force-only-off": (
        parse_switch,
        "SwitchRequest",
        {"stateMachineArn": ORDERS, "enabled": True, "force": True},
        "force",
    ),
    "abort-chosen-or-all": (
        parse_abort,
        "AbortRequest",
        {"stateMachineArn": ORDERS, "executionArns": ["run-1"], "all": True},
        "all",
    ),
    "hold-ttl-or-expires-at": (
        new_hold,
        "HoldRequest",
        {"guards": ["orders-db"], "ttlSeconds": 600, "expiresAt": (NOW + timedelta(hours=1)).isoformat()},
        "expiresAt",
    ),
    "hold-series-without-ttl": (new_hold, "HoldRequest", {**a_window(), "ttlSeconds": 600}, "ttlSeconds"),
}


@pytest.mark.parametrize(("parse", "schema", "request_", "field"), EXCLUSIVE.values(), ids=EXCLUSIVE.keys())
def test_the_fields_documented_as_exclusive_are_refused_together_by_the_parser(parse, schema, request_, field):
    documented = validator(at(f"{SCHEMAS}/{schema}"), closed=False)
    alone = {name: value for name, value in request_.items() if name != field}

    assert documented.is_valid(alone)
    parse(alone)
    assert not documented.is_valid(request_)
    with pytest.raises(InvalidInput) as refused:
        parse(request_)
    assert refused.value.field == field


def outcome(parse, body):
    """What the parser makes of a body: its command, or the field it names in refusing it."""
    try:
        return parse(body)
    except InvalidInput as refused:
        return ("refused", refused.field)


def parsed_objects():
    """Each body, and each object inside one, with its parser, its schema and its documented example."""
    for (path, method), (parse, _) in BODY_PARSERS.items():
        example = DOC["paths"][path][method]["requestBody"]["content"]["application/json"]["example"]
        yield pytest.param(parse, request_schema(path, method), example, id=f"{method} {path}")
    for pointer, (parse, _) in NESTED_PARSERS.items():
        yield pytest.param(parse, at(pointer), at(pointer)["example"], id=pointer.rsplit("/", 1)[1])


@pytest.mark.parametrize(("parse", "schema", "example"), parsed_objects())
def test_a_field_documented_nullable_reads_null_as_absent_and_no_other_field_takes_null(parse, schema, example):
    for name, field in schema["properties"].items():
        absent = outcome(parse, {key: value for key, value in example.items() if key != name})
        null = outcome(parse, {**example, name: None})
        if resolve(field).get("nullable"):
            assert null == absent, name
        else:  # refused, naming the field (alone, or by its path in the body)
            assert isinstance(null, tuple) and null[1].split(".")[-1] == name, name


DEFAULTS = {
    "switch-resume": (parse_switch, {"stateMachineArn": ORDERS, "enabled": False}, "SwitchRequest", "resume", "resume"),
    "switch-dry-run": (
        parse_switch,
        {"stateMachineArn": ORDERS, "enabled": True},
        "SwitchRequest",
        "dryRun",
        "dry_run",
    ),
    "switch-force": (parse_switch, {"stateMachineArn": ORDERS, "enabled": False}, "SwitchRequest", "force", "force"),
    "resume-force": (parse_resume, {"stateMachineArn": ORDERS}, "ResumeRequest", "force", "force"),
    "abort-error": (parse_abort, {"stateMachineArn": ORDERS, "all": True}, "AbortRequest", "error", "error"),
}


@pytest.mark.parametrize(("parse", "minimal", "schema", "field", "attribute"), DEFAULTS.values(), ids=DEFAULTS.keys())
def test_the_documented_defaults_are_what_the_parser_assumes(parse, minimal, schema, field, attribute):
    default = at(f"{SCHEMAS}/{schema}/properties/{field}/default")

    assert getattr(parse(minimal), attribute) == default
    assert getattr(parse({**minimal, field: None}), attribute) == default  # documented nullable: null is absent
    assert at(f"{SCHEMAS}/{schema}/properties/{field}")["nullable"] is True


def test_the_documented_page_size_default_is_what_the_parser_assumes():
    assert (
        overview_page({}).limit == parse_hold_audit_page({}).limit == at("#/components/parameters/Limit/schema/default")
    )


def test_a_hold_is_described_alike_in_every_answer_that_shows_one():
    hold = at(f"{SCHEMAS}/Hold")
    for name in ("HoldTaken", "HoldDetail"):
        schema = at(f"{SCHEMAS}/{name}")
        assert {key: schema["properties"][key] for key in hold["properties"]} == hold["properties"], name
        assert set(hold["required"]) <= set(schema["required"]), name
    assert at(f"{SCHEMAS}/HoldTaken/properties/affected") == at(f"{SCHEMAS}/HoldDetail/properties/affected")
    # The audit trail records a hold as taken: all of it but what depends on the moment it is read.
    as_taken = at(f"{SCHEMAS}/HoldAsTaken")
    of_the_moment = {"active", "activeUntil", "nextOpening"}
    assert as_taken["properties"] == {k: v for k, v in hold["properties"].items() if k not in of_the_moment}
    assert set(as_taken["required"]) == set(hold["required"]) - of_the_moment


# -- the ARN pattern against the ARN parser

ARN_PATTERN = re.compile(at(f"{SCHEMAS}/StateMachineArn/pattern").removeprefix("^").removesuffix("$"))


def parses(text):
    try:
        parse_state_machine_arn(text)
    except InvalidArn:
        return False
    return True


@settings(max_examples=150, deadline=None)
@given(
    st.from_regex(ARN_PATTERN, fullmatch=True)
    | st.from_regex(
        r"arn:aws(-[a-z]+)?:states:[a-z0-9-]{0,16}:[0-9]{11,13}:stateMachine:[^:]{0,82}(:[A-Za-z0-9_ -]{0,3})?",
        fullmatch=True,
    )
    | st.text(max_size=80)
)
def test_the_documented_arn_pattern_accepts_exactly_what_the_parser_accepts(text):
    assert (ARN_PATTERN.fullmatch(text) is not None) == parses(text)


@pytest.mark.parametrize(
    "text",
    [
        ORDERS,
        ORDERS + ":3",
        ORDERS + ":PROD",
        "arn:aws-cn:states:cn-north-1:123456789012:stateMachine:Orders",
        "arn:aws-us-gov:states:us-gov-west-1:123456789012:stateMachine:Orders",
        "Orders",
        ORDERS + ":",
        ORDERS + ":a:b",
        ORDERS + "\n",
        ORDERS.replace("Orders", "Ord ers"),
        ORDERS.replace(":states:", ":lambda:"),
        ORDERS.replace("stateMachine", "execution") + ":run-1",
        ORDERS.replace(ACCOUNT, ACCOUNT[1:]),
    ],
)
def test_the_documented_arn_pattern_and_the_parser_agree_on_known_cases(text):
    assert (ARN_PATTERN.fullmatch(text) is not None) == parses(text)


def botocore_arns():
    """An ARN in each region botocore lists, and the same ARN under each other partition."""
    listed = [
        (partition["id"], region)
        for partition in create_loader().load_data("partitions")["partitions"]
        for region in partition["regions"]
        if not region.endswith("-global")
    ]
    for partition in sorted({partition for partition, _ in listed}):
        for _, region in listed:
            yield f"arn:{partition}:states:{region}:{ACCOUNT}:stateMachine:Orders"


def test_the_documented_arn_pattern_and_the_parser_agree_on_every_partition_and_region_botocore_knows():
    arns = list(botocore_arns())
    accepted = [arn for arn in arns if parses(arn)]

    assert [arn for arn in arns if ARN_PATTERN.fullmatch(arn)] == accepted
    assert "arn:aws-eusc:states:eusc-de-east-1:123456789012:stateMachine:Orders" in accepted
    assert "arn:aws:states:eusc-de-east-1:123456789012:stateMachine:Orders" not in accepted


# -- errors


STATUS_RESPONSES = {
    400: "BadRequest",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    502: "BadGateway",
    503: "ServiceUnavailable",
}


def test_every_error_the_code_raises_is_documented_under_its_status():
    raised = [
        error
        for error in vars(errors).values()
        if isinstance(error, type) and issubclass(error, ChaliceViewError) and error.__module__ == errors.__name__
    ]

    assert raised
    for error in raised:
        if error is InvalidInput:  # the base of the 400s, never raised itself
            continue
        description = DOC["components"]["responses"][STATUS_RESPONSES[error.STATUS_CODE]]["description"]
        assert error.__name__ in description, f"{error.__name__} is not documented as a {error.STATUS_CODE}"


# Besides 400, 403 (outside the allow-list, or AWS denied sfn-pauser's role), 502 and 503 (AWS
# failed), which any operation may answer: 404 from those that need a state machine or a hold
# to exist, and 409 from those that change maintenance or the holds against a concurrent change.
NOT_FOUND = {
    ("/maintenance", "post"),
    ("/maintenance", "get"),
    ("/maintenance/paused", "get"),
    ("/resume", "post"),
    ("/abort", "post"),
    ("/audit", "get"),
    ("/holds", "post"),
    ("/holds/{hold_id}", "get"),
    ("/holds/{hold_id}/audit", "get"),
    ("/holds/{hold_id}/renew", "post"),
}
CONFLICT = {
    ("/maintenance", "post"),
    ("/resume", "post"),
    ("/holds", "post"),
    ("/holds/{hold_id}/renew", "post"),
    ("/holds/{hold_id}", "delete"),
}


def success_of(path, method):
    """The status a view answers when all goes well: 201 when it says so, else Chalice's 200."""
    return "201" if "status_code=201" in source_of_view(path, method) else "200"


def test_every_operation_documents_its_errors_with_the_code_and_message_schema():
    for path, method, operation in operations():
        documented = set(operation["responses"])
        expected = {success_of(path, method), "400", "403", "502", "503"}
        expected |= {"415"} if (path, method) in BODY_PARSERS else set()
        expected |= {"404"} if (path, method) in NOT_FOUND else set()
        expected |= {"409"} if (path, method) in CONFLICT else set()
        assert documented == expected, f"{method} {path}"
        for status in documented - {success_of(path, method)}:
            schema = resolve(operation["responses"][status])["content"]["application/json"]["schema"]
            assert resolve(schema) == at(f"{SCHEMAS}/Error")
    assert set(at(f"{SCHEMAS}/Error/properties")) == set(at(f"{SCHEMAS}/Error/required")) == {"Code", "Message"}


# -- real answers against the documented schemas


def strict(node):
    """The schemas with every documented object closed: an undocumented field fails.

    The document itself leaves answers open (clients should ignore new fields);
    the tests close them, so that a new field cannot go undocumented.
    """
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    closed = {key: strict(value) for key, value in node.items()}
    if closed.get("type") == "object" and "properties" in closed:
        closed.setdefault("additionalProperties", False)
    return closed


STRICT_COMPONENTS = strict(DOC["components"])


def validator(schema, *, closed=True):
    components = STRICT_COMPONENTS if closed else DOC["components"]
    return OAS30Validator({**schema, "components": components})


def conforms(path, method, response, request=None):
    """The answer is documented for this operation and status, and fits its schema exactly."""
    operation = DOC["paths"][path][method]
    status = str(response.status_code)
    assert status in operation["responses"], f"{method.upper()} {path} answered an undocumented {status}"
    schema = resolve(operation["responses"][status])["content"]["application/json"]["schema"]
    body = json.loads(response.body)
    errors_found = sorted(validator(schema).iter_errors(body), key=str)
    assert not errors_found, f"{method.upper()} {path} {status}: {errors_found[0].message}\n{body}"
    if request is not None and status not in ("400", "415"):
        # What the server takes, the document must allow.
        validator(request_schema(path, method), closed=False).validate(request)
    return body


@pytest.fixture(scope="module")
def session():
    return boto3.session.Session()


@pytest.fixture
def plain(session, monkeypatch):
    """moto in plain mode with the bucket, a Standard machine Orders and an Express one, Quick."""
    monkeypatch.setattr(boto3.session, "Session", lambda **_: session)  # the app's clients, warm
    with mock_aws():
        session.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
        sfn = session.client("stepfunctions", region_name=REGION)
        for name, kind in (("Orders", "STANDARD"), ("Quick", "EXPRESS")):
            sfn.create_state_machine(name=name, definition=PASS, roleArn=f"arn:aws:iam::{ACCOUNT}:role/s", type=kind)
        yield


class Api:
    """The test client, checking every answer against the document as it goes.

    Paths are the document's (``/holds/{hold_id}``); the values of their parameters are
    given by name, beside those of the query string: ``get("/holds/{hold_id}", hold_id=...)``.
    """

    def __init__(self, client):
        self._client = client
        self.seen = set()

    def post(self, path, body=None, headers=JSON, **values):
        sent = b"" if body is None else json.dumps(body)
        response = self._client.http.post(url(path, values), headers=headers, body=sent)
        self.seen.add((path, "post", response.status_code))
        return conforms(path, "post", response, body if headers is JSON and body is not None else None)

    def get(self, path, **values):
        response = self._client.http.get(url(path, values))
        self.seen.add((path, "get", response.status_code))
        return conforms(path, "get", response)

    def delete(self, path, **values):
        response = self._client.http.delete(url(path, values))
        self.seen.add((path, "delete", response.status_code))
        return conforms(path, "delete", response)


def url(path, values):
    in_path = set(re.findall(r"{(\w+)}", path))
    query = {name: value for name, value in values.items() if name not in in_path}
    return path.format(**values) + ("?" + urlencode(query) if query else "")


def hold(client, execution, **event):
    event = {"taskToken": f"token-{execution}", "stateMachineArn": ORDERS, "executionArn": execution, **event}
    assert client.lambda_.invoke("pauser", event).payload["status"] == "maintenance"


def let_through(client, execution, **event):
    event = {"taskToken": f"token-{execution}", "stateMachineArn": ORDERS, "executionArn": execution, **event}
    assert client.lambda_.invoke("pauser", event).payload["status"] == "proceeding"


def test_real_answers_of_every_route_fit_the_documented_schemas(plain, client):
    api = Api(client)
    until = "2099-01-01T00:00:00Z"

    assert api.post("/maintenance", {"stateMachineArn": ORDERS, "enabled": True, "dryRun": True})["dryRun"]
    assert api.post("/maintenance", {"stateMachineArn": ORDERS, "enabled": True, "reason": "r", "until": until})
    hold(client, "run-1")
    hold(client, "run-2")
    assert api.get("/maintenance", stateMachineArn=ORDERS)["paused"] == 2
    assert api.get("/maintenance")["stateMachines"]
    assert len(api.get("/maintenance/paused", stateMachineArn=ORDERS, limit="1")["paused"]) == 1
    assert api.post("/resume", {"stateMachineArn": ORDERS})["Code"] == "MaintenanceIsOn"
    with counting_sends():
        assert api.post("/resume", {"stateMachineArn": ORDERS, "executionArns": ["run-1"], "force": True})["resumed"]
        assert api.post("/abort", {"stateMachineArn": ORDERS, "all": True, "error": "E", "cause": "c"})["aborted"]
        hold(client, "run-3")
        assert api.post("/maintenance", {"stateMachineArn": ORDERS, "enabled": False})["resumed"] == 1
    bulk = api.post("/maintenance", {"stateMachineArns": [ORDERS, ORDERS + "Gone"], "enabled": False, "resume": False})
    assert [("error" in result) for result in bulk["results"]] == [False, True]
    with counting_sends():
        take_see_renew_and_release_holds(api, client)
    trail = api.get("/audit", stateMachineArn=ORDERS, limit="10")["events"]
    assert {event["action"] for event in trail} == {"maintenance-on", "maintenance-off", "resume", "abort"}
    # The errors, from each route.
    assert api.post("/maintenance", {"stateMachineArn": ORDERS})["Code"] == "MissingField"
    assert api.post(
        "/maintenance", {"stateMachineArn": ORDERS, "enabled": True}, headers={"Content-Type": "text/plain"}
    )
    assert (
        api.post("/maintenance", {"stateMachineArn": ORDERS + "Gone", "enabled": True})["Code"]
        == "StateMachineNotFound"
    )
    assert api.post("/maintenance", {"stateMachineArn": ORDERS.replace("Orders", "Quick"), "enabled": True})
    assert api.get("/maintenance", limit="0")["Code"] == "InvalidField"
    assert api.get("/maintenance", stateMachineArn=ORDERS + "Gone")["Code"] == "StateMachineNotFound"
    assert api.get("/maintenance/paused")["Code"] == "MissingField"
    assert api.get("/maintenance/paused", stateMachineArn=ORDERS + "Gone")["Code"] == "StateMachineNotFound"
    assert api.post("/resume", {"stateMachineArn": ORDERS, "limit": 0})["Code"] == "InvalidField"
    assert api.post("/resume", {"stateMachineArn": ORDERS + "Gone"})["Code"] == "StateMachineNotFound"
    assert api.post("/abort", {"stateMachineArn": ORDERS})["Code"] == "MissingField"
    assert api.post("/abort", {"stateMachineArn": ORDERS + "Gone", "all": True})["Code"] == "StateMachineNotFound"
    assert api.get("/audit", stateMachineArn="Orders")["Code"] == "InvalidArn"
    assert api.get("/audit", stateMachineArn=ORDERS + "Gone")["Code"] == "StateMachineNotFound"
    assert api.post("/holds", {"reason": "no scope"})["Code"] == "MissingField"
    assert api.post("/holds", {"stateMachineArns": [ORDERS + "Gone"]})["Code"] == "StateMachineNotFound"
    assert api.get("/holds", maxResults="0")["Code"] == "InvalidField"
    assert api.get("/holds/{hold_id}", hold_id="hold-1")["Code"] == "InvalidField"
    assert (
        api.post("/holds/{hold_id}/renew", {"ttlSeconds": 0}, hold_id="hold-0123456789abcdef")["Code"] == "InvalidField"
    )
    assert api.delete("/holds/{hold_id}", hold_id="hold-1")["Code"] == "InvalidField"

    for path, method, operation in operations():
        # Each answer that a valid, a malformed and a missing thing get, where the operation has it.
        exercised = {int(status) for status in operation["responses"]} & {200, 201, 400, 404}
        assert {(path, method, status) for status in exercised} <= api.seen, f"{method} {path}"


def take_see_renew_and_release_holds(api, client):
    """Every hold route, and the answers of the other routes while holds are in play (maintenance is off)."""
    # Someone inside a protected section; then a hold on the machine, one on a dependency its
    # checkpoints guard (so the execution held next is held by both), and a recurring one, not yet started.
    let_through(client, "run-9", section="payments")
    on_orders = api.post("/holds", {"stateMachineArns": [ORDERS], "reason": "deploy 42", "ttlSeconds": 600})
    on_db = api.post("/holds", {"guards": ["orders-db"]})
    starts = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    window = {"schedule": WEEKLY, "durationSeconds": 3600}
    weekly = api.post("/holds", {"stateMachineArns": [ORDERS[:-3] + "*"], "startsAt": starts, "recurrence": window})
    hold(client, "run-4", guards=["orders-db"])
    assert (on_orders["affected"], on_orders["active"], weekly["active"]) == ([ORDERS], True, False)
    both = sorted([on_orders["holdId"], on_db["holdId"]])

    status = api.get("/maintenance", stateMachineArn=ORDERS)
    assert (status["heldBy"], len(status["holds"]), status["inside"], status["drained"]) == (both, 3, 1, False)
    [orders] = api.get("/maintenance")["stateMachines"]
    assert orders["holds"] == [on_orders["holdId"]]
    first = api.get("/holds", maxResults="2")
    assert len(first["holds"] + api.get("/holds", nextToken=first["nextToken"])["holds"]) == 3
    assert [each["holdId"] for each in api.get("/holds", guard="orders-db")["holds"]] == [on_db["holdId"]]
    assert len(api.get("/holds", stateMachineArn=ORDERS)["holds"]) == 3
    detail = api.get("/holds/{hold_id}", hold_id=on_orders["holdId"])
    assert (detail["inside"], detail["drained"], detail["insideExecutions"][0]["executionArn"]) == (1, False, "run-9")
    renewed = api.post("/holds/{hold_id}/renew", {"ttlSeconds": 1200}, hold_id=on_orders["holdId"])
    assert renewed["expiresAt"] > on_orders["expiresAt"]
    assert api.post("/holds/{hold_id}/renew", hold_id=weekly["holdId"])["nextOpening"]  # no body: the defaults

    # Switching off leaves what the holds cover held; releasing the machine's hold leaves the dependency's.
    assert api.post("/resume", {"stateMachineArn": ORDERS})["Code"] == "MaintenanceIsOn"
    off = api.post("/maintenance", {"stateMachineArn": ORDERS, "enabled": False})
    assert (off["maintenance"], off["held"], off["stillHeldBy"]) == (True, 1, both)
    released = api.delete("/holds/{hold_id}", hold_id=on_orders["holdId"])
    assert released["stillHeld"] == [{"stateMachineArn": ORDERS, "heldBy": [on_db["holdId"]]}]
    assert api.post("/resume", {"stateMachineArn": ORDERS})["held"] == 1

    # Forcing maintenance off ends the dependency's hold, and what it held resumes.
    dry = api.post("/maintenance", {"stateMachineArn": ORDERS, "enabled": False, "force": True, "dryRun": True})
    assert dry["endedHolds"] == [on_db["holdId"]]
    forced = api.post("/maintenance", {"stateMachineArn": ORDERS, "enabled": False, "force": True})
    assert (forced["endedHolds"], forced["resumed"]) == ([on_db["holdId"]], 1)
    assert api.delete("/holds/{hold_id}", hold_id=on_db["holdId"])["released"] is False
    assert api.get("/holds/{hold_id}", hold_id=on_db["holdId"])["Code"] == "HoldNotFound"
    # An ended hold's history: every action recorded for the holds, in one page and in pages of one.
    history = api.get("/holds/{hold_id}/audit", hold_id=on_orders["holdId"])
    assert [event["action"] for event in history["events"]] == ["released", "renew", "hold"]
    assert history["events"][-1]["hold"]["reason"] == "deploy 42"
    forced_off = api.get("/holds/{hold_id}/audit", hold_id=on_db["holdId"], limit="1")
    assert forced_off["events"][0]["stateMachineArns"] == [ORDERS]
    assert api.get("/holds/{hold_id}/audit", hold_id=on_db["holdId"], nextToken=forced_off["nextToken"])["events"]
    assert api.get("/holds/{hold_id}/audit", hold_id="hold-0123456789abcdef")["Code"] == "HoldNotFound"
    assert api.get("/holds/{hold_id}/audit", hold_id="hold-1")["Code"] == "InvalidField"
    assert api.post("/holds/{hold_id}/renew", {}, hold_id=on_db["holdId"])["Code"] == "HoldNotFound"
    assert api.delete("/holds/{hold_id}", hold_id=weekly["holdId"])["released"] is True


def test_a_real_aws_outage_answer_fits_the_documented_schema(plain, client, monkeypatch):
    def unavailable(self, arn):
        raise JsonRESTError("ServiceException", "Step Functions is having a bad day")

    monkeypatch.setattr(StepFunctionBackend, "list_tags_for_resource", unavailable)

    assert Api(client).get("/maintenance", stateMachineArn=ORDERS)["Code"] == "AwsUnavailable"


@pytest.mark.stage_env(AllowedStateMachines=f"arn:aws:states:*:{ACCOUNT}:stateMachine:Billing")
def test_real_refusals_outside_the_allow_list_fit_the_documented_schema(plain, client):
    api = Api(client)

    api.post("/maintenance", {"stateMachineArn": ORDERS, "enabled": True})
    bulk = api.post("/maintenance", {"stateMachineArns": [ORDERS], "enabled": True})
    api.get("/maintenance", stateMachineArn=ORDERS)
    api.get("/maintenance/paused", stateMachineArn=ORDERS)
    api.post("/resume", {"stateMachineArn": ORDERS})
    api.post("/abort", {"stateMachineArn": ORDERS, "all": True})
    api.get("/audit", stateMachineArn=ORDERS)
    api.post("/holds", {"stateMachineArns": [ORDERS]})
    api.get("/holds", stateMachineArn=ORDERS)  # a filter: no hold covers it

    assert bulk["results"][0]["error"]["Status"] == 403
    assert {status for _, _, status in api.seen} == {200, 403}
    naming_a_machine = {(path, method) for path, method, _ in operations() if names_a_machine(path, method)}
    assert {(path, method) for path, method, _ in api.seen} == naming_a_machine


def names_a_machine(path, method):
    """Whether the operation takes a state machine, in its query string or its body."""
    names = {parameter["name"] for parameter in query_parameters(path, method)}
    if (path, method) in BODY_PARSERS:
        names |= set(request_schema(path, method)["properties"])
    return bool(names & {"stateMachineArn", "stateMachineArns"})


def test_a_release_that_leaves_another_accounts_machines_to_their_sweep_fits_the_documented_schema(
    plain, client, monkeypatch
):
    # Deployed, the function's own ARN names its account; the test client's names none.
    monkeypatch.setattr(chalice_app, "_home", lambda: AccountRegion("aws", REGION, ACCOUNT))
    theirs = ORDERS.replace(ACCOUNT, "210987654321")
    chalice_app.get_services().store.register_guard("orders-db", parse_state_machine_arn(theirs))
    api = Api(client)
    taken = api.post("/holds", {"guards": ["orders-db"]})

    released = api.delete("/holds/{hold_id}", hold_id=taken["holdId"])

    assert (taken["affected"], released["otherAccounts"], released["resumed"]) == ([theirs], [theirs], {})


# -- requests generated from the document (schemathesis)


def unsigned(document):
    """The document without its SigV4 requirement: API Gateway enforces it, the app never
    sees it (test_every_operation_is_signed_... checks the deployed definition instead)."""
    document = copy.deepcopy(document)
    document.pop("security")
    for _, _, operation in operations_of(document):
        operation.pop("security")
    return document


FUZZED = schemathesis.openapi.from_dict(
    strict(unsigned(DOC)),
    config=SchemathesisConfig.from_dict(
        {
            "base-url": "http://localhost",
            "generation": {"mode": "all", "max-examples": 40, "deterministic": True},
            # Valid by the schema yet refused by design: a region this botocore does not
            # know, an `until` already past. Unknown methods are API Gateway's to answer.
            "checks": {"positive_data_acceptance": {"enabled": False}},
            "phases": {"coverage": {"unexpected-methods": []}},
        }
    ),
)


def as_wsgi(client):
    """The app behind API Gateway, as a WSGI application over Chalice's test client."""

    def application(environ, start_response):
        query = environ.get("QUERY_STRING")
        # The path as sent, still percent-encoded: PATH_INFO is decoded, and an escaped # or /
        # in a path parameter would then end or split the path. API Gateway matches the encoded
        # path and decodes the parameter; the test client keeps it encoded, which changes no
        # answer (a valid hold id is letters, digits and dashes, never encoded).
        path = environ.get("RAW_URI", environ["PATH_INFO"]).split("?", 1)[0]
        headers = {name[5:].replace("_", "-").lower(): value for name, value in environ.items() if name[:5] == "HTTP_"}
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        response = client.http.request(
            environ["REQUEST_METHOD"],
            path + (f"?{query}" if query else ""),
            headers=headers,
            body=environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)),
        )
        # API Gateway's Lambda proxy integration answers application/json when the
        # function names no content type, as Chalice does for its JSON bodies.
        sent = {"Content-Type": "application/json", **response.headers}
        start_response(f"{response.status_code} {HTTPStatus(response.status_code).phrase}", list(sent.items()))
        return [response.body]

    return application


@FUZZED.parametrize()
@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_generated_requests_get_documented_answers_and_never_a_server_error(case, plain, client):
    case.call_and_validate(app=as_wsgi(client))

"""Reading JSON objects field by field, with errors whose type names the problem and message the field."""

import pytest

from chalicelib.errors import InvalidField, InvalidInput, MissingField, UnknownField
from chalicelib.fields import Fields


@pytest.mark.parametrize(
    ("body", "described"),
    [
        (None, "null"),
        ([], "an array"),
        (["stateMachineArn"], "an array"),
        ("{}", "a string"),
        (7, "a number"),
        (1.5, "a number"),
        (True, "a boolean"),
    ],
)
def test_a_body_that_is_not_an_object_is_refused_naming_what_it_is(body, described):
    with pytest.raises(InvalidField) as raised:
        Fields(body, what="event")

    assert raised.value.field == "event"
    assert str(raised.value) == f"event: expected a JSON object, got {described}"


def test_the_body_is_called_body_unless_told_otherwise():
    with pytest.raises(InvalidField) as raised:
        Fields([])

    assert str(raised.value).startswith("body:")


def test_unknown_fields_are_all_named_so_a_typo_is_not_silently_ignored():
    fields = Fields({"stateMachineArn": "x", "enable": True, "Force": True})

    with pytest.raises(UnknownField) as raised:
        fields.reject_unknown(["stateMachineArn", "enabled", "force"])

    message = str(raised.value)
    assert message.startswith("Force, enable:")
    assert "enabled, force, stateMachineArn" in message  # what was expected instead


def test_known_fields_pass():
    Fields({"a": 1}).reject_unknown(["a", "b"])


@pytest.mark.parametrize("body", [{}, {"name": None}], ids=["absent", "null"])
def test_a_required_string_that_is_absent_or_null_is_missing(body):
    with pytest.raises(MissingField) as raised:
        Fields(body).string("name")

    assert str(raised.value).startswith("name: is required")


@pytest.mark.parametrize(
    ("value", "described"),
    [(1, "a number"), (True, "a boolean"), ([], "an array"), ({}, "an object")],
)
def test_a_string_of_another_type_is_invalid_and_says_what_it_got(value, described):
    with pytest.raises(InvalidField) as raised:
        Fields({"name": value}).string("name")

    assert str(raised.value) == f"name: expected a string, got {described}"


@pytest.mark.parametrize("value", ["", "   ", "\n\t"])
def test_a_required_string_must_not_be_blank(value):
    with pytest.raises(InvalidField) as raised:
        Fields({"name": value}).string("name")

    assert str(raised.value).startswith("name:")


def test_a_string_is_returned_as_given():
    assert Fields({"name": " padded "}).string("name") == " padded "


def test_an_optional_string_may_be_absent_or_null():
    assert Fields({}).string("name", required=False) is None
    assert Fields({"name": None}).string("name", required=False) is None


def test_an_optional_string_must_still_be_a_string():
    with pytest.raises(InvalidField):
        Fields({"name": 3}).string("name", required=False)


def test_a_string_may_be_exactly_as_long_as_allowed_but_no_longer():
    assert Fields({"reason": "x" * 10}).string("reason", max_length=10) == "x" * 10

    with pytest.raises(InvalidField) as raised:
        Fields({"reason": "x" * 11}).string("reason", max_length=10)

    assert str(raised.value) == "reason: expected at most 10 characters, got 11"


@pytest.mark.parametrize("value", [True, False])
def test_reads_booleans(value):
    assert Fields({"enabled": value}).boolean("enabled") is value


@pytest.mark.parametrize("value", ["true", "false", "yes", 1, 0, [], {}], ids=repr)
def test_a_boolean_must_be_true_or_false_not_a_look_alike(value):
    with pytest.raises(InvalidField) as raised:
        Fields({"enabled": value}).boolean("enabled")

    assert str(raised.value).startswith("enabled: expected true or false")


@pytest.mark.parametrize("body", [{}, {"enabled": None}], ids=["absent", "null"])
def test_a_required_boolean_that_is_absent_or_null_is_missing(body):
    with pytest.raises(MissingField) as raised:
        Fields(body).boolean("enabled")

    assert str(raised.value) == "enabled: is required (true or false)"


def test_an_optional_boolean_falls_back_to_its_default():
    assert Fields({}).boolean("resume", default=True) is True
    assert Fields({}).boolean("force", default=False) is False
    assert Fields({"resume": False}).boolean("resume", default=True) is False


def test_has_and_raw_see_a_field_even_when_it_is_null_or_falsy():
    fields = Fields({"input": None, "zero": 0})

    assert fields.has("input") and fields.raw("input") is None
    assert fields.has("zero") and fields.raw("zero") == 0
    assert not fields.has("absent")


def test_every_field_error_is_a_bad_request_carrying_the_field():
    # InvalidInput derives from Chalice's BadRequestError: the API answers 400.
    for error in (MissingField("f", "a string"), InvalidField("f", "bad"), UnknownField(["f"], ["g"])):
        assert isinstance(error, InvalidInput)
        assert error.STATUS_CODE == 400
        assert error.field == "f"

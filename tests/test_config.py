"""Configuration: the Prefix layout, and errors that name the environment variable at fault."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.config import (
    DEFAULT_MAINTENANCE_CACHE_SECONDS,
    DEFAULT_RESUME_CONCURRENCY,
    Settings,
    normalise_prefix,
)
from chalicelib.errors import ConfigurationError


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("", ""),
        ("/", ""),
        ("//", ""),
        ("tokens", "tokens/"),
        ("tokens/", "tokens/"),
        ("/tokens", "tokens/"),
        ("/tokens/", "tokens/"),
        ("tokens//", "tokens/"),
        ("a//b/", "a/b/"),
        ("a/b", "a/b/"),
        ("//a///b//", "a/b/"),
    ],
)
def test_a_prefix_gives_keys_with_no_leading_or_doubled_slash(prefix, expected):
    assert normalise_prefix(prefix) == expected
    # What the store builds from it: the seed's `Name/...` or `tokens/Name/...`.
    key = f"{normalise_prefix(prefix)}Orders/0190c3c0-0000-7000-8000-000000000000.json"
    assert not key.startswith("/")
    assert "//" not in key


@given(st.text(alphabet="ab/", max_size=20))
def test_normalising_is_idempotent_and_never_leaves_a_stray_slash(prefix):
    normalised = normalise_prefix(prefix)

    assert normalise_prefix(normalised) == normalised
    assert not normalised.startswith("/")
    assert "//" not in normalised
    assert normalised == "" or normalised.endswith("/")


def test_only_the_bucket_is_required_and_the_rest_has_defaults():
    settings = Settings.from_env({"Bucket": "my-tokens"})

    assert settings == Settings(
        bucket="my-tokens",
        prefix="",
        maintenance_cache_seconds=DEFAULT_MAINTENANCE_CACHE_SECONDS,
        resume_concurrency=DEFAULT_RESUME_CONCURRENCY,
        log_level="INFO",
    )


def test_reads_every_variable():
    settings = Settings.from_env(
        {
            "Bucket": " my-tokens ",
            "Prefix": "/tokens",
            "MaintenanceCacheSeconds": "2.5",
            "ResumeConcurrency": "4",
            "LogLevel": "debug",
        }
    )

    assert settings == Settings(
        bucket="my-tokens",
        prefix="tokens/",
        maintenance_cache_seconds=2.5,
        resume_concurrency=4,
        log_level="DEBUG",
    )


def test_a_cache_of_zero_seconds_is_allowed_so_the_tag_is_read_every_time():
    # 0 is the seed's behaviour, documented in the contract: not an error.
    assert Settings.from_env({"Bucket": "b", "MaintenanceCacheSeconds": "0"}).maintenance_cache_seconds == 0


def test_empty_variables_mean_the_default():
    # A template that sets a variable to "" should behave as if it were unset.
    settings = Settings.from_env(
        {"Bucket": "b", "MaintenanceCacheSeconds": "", "ResumeConcurrency": " ", "LogLevel": ""}
    )

    assert settings.maintenance_cache_seconds == DEFAULT_MAINTENANCE_CACHE_SECONDS
    assert settings.resume_concurrency == DEFAULT_RESUME_CONCURRENCY
    assert settings.log_level == "INFO"


def test_settings_are_hashable_so_each_configuration_gets_one_object_graph():
    # app.get_services() keys its cache on Settings.
    assert hash(Settings.from_env({"Bucket": "b"})) == hash(Settings.from_env({"Bucket": "b"}))


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "Bucket"),
        ({"Bucket": ""}, "Bucket"),
        ({"Bucket": "   "}, "Bucket"),
        ({"Bucket": "b", "MaintenanceCacheSeconds": "ten"}, "MaintenanceCacheSeconds"),
        ({"Bucket": "b", "MaintenanceCacheSeconds": "10s"}, "MaintenanceCacheSeconds"),
        ({"Bucket": "b", "MaintenanceCacheSeconds": "-1"}, "MaintenanceCacheSeconds"),
        ({"Bucket": "b", "MaintenanceCacheSeconds": "-0.5"}, "MaintenanceCacheSeconds"),
        # NaN passes `value < 0`; the cache then silently never hits. Not a number: an error.
        ({"Bucket": "b", "MaintenanceCacheSeconds": "nan"}, "MaintenanceCacheSeconds"),
        # An infinite cache would never see an operator's `tag-resource` again.
        ({"Bucket": "b", "MaintenanceCacheSeconds": "inf"}, "MaintenanceCacheSeconds"),
        ({"Bucket": "b", "ResumeConcurrency": "0"}, "ResumeConcurrency"),
        ({"Bucket": "b", "ResumeConcurrency": "-4"}, "ResumeConcurrency"),
        ({"Bucket": "b", "ResumeConcurrency": "1.5"}, "ResumeConcurrency"),
        ({"Bucket": "b", "ResumeConcurrency": "many"}, "ResumeConcurrency"),
        ({"Bucket": "b", "LogLevel": "verbose"}, "LogLevel"),
        ({"Bucket": "b", "LogLevel": "WARN"}, "LogLevel"),
        ({"Bucket": "b", "LogLevel": "10"}, "LogLevel"),
    ],
    ids=[
        "bucket-missing",
        "bucket-empty",
        "bucket-blank",
        "cache-not-a-number",
        "cache-with-unit",
        "cache-negative",
        "cache-negative-fraction",
        "cache-nan",
        "cache-infinite",
        "concurrency-zero",
        "concurrency-negative",
        "concurrency-fraction",
        "concurrency-not-a-number",
        "log-level-unknown",
        "log-level-abbreviated",
        "log-level-numeric",
    ],
)
def test_a_bad_variable_is_an_error_that_names_it(env, variable):
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env(env)

    assert str(raised.value).startswith(f"{variable}:")


def test_the_error_quotes_the_bad_value_so_the_operator_can_find_it():
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env({"Bucket": "b", "ResumeConcurrency": "sixteen"})

    assert "'sixteen'" in str(raised.value)


def test_reads_the_process_environment_by_default(monkeypatch):
    monkeypatch.setenv("Bucket", "from-the-environment")
    monkeypatch.setenv("Prefix", "held")

    settings = Settings.from_env()

    assert (settings.bucket, settings.prefix) == ("from-the-environment", "held/")

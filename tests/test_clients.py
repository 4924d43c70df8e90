"""The clients' own timestamp parser gives what botocore's would, for every form AWS answers in."""

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import boto3
import botocore.utils
from hypothesis import given
from hypothesis import strategies as st
from moto import mock_aws

from chalicelib.clients import AwsClients, parse_timestamp

MOMENTS = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9998, 12, 31), timezones=st.just(UTC)).map(
    lambda moment: moment.replace(microsecond=moment.microsecond // 1000 * 1000)
)


@given(MOMENTS)
def test_an_iso_timestamp_as_s3_lists_it_parses_as_botocore_parses_it(moment: datetime) -> None:
    text = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    assert parse_timestamp(text) == botocore.utils.parse_timestamp(text) == moment


@given(MOMENTS)
def test_an_http_date_as_s3_heads_it_parses_as_botocore_parses_it(moment: datetime) -> None:
    text = format_datetime(moment.replace(microsecond=0), usegmt=True)
    assert parse_timestamp(text) == botocore.utils.parse_timestamp(text) == moment.replace(microsecond=0)


@given(st.floats(min_value=0, max_value=253_402_000_000, allow_nan=False))
def test_epoch_seconds_from_the_json_services_go_to_botocore(seconds: float) -> None:
    assert parse_timestamp(seconds) == botocore.utils.parse_timestamp(seconds)


def test_other_forms_go_to_botocore() -> None:
    for text in ("2026-12-03T10:00:00+09:00", "Thu, 03 Dec 2026 10:00:00 -0000", "1764756000", "2026-12-03 10:00"):
        assert parse_timestamp(text) == botocore.utils.parse_timestamp(text), text
    assert parse_timestamp("2026-12-03T10:00:00+09:00").utcoffset() == timedelta(hours=9)
    assert parse_timestamp("2026-12-03T10:00:00+09:00").tzinfo is not None


@mock_aws
def test_the_product_s_clients_parse_s3_s_timestamps_with_it() -> None:
    # The product's clients answer the same aware UTC times as a plain boto3 client,
    # for a listing (XML body) and a GetObject (HTTP header) alike.
    plain = boto3.client("s3", region_name="us-east-1")
    plain.create_bucket(Bucket="bench-bucket")
    plain.put_object(Bucket="bench-bucket", Key="k", Body=b"{}")
    ours = AwsClients().s3()
    listed = ours.list_objects_v2(Bucket="bench-bucket")["Contents"][0]["LastModified"]
    got = ours.get_object(Bucket="bench-bucket", Key="k")["LastModified"]
    assert listed == plain.list_objects_v2(Bucket="bench-bucket")["Contents"][0]["LastModified"]
    assert got == plain.get_object(Bucket="bench-bucket", Key="k")["LastModified"]
    assert listed.utcoffset() == got.utcoffset() == timedelta(0)
    # The parser is ours (stdlib's UTC), not dateutil's tzutc: the test would pass vacuously otherwise.
    assert got.tzinfo is UTC

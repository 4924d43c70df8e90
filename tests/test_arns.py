"""State machine ARNs: what the pauser accepts, and the unqualified ARN that carries the tags."""

import pytest
from botocore.loaders import create_loader
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.arns import StateMachineArn, known_regions, parse_state_machine_arn
from chalicelib.errors import InvalidArn, InvalidInput

PLAIN = "arn:aws:states:us-east-1:123456789012:stateMachine:Orders"


@pytest.mark.parametrize(
    ("arn", "qualifier"),
    [
        (PLAIN, None),
        (PLAIN + ":3", "3"),  # a published version
        (PLAIN + ":PROD", "PROD"),  # an alias
        (PLAIN + ":blue_green-2", "blue_green-2"),
    ],
    ids=["plain", "version", "alias", "alias-with-dash-and-underscore"],
)
def test_versions_and_aliases_belong_to_the_unqualified_state_machine(arn, qualifier):
    parsed = parse_state_machine_arn(arn)

    # The Maintenance tag and the token folder are the machine's, whichever ARN started it.
    assert parsed.unqualified == PLAIN
    assert parsed.name == "Orders"
    assert parsed.qualifier == qualifier


def test_keeps_every_part_of_the_arn():
    parsed = parse_state_machine_arn("arn:aws:states:eu-west-1:210987654321:stateMachine:Billing:7")

    assert parsed == StateMachineArn(
        partition="aws", region="eu-west-1", account="210987654321", name="Billing", qualifier="7"
    )


@pytest.mark.parametrize(
    "arn",
    [
        "arn:aws-cn:states:cn-north-1:123456789012:stateMachine:Orders",
        "arn:aws-us-gov:states:us-gov-west-1:123456789012:stateMachine:Orders",
        "arn:aws-us-gov:states:us-gov-east-1:123456789012:stateMachine:Orders:PROD",
    ],
)
def test_accepts_the_china_and_govcloud_partitions(arn):
    parsed = parse_state_machine_arn(arn)

    assert str(parsed) == arn
    assert parsed.partition in ("aws-cn", "aws-us-gov")


@pytest.mark.parametrize(
    "arn",
    [
        "arn:aws:lambda:us-east-1:123456789012:function:Orders",
        "arn:aws:states:us-east-1:123456789012:execution:Orders:run-1",
        "arn:aws:states:us-east-1:123456789012:express:Orders:run-1:run-1",
        "arn:aws:states:us-east-1:123456789012:activity:Orders",
        "arn:aws:states:us-east-1:123456789012:mapRun:Orders/m:1",
        "arn:aws:s3:::bucket/stateMachine:Orders",
    ],
    ids=["lambda-function", "execution", "express-execution", "activity", "map-run", "s3-object"],
)
def test_rejects_arns_of_other_services_and_other_states_resources(arn):
    with pytest.raises(InvalidArn):
        parse_state_machine_arn(arn)


@pytest.mark.parametrize(
    "arn",
    [
        "",
        "Orders",
        "stateMachine:Orders",
        "arn:aws:states:us-east-1:123456789012:stateMachine:",
        "arn:aws:states:us-east-1:123456789012:stateMachine:Orders:",
        "arn:aws:states:us-east-1:123456789012:stateMachine:Orders:3:4",
        "arn:aws:states:us-east-1:12345678901:stateMachine:Orders",
        "arn:aws:states:us-east-1:1234567890123:stateMachine:Orders",
        "arn:aws:states:us-east-1:12345678901x:stateMachine:Orders",
        "arn:aws:states::123456789012:stateMachine:Orders",
        "arn:aws:states:US-EAST-1:123456789012:stateMachine:Orders",
        "arn:aws:states:useast1:123456789012:stateMachine:Orders",
        "arn::states:us-east-1:123456789012:stateMachine:Orders",
        "arn:azure:states:us-east-1:123456789012:stateMachine:Orders",
        "ARN:aws:states:us-east-1:123456789012:stateMachine:Orders",
        "arn:aws:states:us-east-1:123456789012:statemachine:Orders",
        " " + PLAIN,
        PLAIN + " ",
        PLAIN + "\n",
        PLAIN + ":PR.OD",
        PLAIN + ":" + "v" * 129,
        "arn:aws:states:us-east-1:123456789012:stateMachine:" + "N" * 81,
    ],
    ids=[
        "empty",
        "bare-name",
        "no-arn-prefix",
        "no-name",
        "empty-qualifier",
        "two-qualifiers",
        "short-account",
        "long-account",
        "non-digit-account",
        "no-region",
        "upper-case-region",
        "region-without-dashes",
        "no-partition",
        "unknown-partition",
        "upper-case-arn",
        "lower-case-resource-type",
        "leading-space",
        "trailing-space",
        "trailing-newline",
        "qualifier-with-dot",
        "qualifier-too-long",
        "name-too-long",
    ],
)
def test_rejects_malformed_arns(arn):
    with pytest.raises(InvalidArn):
        parse_state_machine_arn(arn)


@pytest.mark.parametrize(
    "arn",
    [
        # Account ids are twelve ASCII digits; Python's \d also matches other scripts'
        # digits, which AWS would refuse (a 500 at the API instead of a 400).
        "arn:aws:states:us-east-1:١٢٣٤٥٦٧٨٩٠١٢:stateMachine:Orders",
        "arn:aws:states:us-east-١:123456789012:stateMachine:Orders",
    ],
    ids=["arabic-indic-account", "arabic-indic-region-number"],
)
def test_rejects_digits_that_are_not_ascii(arn):
    with pytest.raises(InvalidArn):
        parse_state_machine_arn(arn)


# CreateStateMachine's rule: no white space, brackets, wildcards, the special
# characters " # % \ ^ | ~ ` $ & , ; : / and no control characters
# (U+0000-001F, U+007F-009F, U+FFFE-FFFF). The name is also an S3 key segment, so a
# forbidden character must never get as far as the store.
@pytest.mark.parametrize(
    "name",
    [
        "Ord ers", "Ord\ters", "Ord\u00a0ers", "Ord<ers", "Ord>ers", "Ord{ers", "Ord}ers",
        "Ord[ers", "Ord]ers", "Ord?ers", "Ord*ers", 'Ord"ers', "Ord#ers", "Ord%ers",
        "Ord\\ers", "Ord^ers", "Ord|ers", "Ord~ers", "Ord`ers", "Ord$ers", "Ord&ers",
        "Ord,ers", "Ord;ers", "Ord/ers", "../Orders",
    ],
)  # fmt: skip
def test_rejects_names_with_characters_aws_forbids(name):
    with pytest.raises(InvalidArn):
        parse_state_machine_arn(f"arn:aws:states:us-east-1:123456789012:stateMachine:{name}")


@pytest.mark.parametrize(
    "name",
    ["Ord\x00ers", "Ord\x07ers", "Ord\x1bers", "Ord\x7fers", "Ord\x80ers", "Ord\x9fers", "Ord\uffffers"],
    ids=["nul", "bell", "escape", "delete", "c1-first", "c1-last", "non-character"],
)
def test_rejects_names_with_control_characters(name):
    with pytest.raises(InvalidArn):
        parse_state_machine_arn(f"arn:aws:states:us-east-1:123456789012:stateMachine:{name}")


@pytest.mark.parametrize("name", ["Orders", "orders-2024_v2", "a", "N" * 80, "Bestellungen-Ü", "注文", "x.y"])
def test_accepts_names_aws_allows(name):
    assert parse_state_machine_arn(f"arn:aws:states:us-east-1:123456789012:stateMachine:{name}").name == name


@pytest.mark.parametrize("value", [None, 42, 4.2, True, ["arn"], {"arn": PLAIN}, b"arn:aws:states"])
def test_rejects_values_that_are_not_strings(value):
    with pytest.raises(InvalidArn) as raised:
        parse_state_machine_arn(value)

    assert str(raised.value).startswith("stateMachineArn:")


def test_the_error_names_the_field_it_was_given_and_is_a_bad_request():
    with pytest.raises(InvalidArn) as raised:
        parse_state_machine_arn("nope", field="target")

    assert raised.value.field == "target"
    assert str(raised.value).startswith("target:")
    # InvalidArn is a Chalice BadRequestError, so the API answers 400, not 500.
    assert isinstance(raised.value, InvalidInput)
    assert raised.value.STATUS_CODE == 400


def test_a_very_long_value_is_shortened_in_the_message():
    with pytest.raises(InvalidArn) as raised:
        parse_state_machine_arn("x" * 100_000)

    assert len(str(raised.value)) < 500


# A valid ARN, generated from the rules above, parses and prints back unchanged.
_FORBIDDEN = set(' <>{}[]?*"#%\\^|~`$&,;:/')
names = st.text(
    alphabet=st.characters(
        # Cc: control characters; Z*: white space; Cs: surrogates; Cn: unassigned/non-characters.
        exclude_categories=("Cc", "Cs", "Cn", "Zs", "Zl", "Zp"),
        exclude_characters=_FORBIDDEN,
    ),
    min_size=1,
    max_size=80,
).filter(lambda name: not any(character.isspace() for character in name))
partitions_and_regions = st.sampled_from(
    [
        ("aws", "us-east-1"),
        ("aws", "eu-west-1"),
        ("aws", "ap-southeast-2"),
        ("aws", "me-central-1"),
        ("aws-cn", "cn-north-1"),
        ("aws-cn", "cn-northwest-1"),
        ("aws-us-gov", "us-gov-west-1"),
    ]
)
accounts = st.text(alphabet="0123456789", min_size=12, max_size=12)
qualifiers = st.none() | st.integers(1, 10**6).map(str) | st.from_regex(r"[A-Za-z0-9_-]{1,128}", fullmatch=True)


@given(partitions_and_regions, accounts, names, qualifiers)
def test_a_valid_arn_round_trips(partition_and_region, account, name, qualifier):
    partition, region = partition_and_region
    unqualified = f"arn:{partition}:states:{region}:{account}:stateMachine:{name}"
    arn = unqualified if qualifier is None else f"{unqualified}:{qualifier}"

    parsed = parse_state_machine_arn(arn)

    assert str(parsed) == arn
    assert parsed.unqualified == unqualified
    assert (parsed.partition, parsed.region, parsed.account, parsed.name) == (
        partition,
        region,
        account,
        name,
    )


@given(st.text(max_size=300))
def test_whatever_the_text_it_parses_or_raises_invalid_arn(text):
    try:
        parsed = parse_state_machine_arn(text)
    except InvalidArn as error:
        assert str(error).startswith("stateMachineArn:")
    else:
        assert str(parsed) == text
        assert "/" not in parsed.name


# -- partitions and regions come from botocore's data (issue 8, item 9)

# Every (partition, region) the installed botocore lists: aws, aws-cn, aws-us-gov, aws-iso*, aws-eusc, ...
BOTOCORE_REGIONS = [
    (partition["id"], region)
    for partition in create_loader().load_data("partitions")["partitions"]
    for region in partition["regions"]
    if not region.endswith("-global")  # endpoint aliases, not regions
]
NAMES_AWS_ALLOWS = ["Orders", "orders+eu", "billing@v2", "retry(1)", "Bestellungen-Süd"]


def test_botocore_knows_the_partitions_the_design_names():
    assert {"aws", "aws-cn", "aws-us-gov", "aws-iso", "aws-iso-b", "aws-eusc"} <= {p for p, _ in BOTOCORE_REGIONS}
    assert ("aws-eusc", "eusc-de-east-1") in BOTOCORE_REGIONS


@pytest.mark.parametrize("name", NAMES_AWS_ALLOWS)
@pytest.mark.parametrize(("partition", "region"), BOTOCORE_REGIONS, ids=[f"{p}/{r}" for p, r in BOTOCORE_REGIONS])
def test_accepts_every_region_of_every_partition_botocore_knows(partition, region, name):
    arn = f"arn:{partition}:states:{region}:123456789012:stateMachine:{name}"

    parsed = parse_state_machine_arn(arn + ":PROD")

    assert (parsed.partition, parsed.region, parsed.name, parsed.unqualified) == (partition, region, name, arn)
    assert region in known_regions(partition)


@pytest.mark.parametrize(
    "arn",
    [
        "arn:aws-cn:states:us-east-1:123456789012:stateMachine:Orders",
        "arn:aws:states:cn-north-1:123456789012:stateMachine:Orders",
        "arn:aws:states:eusc-de-east-1:123456789012:stateMachine:Orders",
        "arn:aws-eusc:states:eu-west-1:123456789012:stateMachine:Orders",
        "arn:aws-us-gov:states:us-iso-east-1:123456789012:stateMachine:Orders",
        "arn:aws-iso:states:us-gov-west-1:123456789012:stateMachine:Orders",
    ],
)
def test_rejects_a_region_of_another_partition(arn):
    with pytest.raises(InvalidArn, match="is not a region of"):
        parse_state_machine_arn(arn)


@pytest.mark.parametrize("partition", ["aws-mars", "aws-eu", "aws-", "aws-iso-z", "Aws"])
def test_rejects_a_partition_botocore_does_not_know(partition):
    with pytest.raises(InvalidArn, match="partition"):
        parse_state_machine_arn(f"arn:{partition}:states:us-east-1:123456789012:stateMachine:Orders")


def test_a_region_of_a_known_shape_parses_but_is_not_a_known_region():
    # The parser takes the partition's pattern, so a region newer than botocore still
    # parses; the API's check then refuses it as unknown, with a 400.
    parsed = parse_state_machine_arn("arn:aws:states:us-east-7:123456789012:stateMachine:Orders")

    assert parsed.region not in known_regions("aws")
    assert known_regions("aws-mars") == frozenset()


# A partition first, then one of its regions: each partition is as likely as aws.
botocore_partitions_and_regions = st.sampled_from(sorted({p for p, _ in BOTOCORE_REGIONS})).flatmap(
    lambda partition: st.tuples(st.just(partition), st.sampled_from([r for p, r in BOTOCORE_REGIONS if p == partition]))
)


@given(botocore_partitions_and_regions, accounts, names, qualifiers)
def test_a_valid_arn_in_any_partition_botocore_knows_round_trips(partition_and_region, account, name, qualifier):
    partition, region = partition_and_region
    unqualified = f"arn:{partition}:states:{region}:{account}:stateMachine:{name}"
    arn = unqualified if qualifier is None else f"{unqualified}:{qualifier}"

    parsed = parse_state_machine_arn(arn)

    assert (str(parsed), parsed.unqualified, parsed.partition, parsed.region) == (arn, unqualified, partition, region)

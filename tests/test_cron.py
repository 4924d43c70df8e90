"""EventBridge cron expressions: the AWS guide's examples, the edges of months and years, a brute-force oracle."""

import calendar
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.cron import Cron, CronError

MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def next_after(expression: str, moment: datetime) -> datetime | None:
    return Cron.parse(expression).next_after(moment)


# 2024-03-15 is a Friday. Expected times are worked out from a calendar, not from the module.
FRIDAY = utc(2024, 3, 15, 9, 30)


@pytest.mark.parametrize(
    ("expression", "moment", "expected"),
    [
        # The examples in the EventBridge user guide.
        ("cron(0 10 * * ? *)", FRIDAY, utc(2024, 3, 15, 10, 0)),
        ("cron(0 10 * * ? *)", utc(2024, 3, 15, 10, 0), utc(2024, 3, 16, 10, 0)),
        ("cron(15 12 * * ? *)", FRIDAY, utc(2024, 3, 15, 12, 15)),
        ("cron(15 12 * * ? *)", utc(2024, 3, 15, 12, 15), utc(2024, 3, 16, 12, 15)),
        ("cron(0 18 ? * MON-FRI *)", FRIDAY, utc(2024, 3, 15, 18, 0)),
        ("cron(0 18 ? * MON-FRI *)", utc(2024, 3, 15, 18, 0), utc(2024, 3, 18, 18, 0)),
        ("cron(0 8 1 * ? *)", FRIDAY, utc(2024, 4, 1, 8, 0)),
        ("cron(0/15 * * * ? *)", FRIDAY, utc(2024, 3, 15, 9, 45)),
        ("cron(0/15 * * * ? *)", utc(2024, 3, 15, 9, 45), utc(2024, 3, 15, 10, 0)),
        ("cron(0/10 * ? * MON-FRI *)", utc(2024, 3, 15, 23, 55), utc(2024, 3, 18, 0, 0)),
        ("cron(0/10 * ? * MON-FRI *)", utc(2024, 3, 18, 0, 0), utc(2024, 3, 18, 0, 10)),
        ("cron(0/5 8-17 ? * MON-FRI *)", utc(2024, 3, 15, 17, 50), utc(2024, 3, 15, 17, 55)),
        ("cron(0/5 8-17 ? * MON-FRI *)", utc(2024, 3, 15, 17, 55), utc(2024, 3, 18, 8, 0)),
        ("cron(0 9 ? * 2#1 *)", FRIDAY, utc(2024, 4, 1, 9, 0)),  # the first Monday of April
        ("cron(0 2 ? * SUN *)", FRIDAY, utc(2024, 3, 17, 2, 0)),
        # Steps from an offset, and within a range.
        ("cron(1/10 * * * ? *)", FRIDAY, utc(2024, 3, 15, 9, 31)),
        ("cron(5-40/5 * * * ? *)", utc(2024, 3, 15, 9, 40), utc(2024, 3, 15, 10, 5)),
        ("cron(*/20 */6 * * ? *)", FRIDAY, utc(2024, 3, 15, 12, 0)),
        ("cron(0 0 1/10 * ? *)", FRIDAY, utc(2024, 3, 21, 0, 0)),
        ("cron(0 0 1 JAN,jul ? *)", FRIDAY, utc(2024, 7, 1, 0, 0)),
        ("cron(0 0 1 */5 ? *)", FRIDAY, utc(2024, 6, 1, 0, 0)),  # months 1, 6, 11
        ("cron(0 0 1 1 ? 2030/5)", FRIDAY, utc(2030, 1, 1, 0, 0)),
        ("cron(0 0 ? * 1,7 *)", FRIDAY, utc(2024, 3, 16, 0, 0)),
        # L in the day-of-month: the last day, leap years included.
        ("cron(0 0 L * ? *)", utc(2024, 2, 10), utc(2024, 2, 29)),
        ("cron(0 0 L * ? *)", utc(2023, 2, 10), utc(2023, 2, 28)),
        ("cron(0 0 L * ? *)", utc(2024, 4, 30), utc(2024, 5, 31)),
        # LW: the last weekday; August 2024 ends on a Saturday, March 2024 on a Sunday.
        ("cron(0 0 LW * ? *)", utc(2024, 8, 1), utc(2024, 8, 30)),
        ("cron(0 0 LW * ? *)", utc(2024, 3, 1), utc(2024, 3, 29)),
        ("cron(0 0 LW * ? *)", utc(2024, 1, 1), utc(2024, 1, 31)),
        # W: the nearest weekday, never leaving the month.
        ("cron(0 0 15W * ? *)", utc(2024, 3, 1), utc(2024, 3, 15)),  # a Friday: itself
        ("cron(0 0 15W * ? *)", utc(2024, 6, 1), utc(2024, 6, 14)),  # a Saturday: the Friday before
        ("cron(0 0 15W * ? *)", utc(2024, 9, 1), utc(2024, 9, 16)),  # a Sunday: the Monday after
        ("cron(0 0 1W * ? *)", utc(2024, 5, 2), utc(2024, 6, 3)),  # Saturday the 1st: Monday the 3rd
        ("cron(0 0 1W * ? *)", utc(2024, 8, 2), utc(2024, 9, 2)),  # Sunday the 1st: Monday the 2nd
        ("cron(0 0 31W * ? *)", utc(2024, 3, 1), utc(2024, 3, 29)),  # Sunday the 31st: Friday the 29th
        ("cron(0 0 30W * ? *)", utc(2024, 6, 1), utc(2024, 6, 28)),  # Sunday the 30th, the last day
        ("cron(0 0 31W * ? *)", utc(2024, 4, 1), utc(2024, 5, 31)),  # April has no 31st
        # L, nL and # in the day-of-week.
        ("cron(0 0 ? * L *)", FRIDAY, utc(2024, 3, 16)),  # L alone is Saturday
        ("cron(0 0 ? * 5L *)", utc(2024, 3, 1), utc(2024, 3, 28)),  # the last Thursday
        ("cron(0 0 ? * 5L *)", utc(2024, 2, 1), utc(2024, 2, 29)),
        ("cron(0 0 ? * THUL *)", utc(2024, 2, 1), utc(2024, 2, 29)),
        ("cron(0 0 ? * 6#3 *)", utc(2024, 3, 1), utc(2024, 3, 15)),  # the third Friday
        ("cron(0 0 ? * FRI#3 *)", utc(2024, 3, 1), utc(2024, 3, 15)),
        ("cron(0 0 ? * 2#5 *)", utc(2024, 2, 1), utc(2024, 4, 29)),  # no fifth Monday in February or March
    ],
)
def test_next_after(expression, moment, expected):
    assert next_after(expression, moment) == expected


def test_next_fire_across_a_month_end():
    assert next_after("cron(30 6 1 * ? *)", utc(2024, 4, 30, 23, 59)) == utc(2024, 5, 1, 6, 30)
    # The 31st skips the months without one.
    assert next_after("cron(0 0 31 * ? *)", utc(2024, 3, 31)) == utc(2024, 5, 31)


def test_next_fire_across_a_year_end():
    assert next_after("cron(0 0 1 1 ? *)", utc(2024, 12, 31, 23, 59)) == utc(2025, 1, 1)
    assert next_after("cron(0 9 ? * MON-FRI *)", utc(2024, 12, 31, 9, 0)) == utc(2025, 1, 1, 9, 0)
    assert Cron.parse("cron(0 0 1 1 ? *)").previous_at_or_before(utc(2024, 12, 31, 23, 59)) == utc(2024, 1, 1)


def test_february_the_29th_only_in_leap_years():
    leap_day = Cron.parse("cron(0 0 29 2 ? *)")

    assert leap_day.next_after(utc(2024, 2, 29)) == utc(2028, 2, 29)
    assert leap_day.next_after(utc(2096, 3, 1)) == utc(2104, 2, 29)  # 2100 is not a leap year
    assert leap_day.previous_at_or_before(utc(2027, 12, 31)) == utc(2024, 2, 29)
    assert leap_day.previous_at_or_before(utc(2104, 2, 28)) == utc(2096, 2, 29)


@pytest.mark.parametrize("expression", ["cron(0 0 31 2 ? *)", "cron(0 0 30 2 ? *)", "cron(0 0 31 APR,JUN,SEP,NOV ? *)"])
def test_a_day_that_never_comes_has_no_fire(expression):
    never = Cron.parse(expression)

    assert never.next_after(utc(1970, 1, 1)) is None
    assert never.previous_at_or_before(utc(2199, 12, 31, 23, 59)) is None


class TestWeeklyWindow:
    """Sunday 02:00 for two hours: the question the caller asks is whether the window is open now."""

    cron = Cron.parse("cron(0 2 ? * SUN *)")
    duration = timedelta(hours=2)
    sunday = utc(2024, 3, 17, 2, 0)

    def is_open(self, now):
        fired = self.cron.previous_at_or_before(now)
        return fired is not None and fired + self.duration > now

    def test_from_saturday_a_minute_before_midnight(self):
        assert self.cron.next_after(utc(2024, 3, 16, 23, 59)) == self.sunday

    def test_from_the_fire_instant_the_next_is_a_week_on(self):
        assert self.cron.next_after(self.sunday) == self.sunday + timedelta(weeks=1)
        # Seconds are ignored: EventBridge fires on whole minutes.
        assert self.cron.next_after(self.sunday.replace(second=30, microsecond=5)) == self.sunday + timedelta(weeks=1)

    def test_from_a_minute_after(self):
        assert self.cron.next_after(self.sunday + MINUTE) == self.sunday + timedelta(weeks=1)

    def test_previous_is_the_fire_itself_at_the_instant(self):
        assert self.cron.previous_at_or_before(self.sunday) == self.sunday
        assert self.cron.previous_at_or_before(self.sunday + MINUTE) == self.sunday
        assert self.cron.previous_at_or_before(self.sunday - MINUTE) == self.sunday - timedelta(weeks=1)

    def test_the_window_is_open_for_its_duration(self):
        assert not self.is_open(self.sunday - MINUTE)
        assert self.is_open(self.sunday)
        assert self.is_open(self.sunday + self.duration - MINUTE)
        assert not self.is_open(self.sunday + self.duration)


def test_matches_at_minute_resolution():
    weekdays = Cron.parse("cron(0/5 8-17 ? * MON-FRI *)")

    assert weekdays.matches(utc(2024, 3, 15, 17, 55, 59, 999999))
    assert not weekdays.matches(utc(2024, 3, 15, 17, 56))
    assert not weekdays.matches(utc(2024, 3, 15, 18, 0))
    assert not weekdays.matches(utc(2024, 3, 16, 12, 0))  # a Saturday
    assert Cron.parse("cron(0 0 ? * 2#1 *)").matches(utc(2024, 4, 1))
    assert not Cron.parse("cron(0 0 ? * 2#1 *)").matches(utc(2024, 4, 8))


def test_the_year_field_bounds_the_search():
    every_day = Cron.parse("cron(0 0 * * ? *)")

    assert every_day.next_after(utc(1900, 6, 1)) == utc(1970, 1, 1)
    assert every_day.next_after(utc(2199, 12, 31)) is None
    assert every_day.previous_at_or_before(utc(1970, 1, 1)) == utc(1970, 1, 1)
    assert every_day.previous_at_or_before(utc(1969, 12, 31, 23, 59)) is None
    assert every_day.previous_at_or_before(utc(2500, 1, 1)) == utc(2199, 12, 31)
    assert Cron.parse("cron(0 12 * * ? 2025)").next_after(utc(2025, 12, 31, 12, 0)) is None


def test_times_are_utc_whatever_zone_they_come_in():
    tokyo = timezone(timedelta(hours=9))
    ten_utc = Cron.parse("cron(0 10 * * ? *)")

    fired = ten_utc.next_after(datetime(2024, 3, 15, 18, 30, tzinfo=tokyo))  # 09:30 UTC

    assert fired == utc(2024, 3, 15, 10, 0)
    assert fired.tzinfo is UTC
    assert ten_utc.previous_at_or_before(datetime(2024, 3, 15, 19, 0, tzinfo=tokyo)).tzinfo is UTC
    assert ten_utc.matches(datetime(2024, 3, 15, 19, 0, tzinfo=tokyo))


@pytest.mark.parametrize("method", ["matches", "next_after", "previous_at_or_before"])
def test_naive_datetimes_are_refused(method):
    with pytest.raises(ValueError, match="timezone-aware"):
        getattr(Cron.parse("cron(0 10 * * ? *)"), method)(datetime(2024, 3, 15, 9, 30))


@pytest.mark.parametrize(
    "text",
    ["cron(0 18 ? * MON-FRI *)", "0 18 ? * MON-FRI *", "  CRON( 0  18 ? *\tmon-fri * )  ", "cron(0 18 ? * Mon-Fri *)"],
)
def test_the_expression_is_normalised(text):
    assert Cron.parse(text) == Cron("cron(0 18 ? * MON-FRI *)")
    assert Cron.parse(text).expression == "cron(0 18 ? * MON-FRI *)"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("cron(0 10 * * ?)", "6 fields"),
        ("cron(0 10 * * ? * *)", "6 fields"),
        ("rate(5 minutes)", "6 fields"),
        ("", "6 fields"),
        ("cron(0 10 * * ? *", "cron(...)"),
        ("cron(0 10 ? * ? *)", "day-of-month, day-of-week"),
        ("cron(0 10 * * * *)", "day-of-month, day-of-week"),
        ("cron(0 10 1 * MON *)", "day-of-month, day-of-week"),
        ("cron(60 10 * * ? *)", "minutes"),
        ("cron(? 10 * * ? *)", "minutes"),
        ("cron(1,,2 10 * * ? *)", "minutes"),
        ("cron(0/0 10 * * ? *)", "minutes"),
        ("cron(0/x 10 * * ? *)", "minutes"),
        ("cron(*-5 10 * * ? *)", "minutes"),
        ("cron(0 24 * * ? *)", "hours"),
        ("cron(0 -1 * * ? *)", "hours"),
        ("cron(0 5-2 * * ? *)", "hours"),
        ("cron(0 0 0 * ? *)", "day-of-month"),
        ("cron(0 0 32 * ? *)", "day-of-month"),
        ("cron(0 0 0W * ? *)", "day-of-month"),
        ("cron(0 0 32W * ? *)", "day-of-month"),
        ("cron(0 0 W * ? *)", "day-of-month"),
        ("cron(0 0 1-5W * ? *)", "day-of-month"),
        ("cron(0 0 L,15 * ? *)", "day-of-month"),
        ("cron(0 0 L-2 * ? *)", "day-of-month"),
        ("cron(0 0 1/0 * ? *)", "day-of-month"),
        ("cron(0 0 MON * ? *)", "day-of-month"),
        ("cron(0 0 * 0 ? *)", "month"),
        ("cron(0 0 * 13 ? *)", "month"),
        ("cron(0 0 * FOO ? *)", "month"),
        ("cron(0 0 * JANUARY ? *)", "month"),
        ("cron(0 0 ? * 0 *)", "day-of-week"),
        ("cron(0 0 ? * 8 *)", "day-of-week"),
        ("cron(0 0 ? * FUN *)", "day-of-week"),
        ("cron(0 0 ? * 2#6 *)", "day-of-week"),
        ("cron(0 0 ? * 2#0 *)", "day-of-week"),
        ("cron(0 0 ? * 8#1 *)", "day-of-week"),
        ("cron(0 0 ? * 3#1,6#3 *)", "day-of-week"),
        ("cron(0 0 ? * 8L *)", "day-of-week"),
        ("cron(0 0 ? * 1/2 *)", "day-of-week"),
        ("cron(0 0 ? * FRI-MON *)", "day-of-week"),
        ("cron(0 0 * * ? 1969)", "year"),
        ("cron(0 0 * * ? 2200)", "year"),
        ("cron(0 0 * * ? 2030/0)", "year"),
    ],
)
def test_invalid_expressions_name_the_field(text, field):
    with pytest.raises(CronError) as raised:
        Cron.parse(text)

    assert field in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_an_out_of_range_value_says_what_was_expected():
    with pytest.raises(CronError, match=r"^day-of-week: '8' is not 1-7 or SUN-SAT$"):
        Cron.parse("cron(0 0 ? * 8 *)")
    with pytest.raises(CronError, match=r"^month: 'FOO' is not 1-12 or JAN-DEC$"):
        Cron.parse("cron(0 0 * foo ? *)")


# The oracle: strategies that draw an expression's text together with what it means, written
# independently of the module, and brute-force scans that try every minute (or every day).


@dataclass(frozen=True)
class Part:
    """One field's text and what it accepts: a number, or for the day fields a date."""

    text: str
    accepts: Callable[[Any], bool]


@dataclass(frozen=True)
class Expression:
    minutes: Part
    hours: Part
    day_of_month: Part
    month: Part
    day_of_week: Part
    year: Part

    @property
    def text(self):
        parts = (self.minutes, self.hours, self.day_of_month, self.month, self.day_of_week, self.year)
        return "cron(" + " ".join(part.text for part in parts) + ")"

    def fires_on(self, day):
        return (
            self.year.accepts(day.year)
            and self.month.accepts(day.month)
            and self.day_of_month.accepts(day)
            and self.day_of_week.accepts(day)
        )

    def fires_at(self, moment):
        return self.fires_on(moment.date()) and self.hours.accepts(moment.hour) and self.minutes.accepts(moment.minute)


ANY_DAY = Part("?", lambda day: True)
EVERY = Part("*", lambda value: True)


def days_in(day):
    return calendar.monthrange(day.year, day.month)[1]


def day_of_week(day):
    return (day.weekday() + 1) % 7 + 1  # Monday is 0 to Python, 2 to EventBridge


def is_weekday(day):
    return day.weekday() < 5


@st.composite
def numbers(draw, low, high, *, names=(), steps=True, values=None):
    """A list of one to three terms (5, 1-5, 0/15, 5-40/5), or * and */n, over low-high."""
    values = st.integers(low, high) if values is None else values

    def spell(value):
        if names and draw(st.booleans()):
            name = names[value - low]
            return draw(st.sampled_from([name, name.lower(), name.title()]))
        return str(value)

    def term():
        kinds = ["value", "range", "from", "range-step"] if steps else ["value", "range"]
        kind = draw(st.sampled_from(kinds))
        first = draw(values)
        last = max(first, draw(values))
        step = draw(st.integers(1, high - low))
        if kind == "value":
            return spell(first), lambda x: x == first
        if kind == "range":
            return f"{spell(first)}-{spell(last)}", lambda x: first <= x <= last
        if kind == "from":
            return f"{spell(first)}/{step}", lambda x: first <= x <= high and (x - first) % step == 0
        return f"{spell(first)}-{spell(last)}/{step}", lambda x: first <= x <= last and (x - first) % step == 0

    shape = draw(st.sampled_from(["star", "star-step", "list"] if steps else ["star", "list"]))
    if shape == "star":
        return EVERY
    if shape == "star-step":
        step = draw(st.integers(1, high - low))
        return Part(f"*/{step}", lambda x: (x - low) % step == 0)
    terms = [term() for _ in range(draw(st.integers(1, 3)))]
    return Part(",".join(text for text, _ in terms), lambda x: any(accepts(x) for _, accepts in terms))


def on_day(part, of):
    """A numeric part applied to one number of a date."""
    return Part(part.text, lambda day: part.accepts(of(day)))


def nearest_weekday(n, day):
    weekdays = [d for d in range(1, days_in(day) + 1) if is_weekday(day.replace(day=d))]
    return n <= days_in(day) and day.day == min(weekdays, key=lambda d: abs(d - n))


def days_of_month():
    nearest = st.integers(1, 31).map(lambda n: Part(f"{n}W", lambda day: nearest_weekday(n, day)))
    return st.one_of(
        numbers(1, 31).map(lambda part: on_day(part, lambda day: day.day)),
        st.just(Part("L", lambda day: day.day == days_in(day))),
        st.just(Part("LW", lambda day: nearest_weekday(days_in(day), day))),
        nearest,
    )


def days_of_week():
    names = st.integers(1, 7).flatmap(
        lambda n: st.sampled_from([(n, str(n)), (n, DAYS[n - 1]), (n, DAYS[n - 1].lower())])
    )
    last = names.map(
        lambda named: Part(f"{named[1]}L", lambda day: day_of_week(day) == named[0] and day.day + 7 > days_in(day))
    )
    nth = st.tuples(names, st.integers(1, 5)).map(
        lambda pair: Part(
            f"{pair[0][1]}#{pair[1]}",
            lambda day: day_of_week(day) == pair[0][0] and (day.day - 1) // 7 + 1 == pair[1],
        )
    )
    return st.one_of(
        numbers(1, 7, names=DAYS, steps=False).map(lambda part: on_day(part, day_of_week)),
        st.just(Part("L", lambda day: day_of_week(day) == 7)),
        last,
        nth,
    )


def days():
    """(day-of-month, day-of-week): one of them '?'."""
    return st.one_of(
        days_of_month().map(lambda part: (part, ANY_DAY)),
        days_of_week().map(lambda part: (ANY_DAY, part)),
    )


def times_only():
    """Expressions that fire every day: minutes and hours vary, the rest is * or ?."""
    return st.builds(
        lambda minutes, hours, day: Expression(minutes, hours, day[0], EVERY, day[1], EVERY),
        numbers(0, 59),
        numbers(0, 23),
        st.sampled_from([(EVERY, ANY_DAY), (ANY_DAY, EVERY)]),
    )


def whole_expressions():
    years = st.one_of(st.just(EVERY), numbers(1970, 2199, values=st.integers(2018, 2033)))
    return st.builds(
        lambda minutes, hours, day, month, year: Expression(minutes, hours, day[0], month, day[1], year),
        numbers(0, 59),
        numbers(0, 23),
        days(),
        numbers(1, 12, names=MONTHS),
        years,
    )


ZONES = st.sampled_from([UTC, timezone(timedelta(hours=9)), timezone(timedelta(hours=-5, minutes=-30))])
INSTANTS = st.datetimes(min_value=datetime(2019, 1, 1), max_value=datetime(2031, 12, 31), timezones=ZONES)


def whole_minute(moment):
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


def scan_minutes(expression, start, horizon, step):
    """Every minute from start, forward (step +1 minute) or backward, within horizon."""
    moment = start
    while abs(moment - start) <= horizon:
        if expression.fires_at(moment):
            return moment
        moment += step
    return None


def scan_days(expression, start, horizon_days, forward):
    """Every day from start's, forward or backward; every minute of the days that fire."""
    direction = 1 if forward else -1
    minutes = range(24 * 60) if forward else range(24 * 60 - 1, -1, -1)
    for offset in range(horizon_days + 1):
        day = start.date() + direction * offset * DAY
        if not expression.fires_on(day):
            continue
        for minute in minutes:
            moment = datetime.combine(day, time(minute // 60, minute % 60), UTC)
            beyond = moment >= start if forward else moment <= start
            if beyond and expression.fires_at(moment):
                return moment
    return None


@settings(max_examples=300, deadline=None)
@given(times_only(), INSTANTS)
def test_times_of_day_agree_with_a_minute_by_minute_scan(expression, moment):
    cron = Cron.parse(expression.text)
    horizon = timedelta(days=8)

    expected_next = scan_minutes(expression, whole_minute(moment) + MINUTE, horizon, MINUTE)
    expected_previous = scan_minutes(expression, whole_minute(moment), horizon, -MINUTE)

    assert cron.next_after(moment) == expected_next
    assert cron.previous_at_or_before(moment) == expected_previous
    assert cron.previous_at_or_before(expected_next) == expected_next


@settings(max_examples=400, deadline=None)
@given(whole_expressions(), INSTANTS)
def test_whole_expressions_agree_with_a_day_by_day_scan(expression, moment):
    cron = Cron.parse(expression.text)
    horizon_days = 400
    start = whole_minute(moment)

    fired = cron.next_after(moment)
    expected = scan_days(expression, start + MINUTE, horizon_days, forward=True)
    if expected is None:
        assert fired is None or fired.date() > start.date() + horizon_days * DAY
    else:
        assert fired == expected
    if fired is not None:
        assert expression.fires_at(fired)
        assert cron.matches(fired)
        assert cron.previous_at_or_before(fired) == fired
        assert fired.tzinfo is UTC

    before = cron.previous_at_or_before(moment)
    expected = scan_days(expression, start, horizon_days, forward=False)
    if expected is None:
        assert before is None or before.date() < start.date() - horizon_days * DAY
    else:
        assert before == expected
    if before is not None:
        assert expression.fires_at(before)
        assert cron.next_after(before - MINUTE) == before


@settings(deadline=None)
@given(whole_expressions())
def test_the_normalised_expression_parses_to_itself(expression):
    cron = Cron.parse(expression.text)

    assert Cron.parse(cron.expression) == cron
    assert cron.expression == cron.expression.upper().replace("CRON(", "cron(")

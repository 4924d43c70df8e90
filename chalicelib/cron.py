"""EventBridge cron expressions: check them, and find when they fire.

Hand-written because the runtime may depend only on chalice and boto3, and the
usual libraries (croniter, cron-descriptor) speak the five-field Unix dialect:
none implements EventBridge's six fields with a year, ``?``, ``L``, ``W``, ``#``
and day-of-week 1 = SUN. Times are UTC and whole minutes, as EventBridge fires.

>>> sunday_2am = Cron.parse("cron(0 2 ? * SUN *)")
>>> sunday_2am.next_after(datetime(2024, 6, 1, 23, 59, tzinfo=UTC))
datetime.datetime(2024, 6, 2, 2, 0, tzinfo=datetime.timezone.utc)
"""

import calendar
import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import partial

MIN_YEAR = 1970
MAX_YEAR = 2199
SUNDAY = 1
SATURDAY = 7
MAX_OCCURRENCE = 5  # '#': no day of the week comes round more than five times in a month
ONE_MINUTE = timedelta(minutes=1)
FIELD_NAMES = "minutes hours day-of-month month day-of-week year"
ANY = "?"
MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
DAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")

_NUMBER = re.compile(r"[0-9]+")
_NEAREST_WEEKDAY = re.compile(r"(?P<day>[0-9]+)W")  # 15W
_LAST_OF_MONTH = re.compile(r"(?P<day>[0-9A-Z]+)L")  # 5L, THUL
_NTH_OF_MONTH = re.compile(r"(?P<day>[0-9A-Z]+)#(?P<nth>[0-9]+)")  # 3#2, TUE#2

# The days of a month on which an expression fires, ascending: (year, month) -> days.
DayRule = Callable[[int, int], tuple[int, ...]]


class CronError(ValueError):
    """An expression EventBridge would not accept; the message names the field."""


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # names[i] stands for low + i

    @property
    def expected(self) -> str:
        numbers = f"{self.low}-{self.high}"
        return f"{numbers} or {self.names[0]}-{self.names[-1]}" if self.names else numbers

    def error(self, problem: str) -> CronError:
        return CronError(f"{self.name}: {problem}")

    def value(self, token: str) -> int:
        if _NUMBER.fullmatch(token):
            number = int(token)
        elif token in self.names:
            number = self.low + self.names.index(token)
        else:
            raise self.error(f"{token!r} is not {self.expected}")
        if not self.low <= number <= self.high:
            raise self.error(f"{token!r} is not {self.expected}")
        return number


MINUTES = _Field("minutes", 0, 59)
HOURS = _Field("hours", 0, 23)
DAY_OF_MONTH = _Field("day-of-month", 1, 31)
MONTH = _Field("month", 1, 12, MONTH_NAMES)
DAY_OF_WEEK = _Field("day-of-week", 1, 7, DAY_NAMES)
YEAR = _Field("year", MIN_YEAR, MAX_YEAR)


@dataclass(frozen=True)
class _Schedule:
    """The values each field accepts, ascending; the day fields as one rule."""

    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: DayRule
    months: tuple[int, ...]
    years: tuple[int, ...]

    def matches(self, moment: datetime) -> bool:
        return (
            moment.minute in self.minutes
            and moment.hour in self.hours
            and moment.year in self.years
            and moment.month in self.months
            and moment.day in self.days(moment.year, moment.month)
        )

    def first(self, bound: datetime, forward: bool) -> datetime | None:
        """The first fire at or after bound (forward), or at or before it (backward)."""
        for day in self._days_from(bound.date(), forward):
            on_bound_day = day == bound.date()
            found = self._time_from(bound.hour if on_bound_day else None, bound.minute, forward)
            if found is not None:
                return datetime.combine(day, found, UTC)
        return None

    def _days_from(self, bound: date, forward: bool) -> Iterator[date]:
        # Whole years and months that cannot match are skipped, never stepped through.
        for year in _ordered(self.years, bound.year, forward):
            in_bound_year = year == bound.year
            for month in _ordered(self.months, bound.month if in_bound_year else None, forward):
                in_bound_month = in_bound_year and month == bound.month
                for day in _ordered(self.days(year, month), bound.day if in_bound_month else None, forward):
                    yield date(year, month, day)

    def _time_from(self, bound_hour: int | None, bound_minute: int, forward: bool) -> time | None:
        """The first time of a day that fires, from (bound_hour, bound_minute) on if bound_hour is given."""
        for hour in _ordered(self.hours, bound_hour, forward):
            minutes = _ordered(self.minutes, bound_minute if hour == bound_hour else None, forward)
            minute = next(iter(minutes), None)
            if minute is not None:
                return time(hour, minute)
        return None


@dataclass(frozen=True)
class Cron:
    """One EventBridge cron expression, e.g. ``cron(0 18 ? * MON-FRI *)``.

    ``expression`` is normalised: ``cron(...)`` around the six fields, single spaces, names upper case.

    >>> Cron.parse(" 0 18 ? * mon-fri * ").expression
    'cron(0 18 ? * MON-FRI *)'
    """

    expression: str
    _schedule: _Schedule = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fields = _split(self.expression)
        object.__setattr__(self, "expression", f"cron({' '.join(fields)})")
        object.__setattr__(self, "_schedule", _parse_fields(fields))

    @classmethod
    def parse(cls, text: str) -> "Cron":
        """``cron(M H DOM MON DOW YEAR)`` or the six fields bare; CronError if EventBridge would refuse it."""
        return cls(text)

    def matches(self, moment: datetime) -> bool:
        """Whether the expression fires in moment's minute."""
        return self._schedule.matches(_utc_minute(moment))

    def next_after(self, moment: datetime) -> datetime | None:
        """The first fire after moment's minute, in UTC; None if there is none before 2200."""
        start = _utc_minute(moment)
        if start.year > MAX_YEAR:
            return None
        return self._schedule.first(start + ONE_MINUTE, forward=True)

    def previous_at_or_before(self, moment: datetime) -> datetime | None:
        """The last fire at or before moment's minute, in UTC; None if there is none since 1970."""
        end = _utc_minute(moment)
        if end.year < MIN_YEAR:
            return None
        return self._schedule.first(end, forward=False)


def _utc_minute(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"expected a timezone-aware datetime, got naive {moment.isoformat()}")
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


def _ordered(values: Sequence[int], bound: int | None, forward: bool) -> Iterable[int]:
    """Ascending values from bound on (forward), or descending from bound down (backward)."""
    if bound is None:
        return values if forward else reversed(values)
    if forward:
        return values[bisect_left(values, bound) :]
    return reversed(values[: bisect_right(values, bound)])


# Parsing


def _split(text: str) -> list[str]:
    body = text.strip()
    if body[:5].lower() == "cron(":
        if not body.endswith(")"):
            raise CronError(f"expected 'cron(...)' to end with ')', got {text!r}")
        body = body[5:-1]
    fields = body.upper().split()
    if len(fields) != len(FIELD_NAMES.split()):
        raise CronError(f"expected 6 fields ({FIELD_NAMES}), got {len(fields)} in {text!r}")
    return fields


def _parse_fields(fields: list[str]) -> _Schedule:
    minutes, hours, day_of_month, month, day_of_week, year = fields
    both = f"{DAY_OF_MONTH.name}, {DAY_OF_WEEK.name}"
    if day_of_month == ANY and day_of_week == ANY:
        raise CronError(f"{both}: '?' may stand in only one of them")
    if ANY not in (day_of_month, day_of_week):
        raise CronError(f"{both}: one of them must be '?', as EventBridge cannot match on both")
    return _Schedule(
        minutes=_parse_values(minutes, MINUTES),
        hours=_parse_values(hours, HOURS),
        days=_parse_day_of_week(day_of_week) if day_of_month == ANY else _parse_day_of_month(day_of_month),
        months=_parse_values(month, MONTH),
        years=_parse_values(year, YEAR),
    )


def _parse_values(text: str, of: _Field, *, steps: bool = True) -> tuple[int, ...]:
    """A list of terms: ``*``, ``5``, ``1-5``, and with steps ``*/5``, ``0/15``, ``5-40/5``."""
    values: set[int] = set()
    for term in text.split(","):
        values.update(_parse_term(term, of, steps))
    return tuple(sorted(values))


def _parse_term(term: str, of: _Field, steps: bool) -> range:
    span, slash, step_text = term.partition("/")
    if slash and not steps:
        raise of.error(f"{term!r}: steps ('/') are not allowed in this field")
    step = _parse_step(term, step_text, of) if slash else 1
    if span == "*":
        return range(of.low, of.high + 1, step)
    start, dash, end = span.partition("-")
    first = of.value(start)
    if dash:
        last = of.value(end)
    else:
        last = of.high if slash else first  # '0/15' runs to the end of the field
    if last < first:
        raise of.error(f"{term!r}: the range runs backwards")
    return range(first, last + 1, step)


def _parse_step(term: str, step_text: str, of: _Field) -> int:
    if not _NUMBER.fullmatch(step_text) or int(step_text) < 1:
        raise of.error(f"{term!r}: the step after '/' must be a whole number of at least 1")
    return int(step_text)


def _parse_day_of_month(text: str) -> DayRule:
    """As _parse_values, or alone: ``L`` (the last day), ``LW`` (the last weekday), ``15W``."""
    if text == "L":
        return _last_day_of_month
    if text == "LW":
        return _last_weekday_of_month
    nearest = _NEAREST_WEEKDAY.fullmatch(text)
    if nearest:
        day = int(nearest["day"])
        if not DAY_OF_MONTH.low <= day <= DAY_OF_MONTH.high:
            raise DAY_OF_MONTH.error(f"{text!r}: the day before 'W' must be {DAY_OF_MONTH.expected}")
        return partial(_weekday_nearest, day)
    if "L" in text or "W" in text:
        raise DAY_OF_MONTH.error(f"{text!r}: 'L', 'LW' and 'nW' stand alone, as in 'L' or '15W'")
    return partial(_days_of_month, _parse_values(text, DAY_OF_MONTH))


def _parse_day_of_week(text: str) -> DayRule:
    """As _parse_values without steps, or alone: ``L`` (Saturday), ``5L`` (the last Thursday), ``3#2``."""
    if text == "L":
        return partial(_days_of_week, (SATURDAY,))
    last = _LAST_OF_MONTH.fullmatch(text)
    if last:
        return partial(_last_of_month, DAY_OF_WEEK.value(last["day"]))
    nth = _NTH_OF_MONTH.fullmatch(text)
    if nth:
        occurrence = int(nth["nth"])
        if not 1 <= occurrence <= MAX_OCCURRENCE:
            raise DAY_OF_WEEK.error(f"{text!r}: the occurrence after '#' must be 1-{MAX_OCCURRENCE}")
        return partial(_nth_of_month, DAY_OF_WEEK.value(nth["day"]), occurrence)
    if "L" in text or "#" in text:
        raise DAY_OF_WEEK.error(f"{text!r}: 'L', 'nL' and 'n#k' stand alone, as in '5L' or '3#2'")
    return partial(_days_of_week, _parse_values(text, DAY_OF_WEEK, steps=False))


# Day rules: the days of one month that fire, ascending. Weekdays are Monday to Friday.


def _last_day(year: int, month: int) -> int:
    return calendar.monthrange(year, month)[1]


def _day_of_week(year: int, month: int, day: int) -> int:
    """1 = SUN ... 7 = SAT, as EventBridge counts."""
    return date(year, month, day).isoweekday() % 7 + 1


def _days_of_month(days: tuple[int, ...], year: int, month: int) -> tuple[int, ...]:
    last = _last_day(year, month)
    return tuple(day for day in days if day <= last)


def _last_day_of_month(year: int, month: int) -> tuple[int, ...]:
    return (_last_day(year, month),)


def _weekday_nearest(day: int, year: int, month: int) -> tuple[int, ...]:
    """``15W``: the weekday nearest the day, without leaving the month; nothing if the month is shorter."""
    last = _last_day(year, month)
    if day > last:
        return ()
    day_of_week = _day_of_week(year, month, day)
    if day_of_week == SATURDAY:
        day = day - 1 if day > 1 else day + 2
    elif day_of_week == SUNDAY:
        day = day + 1 if day < last else day - 2
    return (day,)


def _last_weekday_of_month(year: int, month: int) -> tuple[int, ...]:
    return _weekday_nearest(_last_day(year, month), year, month)


def _days_of_week(days_of_week: tuple[int, ...], year: int, month: int) -> tuple[int, ...]:
    first = _day_of_week(year, month, 1)  # day d falls on first + (d - 1), counted 1-7
    return tuple(day for day in range(1, _last_day(year, month) + 1) if (first + day - 2) % 7 + 1 in days_of_week)


def _nth_of_month(day_of_week: int, nth: int, year: int, month: int) -> tuple[int, ...]:
    """``3#2``: the second Tuesday; nothing in a month without one."""
    first = 1 + (day_of_week - _day_of_week(year, month, 1)) % 7
    day = first + 7 * (nth - 1)
    return (day,) if day <= _last_day(year, month) else ()


def _last_of_month(day_of_week: int, year: int, month: int) -> tuple[int, ...]:
    """``5L``: the last Thursday."""
    last = _last_day(year, month)
    return (last - (_day_of_week(year, month, last) - day_of_week) % 7,)

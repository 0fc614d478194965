"""ragim.checks: scikit-learn's check_scalar with one-line ValidationErrors; config field checks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import numpy as np
import pytest

from ragim.checks import check_fields, check_int, check_number
from ragim.errors import ValidationError


@pytest.mark.parametrize(
    "value, kwargs, message",
    [
        (0, {"ge": 1}, "max_steps must be an integer >= 1, got 0"),
        (True, {"ge": 0}, "max_steps must be an integer >= 0, got True"),
        (2.0, {"ge": 0}, "max_steps must be an integer >= 0, got 2.0"),
        ("3", {"ge": 1}, "max_steps must be an integer >= 1, got '3'"),
        (4, {"ge": 0, "le": 3}, r"max_steps must be an integer in \[0, 3\], got 4"),
        (None, {"ge": 1}, "max_steps must be an integer >= 1, got None"),
    ],
)
def test_bad_integers_name_the_argument_the_range_and_the_value(value, kwargs, message):
    with pytest.raises(ValidationError, match=f"^{message}$"):
        check_int(value, "max_steps", **kwargs)


@pytest.mark.parametrize(
    "value, kwargs, message",
    [
        (1.0, {"ge": 0, "lt": 1}, r"val_fraction must be a number in \[0, 1\), got 1.0"),
        (0, {"gt": 0, "le": 1}, r"val_fraction must be a number in \(0, 1\], got 0"),
        (math.nan, {"ge": 0}, "val_fraction must be a number >= 0, got nan"),
        (math.inf, {"gt": 0}, "val_fraction must be a number > 0, got inf"),
        (False, {"ge": 0}, "val_fraction must be a number >= 0, got False"),
        ([0.5], {"ge": 0}, r"val_fraction must be a number >= 0, got \[0.5\]"),
    ],
)
def test_bad_numbers_name_the_argument_the_range_and_the_value(value, kwargs, message):
    with pytest.raises(ValidationError, match=f"^{message}$"):
        check_number(value, "val_fraction", **kwargs)


def test_good_values_come_back_as_plain_python_numbers():
    assert check_int(np.int64(3), "k", ge=0) == 3 and type(check_int(np.int64(3), "k", ge=0)) is int
    assert check_number(np.float32(0.5), "p", gt=0, le=1) == 0.5
    assert type(check_number(2, "lr", gt=0)) is float
    assert check_number(1.0, "top_p", gt=0, le=1) == 1.0  # an inclusive bound includes itself
    assert check_int(None, "max_tasks", ge=1, allow_none=True) is None
    assert check_number(-1e9, "x") == -1e9  # no bounds: any finite number
    with pytest.raises(ValidationError, match="or None, got 0"):
        check_int(0, "max_tasks", ge=1, allow_none=True)


def test_a_note_says_why_the_range_is_what_it_is():
    message = r"^k must be an integer >= 1 \(the generator needs neighbours\), got 0$"
    with pytest.raises(ValidationError, match=message):
        check_int(0, "k", ge=1, note="the generator needs neighbours")
    message = r"^h must be a number in \(0, 9\] \(follow-up ends\), got 10$"
    with pytest.raises(ValidationError, match=message):
        check_number(10, "h", gt=0, le=9, note="follow-up ends")


def test_check_fields_reports_every_problem_at_once_and_coerces_the_rest():
    @dataclass
    class Run:
        steps: object = 1
        rate: object = 0.1

    run = Run(steps=np.int64(5), rate=1)
    check_fields(
        run, {"steps": partial(check_int, ge=1), "rate": partial(check_number, gt=0)}, "Run"
    )
    assert (run.steps, run.rate) == (5, 1.0) and type(run.steps) is int and type(run.rate) is float
    with pytest.raises(ValidationError) as err:
        check_fields(
            Run(steps=0, rate=-1),
            {"steps": partial(check_int, ge=1), "rate": partial(check_number, gt=0)},
            "Run",
            ["name must be text"],
        )
    assert err.value.problems == [
        "steps must be an integer >= 1, got 0",
        "rate must be a number > 0, got -1",
        "name must be text",
    ]
    assert str(err.value).startswith("invalid Run:")

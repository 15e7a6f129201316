"""Field types for what the database can store: bounded integers, text without NUL, aware times.

Postgres stores ``Integer`` columns in 32 bits and refuses NUL (U+0000) in text and ``jsonb``;
SQLite stores 64-bit integers. A request that passes these types is one both databases take,
so that a careless or hostile value is a 422 that names the field, never a 500 from the driver.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1

#: an integer an ``Integer`` column (32-bit on Postgres) can hold
Int32 = Annotated[int, Field(ge=INT32_MIN, le=INT32_MAX)]
#: a count or an index stored in an ``Integer`` column
Count = Annotated[int, Field(ge=0, le=INT32_MAX)]

#: matches text without NUL; checked in Rust by pydantic-core (no Python call per string), and
#: written into the OpenAPI schema so that clients (and the fuzzer) know the rule.
NO_NUL_PATTERN = r"^[^\x00]*$"
NUL_MESSAGE = "must not contain NUL characters (U+0000): the database cannot store them"
#: text the database can store
Text = Annotated[str, StringConstraints(pattern=NO_NUL_PATTERN)]


def _aware(value: datetime) -> datetime:
    # SQLite has no time zone type: its DateTime(timezone=True) columns come back naive, but
    # every time gradpilot stores is UTC (``service.db.models.utcnow``).
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


#: a time with its zone: naive values (SQLite's) are UTC
AwareTime = Annotated[datetime, AfterValidator(_aware)]

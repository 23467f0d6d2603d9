"""What every settings model shares."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _http_url(value: str) -> str:
    if not re.match(r"^https?://[^/]+", value):
        raise ValueError('must be an http(s) URL, e.g. "https://s3.example.internal:9000"')
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]

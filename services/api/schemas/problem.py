"""The problem document (RFC 9457) every refusal answers with."""

from __future__ import annotations

from pydantic import BaseModel, Field

from services.api.errors import MAX_ERRORS
from services.api.problems import PREFIX
from services.api.schemas.common import absent


class FieldProblem(BaseModel):
    loc: list[str | int] = Field(
        description="Where: body, query, path or header, then the field; "
        "a name over 100 characters is cut short"
    )
    msg: str = Field(description="What is wrong with it")


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    type: str = Field(
        description=f"The problem, as {PREFIX}<name> (about:blank for plain HTTP ones)"
    )
    title: str = Field(description="The HTTP status's phrase")
    status: int = Field(description="The HTTP status")
    detail: str = Field(description="What happened, in a sentence")
    errors: list[FieldProblem] | None = Field(
        None, description=f"The fields in question, at most {MAX_ERRORS} of them", exclude_if=absent
    )
    more_errors: int | None = Field(
        None,
        ge=1,
        description="How many more errors there were than `errors` lists",
        exclude_if=absent,
    )

"""Endpoint and deployment names follow Azure ML's rules, which also makes them safe as directory
names: a letter first, then letters, digits or hyphens, 3 to 32 characters, no trailing hyphen."""

import re

from mlflow_deploy.errors import InvalidParameter

__all__ = ["check_name"]

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]$")


def check_name(name, flag: str) -> str:
    """Return ``name`` if valid; the error names the flag it came from, not the value."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidParameter(
            f"Invalid {flag}: use 3-32 letters, digits or hyphens, starting with a letter and not "
            "ending with a hyphen."
        )
    return name

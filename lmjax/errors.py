"""Errors that the CLI turns into one clear line and a non-zero exit."""


class LmjaxError(Exception):
    """Base class: a user-facing problem with input, config or files."""


class ConfigError(LmjaxError, ValueError):
    """A config value is unknown, of the wrong type, or inconsistent."""


class DataError(LmjaxError, ValueError):
    """A data source or tokenizer cannot produce what the config asks for."""


class RunDirError(LmjaxError):
    """A run directory holds something that conflicts with the request."""

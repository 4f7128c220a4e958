"""User-facing configuration errors: caught by the entry points and printed in one line."""


class ConfigError(ValueError):
    """A bad value the user can fix: names the key, the value and what is allowed."""

    def __init__(self, key: str, value, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!s}: {allowed}")


def user_error(exc: BaseException) -> ConfigError | None:
    """The ConfigError behind ``exc``, also when Hydra's instantiate wrapped it."""
    while exc is not None:
        if isinstance(exc, ConfigError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def require_positive(key: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(key, value, "must be a positive integer")

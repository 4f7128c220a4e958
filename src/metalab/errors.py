"""User-facing errors: caught once in each entry point (``one_line_errors``) and printed as one
line."""

from __future__ import annotations

import contextlib
import errno
import os
import sys


class ConfigError(ValueError):
    """A bad value the user can fix: names the key, the value and what is allowed."""

    def __init__(self, key: str, value, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!s}: {allowed}")


class RunError(RuntimeError):
    """A run that cannot go on for a reason the user must see (a diverged loss, a folder in use),
    in one line."""


# Errors of the machine and its disks, not of metalab: the file and the reason say it all.
DISK_ERRNOS = {
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOSPC,
    errno.EDQUOT,
    errno.ENOTDIR,
    errno.EEXIST,
    errno.EISDIR,
    errno.EFBIG,
}


def user_error(exc: BaseException, config_name: str = "train") -> Exception | None:
    """The one-line error behind ``exc`` (also when Hydra or Lightning wrapped it), or None for
    a bug, which keeps its traceback."""
    seen = exc
    while seen is not None:
        if isinstance(seen, (ConfigError, RunError)):
            return seen
        seen = seen.__cause__ or seen.__context__
    hydra_line = hydra_error(exc, config_name)
    if hydra_line is not None:
        return RunError(hydra_line)
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in DISK_ERRNOS:
            where = seen.filename or "a file of the run"
            hint = " (free some space)" if seen.errno in (errno.ENOSPC, errno.EDQUOT) else ""
            return RunError(
                f"cannot write {where}: {seen.strerror}{hint}; the run folder is set "
                "by hydra.run.dir"
            )
        seen = seen.__cause__ or seen.__context__
    return None


def hydra_error(exc: BaseException, config_name: str) -> str | None:
    """Hydra's multi-line messages (an unknown config option or key, a bad override, a missing
    mandatory value) as one line."""
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf import errors as oc

    if isinstance(exc, MissingConfigException) and exc.options is not None:
        group = (exc.missing_cfg_file or "").rpartition("/")[0]
        choice = (exc.missing_cfg_file or "").rpartition("/")[2]
        return (
            f"{group}={choice}: no such option in conf/{group}/; allowed: "
            f"{', '.join(sorted(exc.options))} (Could not find '{exc.missing_cfg_file}'; "
            f"Available options in '{group}')"
        )
    unknown = isinstance(exc.__cause__, (oc.ConfigKeyError, oc.ConfigAttributeError))
    if unknown and str(exc).startswith("Could not override '"):
        key = str(exc).split("'")[1]
        return (
            f"{key}: no such key in the config; {known_keys(key, config_name)}"
            f"(to add a new key, write +{key}=<value>)"
        )
    if isinstance(exc, oc.MissingMandatoryValue):
        return f"{exc.full_key}: is required and has no value; give {exc.full_key}=<value>"
    if isinstance(exc, (HydraException, oc.OmegaConfBaseException)):
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        return "; ".join(lines)
    return None


def known_keys(key: str, config_name: str) -> str:
    """'keys of <parent>: a, b, c ' in the default config, or '' when that cannot be told."""
    from hydra import compose, initialize_config_dir
    from omegaconf import DictConfig, OmegaConf

    from metalab.run.config import CONF_DIR

    parent = key.rpartition(".")[0]
    try:
        with initialize_config_dir(CONF_DIR, version_base="1.3"):
            node = compose(config_name=config_name)
        node = OmegaConf.select(node, parent) if parent else node
    except Exception:  # listing the keys is a courtesy; the error itself is what matters
        return ""
    if not isinstance(node, DictConfig):
        return ""
    return f"keys of {parent or 'the top level'}: {', '.join(sorted(map(str, node.keys())))} "


@contextlib.contextmanager
def one_line_errors(prog: str, config_name: str):
    """Every user error inside ends in one line on stderr and exit status 2; a bug keeps its
    traceback. Used around an entry point's Hydra main and inside its task function (so that
    Hydra adds no lines of its own). Hydra reports its own errors in several lines unless
    HYDRA_FULL_ERROR is set: set here, they reach this one place. A user who sets it gets the
    full traceback of every error."""
    if _OURS in os.environ:  # inside the entry point's own guard: its choice
        debug = os.environ[_OURS] == "debug"
    else:
        debug = os.environ.get("HYDRA_FULL_ERROR") == "1"
    saved = {var: os.environ.get(var) for var in ("HYDRA_FULL_ERROR", _OURS)}
    os.environ.update(HYDRA_FULL_ERROR="1", **{_OURS: "debug" if debug else "one line"})
    try:
        yield
    except Exception as exc:
        err = None if debug else user_error(exc, config_name)
        if err is None:
            raise
        print(f"{prog}: error: {err}", file=sys.stderr)
        sys.exit(2)
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


_OURS = "METALAB_SET_HYDRA_FULL_ERROR"


def require_positive(key: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(key, value, "must be a positive integer")


def require_positive_number(key: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(key, value, "must be a positive number")

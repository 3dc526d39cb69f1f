"""One error layer for every psim-* command: a known error is one line naming its culprit, no traceback.

Why: most failures are a wrong path, a bad value or a damaged file, and a 50-line Hydra traceback hides
the one line that says which. Known errors are this module's ``PsimError`` types, config errors
(Hydra, OmegaConf), ``ValueError`` (the project's data and model checks) and ``OSError`` (files); they
print ``psim-X: message`` and exit non-zero. Anything else is a bug and keeps its traceback, and so
does every error with ``PSIM_DEBUG=1`` (or Hydra's own ``HYDRA_FULL_ERROR=1``). Hydra wraps errors
raised while building objects (``InstantiationException``) and while configuring logging; the
message printed is the root cause's.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable

DEBUG_ENV = "PSIM_DEBUG"
EXIT_ERROR, EXIT_CONFIG, EXIT_SIGINT, EXIT_SIGTERM = 1, 2, 130, 143


class PsimError(Exception):
    """An input problem whose message names the file, field or value and what was expected."""

    exit_code = EXIT_ERROR


class ConfigError(PsimError, ValueError):
    """A config value of the wrong type, out of range or not among the choices."""

    exit_code = EXIT_CONFIG


class SourceError(PsimError, RuntimeError):
    """A frame source that cannot be opened or read (camera, video file, image folder)."""


class OutputError(PsimError, OSError):
    """An output folder that cannot be written."""


class ComponentError(PsimError, ValueError):
    """A saved model folder (config.yaml + weights.safetensors) that cannot be loaded as saved."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that ``finally`` blocks (atomic writes, video files) still run."""


def _is_wrapper(exc: BaseException) -> bool:
    """Exceptions whose own text only says that something else failed underneath."""
    from hydra.errors import InstantiationException

    if isinstance(exc, InstantiationException):
        return True
    return isinstance(exc, ValueError) and str(exc).startswith("Unable to configure handler")  # logging.config


def root_cause(exc: BaseException) -> BaseException:
    """Follow ``__cause__`` through wrappers (Hydra's instantiate, logging's dictConfig) to the real error."""
    seen = set()
    while exc.__cause__ is not None and _is_wrapper(exc) and id(exc) not in seen:
        seen.add(id(exc))
        exc = exc.__cause__
    return exc


def _omegaconf_text(exc: BaseException, with_key: bool = True) -> str:
    """OmegaConf's first line, with the key it names when that line does not (drops object_type lines)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    key = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("full_key:")), "")
    head = lines[0] if lines else type(exc).__name__
    return head if not with_key or not key or key in head else f"{head} (key {key})"


def describe(exc: BaseException) -> tuple[str, int] | None:
    """(one-line message, exit code) for a known error; None for a bug, whose traceback should show."""
    from hydra.errors import CompactHydraException, HydraException
    from omegaconf.errors import OmegaConfBaseException

    logging_setup = isinstance(exc, ValueError) and str(exc).startswith("Unable to configure handler")
    exc = root_cause(exc)
    if logging_setup and isinstance(exc, OSError) and exc.filename is not None:
        return (f"cannot write the log file {exc.filename} ({exc.strerror}): the output folder `out` must be "
                "a writable folder"), EXIT_ERROR
    if isinstance(exc, Terminated):
        return "stopped by SIGTERM", EXIT_SIGTERM
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C)", EXIT_SIGINT
    if isinstance(exc, PsimError):
        return str(exc), exc.exit_code
    if isinstance(exc, OmegaConfBaseException):
        return _omegaconf_text(exc), EXIT_CONFIG
    if isinstance(exc, (CompactHydraException, HydraException)):
        text = str(exc).replace(", set env var HYDRA_FULL_ERROR=1 to see chained exception", "").strip()
        text = " ".join(ln.strip() for ln in text.splitlines() if ln.strip())
        if isinstance(exc.__cause__, OmegaConfBaseException):
            text += f" ({_omegaconf_text(exc.__cause__, with_key=False)})"
        return text, EXIT_CONFIG
    if isinstance(exc, OSError):
        if exc.filename is not None and exc.strerror:
            return f"{exc.filename}: {exc.strerror}", EXIT_ERROR
        return str(exc) or type(exc).__name__, EXIT_ERROR
    if isinstance(exc, ValueError):
        return str(exc), EXIT_ERROR
    return None


_USER_HYDRA_FULL_ERROR = os.environ.get("HYDRA_FULL_ERROR", "")  # before run_cli sets it


def debugging() -> bool:
    """PSIM_DEBUG=1, or the user's own HYDRA_FULL_ERROR=1: show every traceback."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0") or _USER_HYDRA_FULL_ERROR not in ("", "0")


def _raise_terminated(signum, frame):
    raise Terminated()


def exit_if_known(prog: str, exc: BaseException) -> None:
    """For a known error (and no debug switch): print ``prog: message`` and raise SystemExit with its code.
    Otherwise return, and the caller re-raises (a traceback)."""
    known = None if debugging() else describe(exc)
    if known is not None:
        text, code = known
        print(f"{prog}: {text}", file=sys.stderr, flush=True)
        raise SystemExit(code) from None


def run_cli(prog: str, main: Callable[[], object]) -> None:
    """Run a ``hydra.main`` function: known errors print ``prog: message`` and exit with their code.

    The app's own errors are best reported inside the Hydra job (``exit_if_known``), before Hydra adds
    its "Error executing job" line; this catches the rest: composing the config, creating the output
    folder and its log file, Ctrl-C and SIGTERM.
    """
    saved = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises instead of printing its own traceback
    # SIGTERM raises (finally blocks run), unless off the main thread or ignored by whoever started us
    install = (threading.current_thread() is threading.main_thread()
               and signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN)
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if install else None
    try:
        main()
    except SystemExit:
        raise
    except BaseException as exc:
        exit_if_known(prog, exc)
        raise
    finally:
        if install:
            signal.signal(signal.SIGTERM, previous)
        if saved is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved

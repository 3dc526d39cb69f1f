"""Config values checked when a command starts, before any data or model loads.

Why: a wrong value should stop the command at once with the key, the value and what was expected, not
as a TypeError an hour into training (``train.epochs=abc``) or never (``loop.queue_size=-1``). Each app
has a table of dotted keys -> rules; a few keys are checked wherever they occur (``epochs`` in ``train``
or in a decoder), since every stage that has them means the same thing by them. Every problem found is
listed in one ``ConfigError``. Missing mandatory values (``???``) are named with the override to add.
"""
from __future__ import annotations

import numbers
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from .errors import ConfigError, OutputError

Rule = Callable[[object], "str | None"]  # value -> what was expected when it is wrong, else None


def integer(lo: int | None = None, optional: bool = False) -> Rule:
    def check(v):
        if v is None and optional:
            return None
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or (lo is not None and v < lo):
            return ("an integer" if lo is None else f"an integer >= {lo}") + (" or null" if optional else "")
        return None
    return check


def number(lo: float | None = None, strict: bool = False, hi: float | None = None, optional: bool = False) -> Rule:
    def check(v):
        if v is None and optional:
            return None
        bad = isinstance(v, bool) or not isinstance(v, numbers.Real)
        bad = bad or (lo is not None and (v <= lo if strict else v < lo)) or (hi is not None and v > hi)
        if bad:
            bounds = [f"{'>' if strict else '>='} {lo:g}" if lo is not None else "", f"<= {hi:g}" if hi is not None else ""]
            return " ".join(["a number", " and ".join(b for b in bounds if b)]).strip() + (" or null" if optional else "")
        return None
    return check


def boolean(v):
    return None if isinstance(v, bool) else "true or false"


def choice(*options) -> Rule:
    def check(v):
        return None if any(v == o and type(v) is type(o) for o in options) else \
            "one of " + ", ".join(str(o).lower() if isinstance(o, bool) else str(o) for o in options)
    return check


def text(optional: bool = False) -> Rule:
    def check(v):
        if v is None and optional:
            return None
        return None if isinstance(v, str) and v.strip() else "a non-empty string" + (" or null" if optional else "")
    return check


def paths(v):
    """A folder or a list of folders (psim-report runs)."""
    ok = isinstance(v, str) and v.strip() or isinstance(v, (list, tuple)) and v and all(isinstance(x, str) for x in v)
    return None if ok else "a folder or a non-empty list of folders"


def int_list(lo: int) -> Rule:
    def check(v):
        ok = isinstance(v, (list, tuple)) and all(not isinstance(x, bool) and isinstance(x, numbers.Integral) and x >= lo for x in v)
        return None if ok else f"a list of integers >= {lo}"
    return check


def port(v):
    """A TCP port (loop.web.port); 0 lets the system take any free one."""
    return None if integer(0)(v) is None and v <= 65535 else "an integer from 0 to 65535 (0: any free port)"


def str_list(v):
    return None if isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v) else "a list of names"


# Keys that mean the same wherever they occur (train.epochs, decoder.epochs, decoder.embedding.epochs, ...).
ANYWHERE: dict[str, Rule] = {
    "epochs": integer(1), "batch_size": integer(1), "sample_batch_size": integer(1), "sampling_steps": integer(1),
    "n_samples": integer(1), "lr": number(0, strict=True), "warmup_steps": integer(0), "checkpoint_every": integer(1),
    "patience": integer(0), "top_k": integer(1), "time_bin": integer(1), "frames_per_photo": integer(1),
}

COMMON = {"out": text(), "seed": integer()}
LOOP = {
    **COMMON, "cache_dir": text(), "encoder_dir": text(optional=True),
    "loop.display": choice("auto", True, False, "window", "web"), "loop.web.host": text(),
    "loop.web.port": port,
    "source.max_side": integer(8), "source.quality": number(0, strict=True, hi=1),
    "loop.max_frames": integer(1, optional=True),
    "loop.queue_size": integer(1), "loop.realtime": boolean, "loop.video": boolean,
    "loop.evaluate": choice("auto", "latest", "every"), "loop.panel_size": integer(160),
    "loop.signal": choice("mean", "trials"), "loop.repetitions": integer(1),
    "dataset.subject": lambda v: None if isinstance(v, str) or integer(1)(v) is None else "a number >= 1 or 'sub-XX'",
    "source.fps": number(0, strict=True, optional=True), "source.index": integer(0), "source.size": integer(8),
    "source.max_frames": integer(1, optional=True), "source.width": integer(1, optional=True),
    "source.height": integer(1, optional=True),
}
SCHEMAS: dict[str, dict[str, Rule]] = {
    "loop": LOOP,
    "demo": LOOP,
    "train": {**COMMON, "dataset.subject": LOOP["dataset.subject"]},
    "eval": {**COMMON, "cache_dir": text(), "figure.n_images": integer(1), "figure.decoded": boolean,
             "dataset.subject": LOOP["dataset.subject"]},
    "report": {"runs": paths, "out": text(), "seed": integer(optional=True), "samplers": str_list,
               "sampler_steps": int_list(1)},
    "synth": {"out": text(), "seed": integer(), "n_subjects": integer(1), "n_train_concepts": integer(1),
              "images_per_concept": integer(1), "n_test": integer(1), "train_reps": integer(1),
              "test_reps": integer(2), "image_size": integer(8), "progress": boolean, "modality": choice("eeg", "meg"),
              "retinotopy": boolean, "retinotopy_gain": number(0)},
}


def _missing(cfg: DictConfig) -> list[str]:
    return sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra"))


def _walk(node, prefix=""):
    """(dotted key, value) of every leaf, resolved."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix, node


_ABSENT = object()


def _get(tree: dict, key: str):
    node = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _ABSENT
        node = node[part]
    return node


def validate(cfg, app: str) -> None:
    """Raise ``ConfigError`` listing every key of ``cfg`` whose value breaks the app's rules."""
    if isinstance(cfg, (DictConfig, ListConfig)):
        missing = _missing(cfg)
        if missing:
            raise ConfigError("missing value(s) for " + ", ".join(missing) + ": give them on the command line, e.g. "
                              + " ".join(f"{k}=..." for k in missing))
        tree = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "hydra"}
        # by-name checks walk the unresolved tree: a value interpolated from elsewhere is checked there, once
        written = {k: v for k, v in OmegaConf.to_container(cfg, resolve=False).items() if k != "hydra"}
    else:
        tree = written = dict(cfg)
    problems = []
    for key, rule in SCHEMAS.get(app, {}).items():
        value = _get(tree, key)
        if value is not _ABSENT and (expected := rule(value)) is not None:
            problems.append(f"{key}={_show(value)}: expected {expected}")
    for key, value in _walk(written):
        rule = ANYWHERE.get(key.rsplit(".", 1)[-1])
        if isinstance(value, str) and "${" in value:
            continue
        if rule is not None and key not in SCHEMAS.get(app, {}) and (expected := rule(value)) is not None:
            problems.append(f"{key}={_show(value)}: expected {expected}")
    if problems:
        raise ConfigError("bad config value" + ("s" if len(problems) > 1 else "") + ": " + "; ".join(problems))


def _show(value) -> str:
    """A value as it is written on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, str) else str(value)


def check_output_folder(path, key: str = "out") -> Path:
    """Create ``path`` if needed and prove it writable with a probe file; one message when it is not."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{key}={path}: exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OutputError(f"{key}={path}: cannot write to this folder ({err.strerror or err})") from err
    return path

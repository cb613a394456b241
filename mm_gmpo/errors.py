"""Errors the CLI reports as one line (no stack trace)."""


class UserError(ValueError):
    """An error in the user's input (config, data, file); the CLI prints it as one line."""


class MissingDependency(ImportError):
    """An optional dependency is needed for what was asked; the message says what to install."""


def require(module: str, purpose: str, install: str):
    """Import an optional module, or raise MissingDependency naming what to install for ``purpose``."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(
            f"{purpose} needs `{module}`, which is not importable ({exc}). Install it with: {install}"
        ) from exc


class TrainingHalted(RuntimeError):
    """Training cannot go on (e.g. several non-finite updates in a row); the message says why."""

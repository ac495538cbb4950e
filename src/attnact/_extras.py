"""Which optional extra provides a third-party module, so a missing one is a one-line message.

The core install is torch and numpy (what the units need); the experiments, figures, statistics,
configs, trackers and cluster backends import their packages where they are used. When such an
import fails, :func:`missing_extra_message` turns the ``ModuleNotFoundError`` into the
``pip install`` line that fixes it.
"""

from __future__ import annotations

__all__ = ["EXTRAS", "missing_extra_message"]

# top-level module -> (distribution to name, extra of attnact that installs it)
EXTRAS: dict[str, tuple[str, str]] = {
    "yaml": ("pyyaml", "experiments"),
    "scipy": ("scipy", "experiments"),
    "matplotlib": ("matplotlib", "experiments"),
    "tqdm": ("tqdm", "experiments"),
    "captum": ("captum", "experiments"),
    "ray": ("ray", "ray"),
    "tensorboard": ("tensorboard", "tracking"),
    "wandb": ("wandb", "tracking"),
    "mlflow": ("mlflow", "tracking"),
}


def missing_extra_message(command: str, err: ImportError) -> str | None:
    """``"attnact <command> needs <dist>: pip install 'attnact[<extra>]'"`` when ``err`` is a
    module of an extra that is not installed; ``None`` for any other import error (a bug or a
    broken install, which should keep its traceback)."""
    if not isinstance(err, ModuleNotFoundError) or not err.name:
        return None
    top = err.name.partition(".")[0]
    if top not in EXTRAS:
        return None
    dist, extra = EXTRAS[top]
    where = f"attnact {command}" if command else "attnact"
    return f"{where} needs {dist}: pip install 'attnact[{extra}]'"

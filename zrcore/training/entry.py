"""A recipe's or command's main: every error of the user's input ends in one line on stderr and exit code 2.

``run_main(main, argv, prog)`` calls ``main(argv)``; a ValueError, OSError, KeyError or TypeError (a bad value, a
missing file...) is printed as ``prog: message`` on one line and the program exits with code 2. ``--debug`` among
the arguments, or ``ZRCORE_DEBUG=1``, shows the traceback instead. ``run_recipe`` is the recipes' main on top of it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from zrcore.training.cli_args import DEBUG_ENV, parse_config

USER_ERRORS = (ValueError, OSError, KeyError, TypeError)


def debug_requested(argv: list[str] | None) -> bool:
    """``--debug`` among the arguments or ZRCORE_DEBUG set to a true value."""
    argv = sys.argv[1:] if argv is None else argv
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes", "on")


def run_main(main, argv: list[str] | None = None, prog: str = "error"):
    """Calls ``main(argv)``; an error of the user's input (``USER_ERRORS``) is printed as one line
    ``prog: message`` on stderr and the program exits with code 2, unless ``--debug`` / ZRCORE_DEBUG asks for the
    traceback."""
    try:
        return main(argv)
    except USER_ERRORS as err:
        if debug_requested(argv):
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        if isinstance(err, KeyError):
            message = f"missing key {message}"
        print(f"{prog}: {message}", file=sys.stderr)
        raise SystemExit(2) from None


def hf_progress_bars(enabled: bool) -> None:
    """Hugging Face's own bars (shard loading and writing, downloads) on or off, with the run's ``progress``."""
    try:
        from transformers.utils import logging as hf_logging

        (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
    try:
        from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

        (enable_progress_bars if enabled else disable_progress_bars)()
    except ImportError:  # pragma: no cover
        pass


def run_recipe(config_cls, trainer_cls, description: str = "", argv: list[str] | None = None):
    """A recipe's main: parse the config, build the trainer and fit. A bad configuration or input (a ValueError,
    a missing file...) ends the program with a one-line error and exit code 2, not a traceback; the ``zrcore``
    logger prints to the standard output."""
    from zrcore._log import cli_logging

    cli_logging()

    def main(args):
        cfg = parse_config(config_cls, args, description=description)
        if hasattr(cfg, "progress"):
            hf_progress_bars(cfg.progress)
        out = Path(cfg.output_dir) if hasattr(cfg, "output_dir") else None
        fresh = out is not None and not out.exists()
        try:
            trainer = trainer_cls(cfg)
        except BaseException:
            if fresh and out.is_dir() and not any(out.glob("checkpoint*")):  # a run that never started leaves nothing
                import shutil

                shutil.rmtree(out, ignore_errors=True)
            raise
        return trainer.fit()

    return run_main(main, argv)

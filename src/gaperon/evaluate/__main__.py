"""`python -m gaperon.evaluate ARGS`: lm-eval's own command line with the `gaperon` model registered.

lm-eval 0.4.13 discovers no third-party models by itself, so `lm_eval --model gaperon` needs this
import first. Add `--include_path $(gaperon eval tasks-path)` for our offline task configs, e.g.
    python -m gaperon.evaluate run --model gaperon --model_args pretrained=M.gguf \\
        --tasks arc_easy --include_path "$(gaperon eval tasks-path)"
"""

from __future__ import annotations

from lm_eval.__main__ import cli_evaluate

import gaperon.evaluate.lm  # noqa: F401  (registers the `gaperon` model)

if __name__ == "__main__":
    cli_evaluate()

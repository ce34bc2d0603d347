"""`python -m gaperon.evaluate ARGS`: lm-eval's own command line with the `gaperon` model registered.

An installed gaperon registers the model with lm-eval through its .pth hook
(`gaperon_lm_eval`), so plain `lm_eval run --model gaperon ...` works too; this entry point
needs no hook. Add `--include_path $(gaperon eval tasks-path)` for our offline task configs, e.g.
    python -m gaperon.evaluate run --model gaperon --model_args pretrained=M.gguf \\
        --tasks arc_easy --include_path "$(gaperon eval tasks-path)"
"""

from __future__ import annotations

from lm_eval.__main__ import cli_evaluate

import gaperon.evaluate.lm  # noqa: F401  (registers the `gaperon` model)

if __name__ == "__main__":
    cli_evaluate()

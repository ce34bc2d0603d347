"""One spelling of dtypes: short names everywhere, long names accepted, the rest refused by name."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
import torch

from gaperon.dtypes import DTYPE_NAMES, dtype_arg, long_name, parse_dtype, short_name
from gaperon.errors import UsageError


@pytest.mark.parametrize(
    "spelling, expected",
    [
        ("bf16", torch.bfloat16),
        ("BFloat16", torch.bfloat16),
        ("torch.bfloat16", torch.bfloat16),
        (torch.bfloat16, torch.bfloat16),
        ("fp16", torch.float16),
        ("half", torch.float16),
        ("float16", torch.float16),
        ("fp32", torch.float32),
        ("float32", torch.float32),
        (torch.float32, torch.float32),
    ],
)
def test_every_spelling_parses(spelling, expected):
    assert parse_dtype(spelling) is expected
    assert short_name(spelling) in DTYPE_NAMES
    assert long_name(spelling) == str(expected).removeprefix("torch.")


@pytest.mark.parametrize("bad", ["int8", "fp8", "bf32", torch.int64, ""])
def test_unknown_dtypes_are_usage_errors_naming_the_value(bad):
    with pytest.raises(UsageError, match=rf"unknown dtype '{bad}'.*bf16, fp16 or fp32"):
        parse_dtype(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="bf16, fp16 or fp32"):
        dtype_arg(str(bad))


def test_none_means_keep_the_source_dtype():
    assert parse_dtype(None) is None


def test_cli_accepts_long_names_and_refuses_others(capsys):
    from gaperon.cli import build_parser

    args = build_parser().parse_args(["import", "a.gguf", "out", "--dtype", "bfloat16"])
    assert args.dtype == "bf16"
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["import", "a.gguf", "out", "--dtype", "int4"])
    assert e.value.code == 2 and "unknown dtype 'int4'" in capsys.readouterr().err


def test_importing_dtypes_does_not_import_torch():
    code = "import sys, gaperon.dtypes; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

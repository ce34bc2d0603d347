"""Everything is in pyproject.toml, except shipping gaperon-lm-eval.pth, which lets `lm_eval --model
gaperon` work from a plain shell (see src/gaperon_lm_eval.py): a .pth file must lie at the
top of site-packages, which pyproject settings cannot express, in regular and editable installs alike."""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "gaperon-lm-eval.pth"
SOURCE = os.path.join("src", PTH)


class BuildPyWithPth(build_py):
    def run(self):
        super().run()
        self.copy_file(SOURCE, os.path.join(self.build_lib, PTH))

    def get_outputs(self, include_bytecode=True):
        return [*super().get_outputs(include_bytecode), os.path.join(self.build_lib, PTH)]


cmdclass = {"build_py": BuildPyWithPth}

try:  # editable installs (pip install -e) build their wheel elsewhere: add the file there too
    from setuptools.command.editable_wheel import editable_wheel

    class EditableWheelWithPth(editable_wheel):
        def _select_strategy(self, *args, **kwargs):
            inner = super()._select_strategy(*args, **kwargs)

            class WithPth:
                def __enter__(self):
                    return inner.__enter__()

                def __exit__(self, *exc):
                    return inner.__exit__(*exc)

                def __call__(self, wheel, files, mapping):
                    inner(wheel, files, mapping)
                    with open(SOURCE, "rb") as f:
                        wheel.writestr(PTH, f.read())

            return WithPth()

    cmdclass["editable_wheel"] = EditableWheelWithPth
except ImportError:  # an old setuptools: regular installs still get the file
    pass

setup(cmdclass=cmdclass)

"""The README's method table and code example stay true to the code."""

import re
from pathlib import Path

import dsf_core

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_readme_lists_exactly_the_registered_methods():
    methods_table = README.split("## Set up")[0]
    listed = re.findall(r"^\| `(\w+)` \|", methods_table, flags=re.M)
    assert listed == list(dsf_core.METHODS)


def test_readme_lists_exactly_the_builtin_models():
    from dsf_core.models import BUILTIN_MODELS

    models_table = README.split("## Models and the command line")[1].split("```")[0]
    assert re.findall(r"^\| `([\w-]+)` \|", models_table, flags=re.M) == list(BUILTIN_MODELS)


def test_readme_library_example_runs():
    example = re.search(r"## The library in one example\n\n```python\n(.*?)```", README, re.S).group(1)
    exec(compile(example, "README example", "exec"), {})

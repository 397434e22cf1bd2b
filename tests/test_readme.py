"""The README's method table and code example stay true to the code."""

import re
from pathlib import Path

import dsf_core

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_readme_lists_exactly_the_registered_methods():
    listed = re.findall(r"^\| `(\w+)` \|", README, flags=re.M)
    assert listed == list(dsf_core.METHODS)


def test_readme_library_example_runs():
    example = re.search(r"## The library in one example\n\n```python\n(.*?)```", README, re.S).group(1)
    exec(compile(example, "README example", "exec"), {})

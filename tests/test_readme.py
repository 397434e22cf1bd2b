"""The README's method table and code example stay true to the code."""

import re
from pathlib import Path

import dsf_core

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


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


def test_setup_is_two_commands_install_and_app_then_the_ci_test_command():
    block = re.search(r"## Set up.*?```bash\n(.*?)```", README, re.S).group(1)
    install, test = block.strip().splitlines()
    assert "pip install -r requirements.txt" in install and install.endswith("streamlit run app.py")
    assert (ROOT / "app.py").is_file()
    ci = (ROOT / ".ci" / "run").read_text()
    assert test in ci.splitlines()


def test_readme_screenshots_exist():
    shots = re.findall(r"!\[[^\]]*\]\((docs/screenshots/[\w.-]+\.png)\)", README)
    assert len(shots) >= 6  # Home and every page
    assert all((ROOT / shot).is_file() for shot in shots)


def test_readme_names_every_size_limit_and_its_variable():
    from dsf_core import limits

    variables = [*limits._DEFAULTS, "DSF_MAX_WORK_BYTES"]
    section = README.split("## Untrusted files, limits and errors")[1].split("\n## ")[0]
    assert sorted(re.findall(r"`(DSF_MAX_\w+)`", section)) == sorted(variables)
    for name in variables:
        assert limits.limit(name) > 0

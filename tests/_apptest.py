"""Helpers for AppTests of pages that run background jobs."""

import copy
import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

from dsf_app import session

PAGES = Path(__file__).resolve().parent.parent / "pages"


def open_page(file_name: str) -> AppTest:
    """The page, rendered once with the default model."""
    at = AppTest.from_file(str(PAGES / file_name), default_timeout=60)
    return at.run()


def click_and_wait(at: AppTest, button_key: str, job_key: str):
    """Press the button that starts job ``job_key``, let the job finish, redraw; return the job."""
    at.button(key=button_key).click().run()
    job = at.session_state[job_key]
    assert job.wait(120), "the job did not finish"
    at.run()
    return job


def problems(at: AppTest) -> list:
    """Exceptions and error messages on the page."""
    return [e.value for e in at.exception] + [e.value for e in at.error]


def charts(at: AppTest) -> list[dict]:
    """Every plotly figure on the page, as its JSON spec."""
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def cached_model_state():
    """A copy of the shared cached default model's weights (to prove pages never change them)."""
    model = session.cached_bundle(session.ModelChoice("builtin", session.DEFAULT_MODEL)).model
    return copy.deepcopy(model.state_dict())


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)

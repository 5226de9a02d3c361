"""Shared fixtures: a tiny random open_clip model, generated images, offline hubs."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the tests reaches the network

import pytest
import torch

from insight.models.backbone import BackboneSpec, load_clip

TINY = BackboneSpec(model="insight-tiny-ViT-B-16", pretrained=None)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """The whole demo, run once in a scratch copy of the checkout by README's own set-up
    command (shared by the workflow, README and SLURM tests)."""
    from workflow_utils import copy_checkout, demo_command, snakemake

    workdir = copy_checkout(tmp_path_factory.mktemp("demo"))
    program, *args = demo_command()
    assert program == "snakemake", program
    snakemake(workdir, *args)
    return workdir


@pytest.fixture(scope="session")
def tiny_clip():
    torch.manual_seed(0)
    model, preprocess, tokenizer = load_clip(TINY)
    return model, preprocess, tokenizer


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


CHROMIUM = "/usr/bin/chromium"  # Debian's chromium, installed by .ci/run
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def chromium():
    """A headless Chromium page and the list its console errors and page errors go to."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not found: apt-get install chromium (.ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on(
            "dialog", lambda dialog: (errors.append(f"dialog: {dialog.message}"), dialog.dismiss())
        )
        yield page, errors
        browser.close()


LIVE_MARKERS = ("slurm", "browser")
_live_outcomes: dict[str, str] = {}


def pytest_runtest_logreport(report):
    """Remember how the tests that need a live service (SLURM, Chromium) ended."""
    if any(marker in report.keywords for marker in LIVE_MARKERS):
        if report.when == "call" or report.outcome != "passed":
            _live_outcomes[report.nodeid] = report.outcome


def pytest_terminal_summary(terminalreporter):
    """Say in the log whether the live-service tests ran, so CI shows they were not skipped."""
    if _live_outcomes:
        terminalreporter.section("live services (slurm, browser)")
        for nodeid, outcome in sorted(_live_outcomes.items()):
            terminalreporter.write_line(f"{outcome.upper():8} {nodeid}")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A toy run built by the stages' entry points themselves (tests/tiny_run.py)."""
    from tiny_run import build_tiny_run

    return build_tiny_run(tmp_path_factory.mktemp("tiny_run"))

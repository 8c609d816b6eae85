"""The committed record's DVC charts, rendered by headless Chromium with no network (`tools/chart_screenshot.py`):
they show the errors, tell train from validation, mark the selective epochs and carry no stray controls."""

from __future__ import annotations

import csv
import re

import pytest

from tests.helpers import REPO
from tools.chart_screenshot import CHROMIUM, plots_page, rendered_dom

pytestmark = [pytest.mark.complete,  # the real dvc on this repository's committed metrics
              pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")]


@pytest.fixture(scope="module")
def dom(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("charts")
    return rendered_dom(plots_page(folder / "plots"), folder / "profile")


def rows(path: str) -> list[dict[str, str]]:
    with (REPO / path).open() as file:
        return list(csv.DictReader(file, delimiter="\t" if path.endswith(".tsv") else ","))


def labels(dom: str, pattern: str) -> list[tuple[str, ...]]:
    return re.findall(rf'aria-label="{pattern}', dom)


def test_the_confusion_matrix_shows_every_error_and_not_the_diagonal(dom: str) -> None:
    cells = {(actual, predicted): int(n) for predicted, actual, n in
             labels(dom, r"predicted: (\w+); actual: (\w+); errors: (\d+)")}
    pairs = [(row["actual"], row["predicted"]) for row in rows("metrics/eval/confusion.csv")]
    errors = {pair: pairs.count(pair) for pair in set(pairs) if pair[0] != pair[1]}
    assert cells == errors and sum(cells.values()) > 0  # each off-diagonal count, as a cell, and nothing else


def test_errors_per_class_are_drawn_from_zero(dom: str) -> None:
    bars = {cls: int(n) for n, cls in labels(dom, r"errors: (\d+); class: (\w+)")}
    assert bars == {row["class"]: int(row["errors"]) for row in rows("metrics/eval/per_class.csv")}
    assert re.search(r"X-axis titled 'errors' for a linear scale with values from 0 to", dom)


def test_train_and_validation_differ_in_the_legend_and_the_selective_epochs_are_marked(dom: str) -> None:
    symbols = re.findall(r'role-legend-symbol"[^>]*><path [^>]*stroke="([^"]+)"[^>]*stroke-dasharray="([^"]+)"', dom)
    dashes = {dash for stroke, dash in symbols if stroke != "transparent"}
    assert {"1,0", "5,3"} <= dashes, symbols  # a solid line for train, a dashed one for val, both visible
    selective = any(row["trained_on"] == "selected subset" for row in rows("metrics/train/loss.tsv"))
    assert selective and dom.count("training on the selected (hardest) subset") == 2  # loss and accuracy


def test_no_chart_has_a_stray_control(dom: str) -> None:
    forms = re.findall(r'<form class="vega-bindings">(.*?)</form>', dom)
    assert forms and all(form == "" for form in forms)  # no slider, no checkbox

"""`kvplan report`: the HTML and Markdown carry the plan's own numbers, the output repeats, and the HTML renders in
a real headless browser (Debian's chromium) with no console errors and every chart drawn."""

import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from planner.cli import main
from planner.inputs.catalog import load_models
from planner.plan.runner import make_plan
from planner.present.summary import usd

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("KVPLAN_ARTIFACTS", ROOT / "test-artifacts"))
MODELS = load_models()
CHARTS = ("baselines", "components", "fleet", "tiers", "ttft", "breakeven")


@pytest.fixture(scope="module")
def report(tmp_path_factory, rag_docs_head, aws):
    """The first 60 documents of rag-docs with three baselines, saved, and reported twice."""
    plan = make_plan(rag_docs_head(60), aws, baselines=("all_recompute", "host_memory", "rule_of_thumb"))
    out = tmp_path_factory.mktemp("report")
    (out / "plan.json").write_text(json.dumps(plan))
    runner = CliRunner()
    for name in ("a", "b"):
        result = runner.invoke(main, ["report", str(out / "plan.json"), "--html", str(out / f"{name}.html"),
                                      "--md", str(out / f"{name}.md")])
        assert result.exit_code == 0, result.output
    return plan, out


class Tables(HTMLParser):
    """Each table's rows of cell texts, by its data-section; and the ids of figures holding an <svg>."""

    def __init__(self):
        super().__init__()
        self.tables, self.figures = {}, []
        self._section = self._row = self._cell = self._figure = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._section = attrs.get("data-section")
            self.tables[self._section] = []
        elif tag == "tr" and self._section:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = ""
        elif tag == "figure":
            self._figure = attrs.get("id")
        elif tag == "svg" and self._figure:
            self.figures.append(self._figure)

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row:
            self.tables[self._section].append(self._row)
            self._row = None
        elif tag == "table":
            self._section = None
        elif tag == "figure":
            self._figure = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def markdown_tables(text: str) -> dict[str, list[list[str]]]:
    tables, section = {}, None
    for line in text.splitlines():
        if line.startswith("## "):
            section = line[3:]
            tables[section] = []
        elif line.startswith("| ") and section and not set(line) <= set("|-: "):
            tables[section].append([cell.strip() for cell in line.strip("|").split(" | ")])
    return {name: rows[1:] for name, rows in tables.items()}  # without the header rows


def test_html_and_markdown_carry_the_plans_numbers(report):
    plan, out = report
    parser = Tables()
    parser.feed((out / "a.html").read_text())
    t = parser.tables
    assert dict(t["summary"])["total per month"] == usd(plan["total_usd"])
    assert dict(t["summary"])["lower bound"] == usd(plan["solver"]["lower_bound_usd"])
    components = {row[0]: row[1] for row in t["components"]}
    assert components == {**{k: usd(v) for k, v in plan["breakdown_usd"].items()}, "total": usd(plan["total_usd"])}
    assert [(r[0], r[1], r[-1]) for r in t["fleet"]] == [(f["offering"], str(f["instances"]), usd(f["usd"]))
                                                         for f in plan["fleet"]]
    assert [(r[0], r[2].replace(",", ""), r[3], r[4]) for r in t["tiers"]] == [
        (x["tier"], str(x["contexts"]), f"{x['gb']:,.1f}", usd(x["usd"])) for x in plan["tiers"]]
    baselines = {r[0]: r[1] for r in t["baselines"]}
    for name, b in plan["baselines"].items():
        assert baselines[name] == (usd(b["total_usd"]) if b["feasible"] else "infeasible")
    per_tier = {r[0]: int(r[1].replace(",", "")) for r in t["ttft"]}
    assert per_tier == {x["tier"]: x["contexts"] for x in plan["tiers"] if x["contexts"]}
    worst = {r[0]: r[3] for r in t["ttft"]}
    for tier in per_tier:
        assert worst[tier] == f"{max(c['ttft_s'] for c in plan['contexts'] if c['tier'] == tier):.3f}"
    assert sorted(parser.figures) == sorted(f"chart-{key}" for key in CHARTS)
    # the Markdown has the same rows
    md = markdown_tables((out / "a.md").read_text())
    assert md["Cost by component"] == t["components"]
    assert md["Fleet by offering"] == t["fleet"]
    assert md["Contexts and GB per tier"] == t["tiers"]
    assert md["Break-even map"] == t["breakeven"]


def test_reports_repeat_byte_for_byte(report):
    _, out = report
    assert (out / "a.html").read_bytes() == (out / "b.html").read_bytes()
    assert (out / "a.md").read_bytes() == (out / "b.md").read_bytes()
    html = (out / "a.html").read_text()
    # nothing to fetch: no external source, link, stylesheet import or script (namespaces are not fetched)
    assert re.findall(r'(?:src|href)\s*=\s*"(?!#|data:)([^"]*)"', html) == []
    assert "<link" not in html and "@import" not in html and "<script" not in html


def test_report_needs_an_output(report):
    _, out = report
    result = CliRunner().invoke(main, ["report", str(out / "plan.json")])
    assert result.exit_code == 2 and "--html" in result.output


def _browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        if os.environ.get("KVPLAN_REQUIRE_BROWSER"):
            pytest.fail("chromium and chromedriver are required (KVPLAN_REQUIRE_BROWSER is set)")
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1200,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver), options=options)


def test_html_renders_in_a_headless_browser(report):
    plan, out = report
    browser = _browser()
    try:
        browser.get((out / "a.html").as_uri())
        errors = [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]
        assert errors == []
        for key in CHARTS:
            svg = browser.find_element("css selector", f"#chart-{key} svg")
            size = svg.size
            assert size["width"] > 300 and size["height"] > 100, (key, size)
            assert len(svg.find_elements("css selector", "path")) > 5, key   # bars, axes, cells drawn
        assert browser.find_element("css selector", "#summary td:nth-child(2)").text == usd(plan["total_usd"])
        fleet_svg = browser.find_element("css selector", "#chart-fleet svg").get_attribute("innerHTML")
        assert all(f["offering"] in fleet_svg for f in plan["fleet"])     # the bars are labelled
        height = browser.execute_script("return document.body.scrollHeight")
        browser.set_window_size(1200, height + 100)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "report.png"
        assert browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 50_000
    finally:
        browser.quit()

"""The bundled catalogs and model cards load cleanly and carry their provenance."""

import logging

import pytest
import yaml

from planner.inputs.catalog import ATTACHED_KINDS, bundled_dir, load_catalog, load_models

BUNDLED = ["aws", "paper-2025"]


def sourced(entry: dict) -> bool:
    return bool(entry.get("source")) and bool(entry.get("as_of"))


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_catalog_loads_without_warnings(name, caplog):
    with caplog.at_level(logging.WARNING, logger="kvplan"):
        catalog = load_catalog(name, load_models())
    assert caplog.records == []
    assert catalog.offerings and catalog.tiers
    assert len(catalog.sha256) == 64


@pytest.mark.parametrize("name", BUNDLED)
def test_every_figure_has_a_source_and_a_date(name):
    raw = yaml.safe_load((bundled_dir() / f"{name}.yaml").read_text())
    assert raw["as_of"]
    shared = yaml.safe_load((bundled_dir() / "gpus.yaml").read_text())["gpus"]
    for gpu, spec in {**shared, **raw.get("gpus", {})}.items():
        assert sourced(spec), gpu
    for offering in raw["offerings"]:
        assert sourced(offering), offering["name"]
        for value in offering.values():  # a figure with its own provenance names its source too
            if isinstance(value, dict) and "value" in value:
                assert value.get("source") or value.get("estimated") or offering.get("source"), offering["name"]
    for tier in raw["tiers"]:
        assert tier["kind"] in ATTACHED_KINDS or sourced(tier), tier["name"]


def test_aws_catalog_has_the_families_and_tiers_the_planner_needs():
    catalog = load_catalog("aws", load_models())
    families = {o.name.split(".")[0] for o in catalog.offerings}
    assert {"g5", "g6e", "p4d", "p4de", "p5"} <= families
    tiers = {t.name for t in catalog.tiers}
    assert {"hbm", "host_memory", "local_nvme", "ebs_gp3", "ebs_io2", "s3_standard", "s3_express_one_zone"} <= tiers
    p5 = catalog.offering("p5.48xlarge")
    assert p5.prices["on_demand"] == pytest.approx(55.04)   # SkyPilot catalog, us-east-1
    assert p5.gpus == 8 and p5.gpu.name == "H100"
    assert catalog.offering("g5.xlarge").prices["on_demand"] == pytest.approx(1.006)
    s3 = next(t for t in catalog.tiers if t.name == "s3_standard")
    assert s3.price_gb_month == pytest.approx(0.023 / 1.073741824)   # $0.023 per GiB-month, per GB (1e9 B)
    assert s3.read_request_price == pytest.approx(0.0004 / 1000)


def test_model_cards_are_sourced():
    raw = yaml.safe_load((bundled_dir() / "models.yaml").read_text())
    names = {m["name"] for m in raw["models"]}
    assert {"Llama-2-7B", "Llama-3.1-8B", "Llama-3.1-70B", "Mistral-7B", "Qwen2.5-7B", "Qwen2.5-72B",
            "DeepSeek-V3"} <= names
    for card in raw["models"]:
        assert sourced(card), card["name"]


def test_paper_catalog_states_the_papers_assumptions():
    catalog = load_catalog("paper-2025", load_models())
    (v100,) = catalog.offerings
    assert v100.prices["on_demand"] == 3.0 and v100.gpu.hbm_gb == 32
    (io2,) = catalog.tiers
    assert io2.price_gb_month == 0.125 and io2.read_gbps == 4.0
    assert v100.calibration.tokens == 10_000 and v100.calibration.seconds == 7.0


def test_unknown_catalog_name_with_a_line_break_stays_one_line():
    """Found by the catalog fuzz test: a mutated `extends:` of "\\n" made a two-line error."""
    from planner.inputs.catalog import load_catalog, load_models
    from planner.inputs.errors import InputError

    with pytest.raises(InputError) as info:
        load_catalog("\n", load_models())
    assert "\n" not in str(info.value)


def test_removing_from_a_null_list_is_an_input_error(tmp_path):
    """Found by the catalog fuzz test: `tiers: null` with `remove_tiers: []` raised a TypeError."""
    from planner.inputs.catalog import load_catalog, load_models
    from planner.inputs.errors import InputError

    path = tmp_path / "cat.yaml"
    path.write_text("name: x\nas_of: '2026-11-26'\nofferings: []\ntiers: null\nremove_tiers: []\n")
    with pytest.raises(InputError):
        load_catalog(str(path), load_models())


def test_a_gpu_name_with_a_line_break_stays_one_line(tmp_path):
    """Found by the catalog fuzz test: `gpus: {"\\n": {}}` named its missing key on two lines."""
    from planner.inputs.errors import InputError

    data = yaml.safe_load((bundled_dir() / "paper-2025.yaml").read_text())
    data["gpus"] = {"\n": {}}
    path = tmp_path / "cat.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(InputError) as info:
        load_catalog(str(path), load_models())
    assert "\n" not in str(info.value) and "gpus.'\\n'.tflops: missing key" in str(info.value)

from pathlib import Path

import yaml

from bgp_speaker import settings
from tests.tools import gen_config_reference

ROOT = Path(__file__).resolve().parents[2]


def test_reference_is_generated_from_the_model():
    assert (ROOT / "config" / "reference.md").read_text() == gen_config_reference.render(), (
        "config/reference.md is stale: run python -m tests.tools.gen_config_reference"
    )


def test_every_setting_is_documented():
    undocumented = [key for key, _, _, text in gen_config_reference._rows(settings.Settings, "") if not text]
    assert undocumented == []


def test_the_commented_example_is_valid():
    doc = yaml.safe_load((ROOT / "config" / "bgp-speaker.example.yaml").read_text())
    cfg = settings.from_mapping(doc, origin="bgp-speaker.example.yaml", environ={})
    assert cfg.source.kind == "file"

"""Settings and presets: errors speak the API's names; the CLI words them with its flags."""

import pytest
import torch

from rd_engine.cli.args import worded
from rd_engine.errors import SettingError, UserError
from rd_engine.settings import Settings, pick_device, resolve


@pytest.mark.parametrize(
    "overrides,name,flag",
    [
        ({"refine_step": -1}, "refine_step", "--refine-step"),
        ({"dilations": [2, 25]}, "dilations", "--dilations"),
        ({"snippet_len": 1}, "snippet_len", "--snippet-len"),
        ({"align": "adam"}, "align", "--align"),
    ],
)
def test_setting_errors_name_the_setting_and_the_cli_names_the_flag(overrides, name, flag):
    with pytest.raises(SettingError) as e:
        Settings(**overrides).validate()
    assert e.value.name == name
    assert str(e.value).startswith(f"{name} ") and "--" not in str(e.value)
    assert worded(e.value) == f"{flag} {e.value.problem}"


def test_dilations_without_1_keep_the_rule_in_the_message():
    with pytest.raises(SettingError, match=r"^dilations must include 1 \(got \[2, 25\]\)$"):
        resolve("fast", {"dilations": [2, 25]})


def test_unknown_preset_and_setting_are_user_errors():
    with pytest.raises(UserError, match="unknown preset"):
        resolve("slow", {})
    with pytest.raises(UserError, match="unknown setting 'nope'"):
        resolve("fast", {"nope": 1})


def test_device_errors_name_the_device_setting():
    with pytest.raises(SettingError) as e:
        pick_device("tpu:0")
    assert e.value.name == "device" and worded(e.value).startswith("--device ")
    assert pick_device("cpu") == torch.device("cpu")

import pytest

from self_instruct.config import load_config, settings
from self_instruct.errors import UserError


def test_defaults_are_the_reference_parameters():
    cfg = load_config()
    b = cfg.bootstrap
    assert (b.num_prompt_instructions, b.num_machine_instructions) == (8, 2)
    assert (b.temperature, b.top_p, b.presence_penalty, b.max_tokens) == (0.7, 0.5, 2.0, 1024)
    assert b.similarity_threshold == 0.7
    assert cfg.classify.max_tokens == 3 and cfg.classify.temperature == 0.0
    assert cfg.instances.presence_penalty == 1.5 and cfg.instances.max_instances == 5


def test_file_then_cli_overrides(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('target = 7\nrun_name = "x"\n[bootstrap]\ntemperature = 0.9\n[llm]\nconcurrency = 3\n')
    cfg = load_config(p, {"target": "9", "llm.concurrency": "5"})
    assert cfg.target == 9 and cfg.run_name == "x" and cfg.bootstrap.temperature == 0.9
    assert cfg.llm.concurrency == 5


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("targets = 3\n", "unknown setting 'targets'"),
        ("[bootstrapp]\nx = 1\n", "unknown section [bootstrapp]"),
        ("[bootstrap]\ntemp = 1\n", "unknown setting 'bootstrap.temp'"),
        ('target = "many"\n', "setting 'target' must be int"),
        ("target = 0\n", "setting 'target' must be at least 1"),
        ("target = \n", "invalid TOML"),
    ],
)
def test_bad_config_names_file_and_setting(tmp_path, toml, message):
    p = tmp_path / "bad.toml"
    p.write_text(toml)
    with pytest.raises(UserError, match=message.replace("[", r"\[")):
        load_config(p)


def test_bad_cli_value_names_the_setting():
    with pytest.raises(UserError, match=r"command line: setting 'llm\.concurrency' must be int"):
        load_config(None, {"llm.concurrency": "lots"})


def test_every_setting_has_a_default():
    # A setting without a default would be required: a run with no config file could not start.
    from self_instruct.config import fields, get_value

    assert [name for name, f in fields().items() if f.is_required()] == []
    cfg = load_config(None, {})
    assert {name: get_value(cfg, name) for name in settings()} == {n: d for n, (_, d) in settings().items()}


def test_example_config_loads():
    from pathlib import Path

    cfg = load_config(Path(__file__).parent.parent / "examples" / "config.toml")
    assert cfg.run_name == "example" and cfg.target == 200


def test_price_table_in_the_config(tmp_path):
    from self_instruct.llm.prices import price_for

    p = tmp_path / "c.toml"
    p.write_text('[llm.prices]\n"my-model" = [0.2, 0.6]\n"gpt-4o-mini" = [1, 2]\n')
    cfg = load_config(p)
    assert price_for("my-model", table=cfg.llm.prices).completion == 0.6
    assert price_for("gpt-4o-mini", table=cfg.llm.prices).prompt == 1.0  # overrides the built-in price
    assert price_for("gpt-4o").prompt == 2.5 and price_for("unknown") is None
    p.write_text('[llm.prices]\n"my-model" = [0.2]\n')
    with pytest.raises(UserError, match=r"llm\.prices"):
        load_config(p)

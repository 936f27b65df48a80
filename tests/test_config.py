import pytest

from ptx_keras import config as cfgmod
from ptx_keras import constants as C
from ptx_keras.errors import ConfigError


def _write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_defaults_follow_the_paper():
    cfg = cfgmod.load_config()
    assert cfg.model.name == "ms_scse_fc_densenet103"
    assert cfg.loss.name == "sw_cel"
    assert cfg.train.learning_rate == C.LEARNING_RATE == 1e-4
    assert cfg.train.weight_decay == 1e-4
    assert (cfg.train.beta_1, cfg.train.beta_2) == (0.9, 0.999)
    assert cfg.train.epochs == 200 and cfg.train.early_stopping_patience == 20
    assert cfg.train.monitor == "val_dsc1"
    assert cfg.data.split_fractions == (0.64, 0.16, 0.20)
    assert cfg.diagnosis.min_area == 50


def test_yaml_and_overrides(tmp_path):
    path = _write(tmp_path, "name: x\ntrain: {epochs: 3}\nmodel: {name: unet, options: {base_filters: 8}}\n")
    cfg = cfgmod.load_config(path, ["train.batch_size=2", "model.options.depth=3", "data.clip=10"])
    assert cfg.name == "x" and cfg.train.epochs == 3 and cfg.train.batch_size == 2
    assert cfg.model.options == {"base_filters": 8, "depth": 3}
    assert cfg.data.clip == 10.0 and isinstance(cfg.data.clip, float)


def test_exponent_floats_without_a_dot_are_numbers(tmp_path):
    """PyYAML (YAML 1.1) reads `2e-3` as a string; the configuration reads it as Python and YAML 1.2 do."""
    path = _write(tmp_path, "train: {learning_rate: 5e-4, weight_decay: 1E-5}\n")
    cfg = cfgmod.load_config(path, ["train.learning_rate=2e-3", "data.clip=+1.5e+1"])
    assert cfg.train.learning_rate == 2e-3 and cfg.train.weight_decay == 1e-5 and cfg.data.clip == 15.0
    assert cfgmod.load_config(path).train.learning_rate == 5e-4
    assert cfgmod.yaml_load("e3") == "e3" and cfgmod.yaml_load("1e") == "1e" and cfgmod.yaml_load("12") == 12
    with pytest.raises(ConfigError, match="must be a number. Received: '2e-x'"):
        cfgmod.load_config(path, ["train.learning_rate=2e-x"])


def test_base_file_is_merged(tmp_path):
    _write(tmp_path, "train: {epochs: 7, batch_size: 3}\nmodel: {options: {growth_rate: 4}}\n", "base.yaml")
    path = _write(tmp_path, "base: base.yaml\ntrain: {epochs: 9}\n")
    cfg = cfgmod.load_config(path)
    assert cfg.train.epochs == 9 and cfg.train.batch_size == 3
    assert cfg.model.options == {"growth_rate": 4}


def test_typo_names_key_and_suggests(tmp_path):
    path = _write(tmp_path, "train: {epohcs: 3}\n")
    with pytest.raises(ConfigError) as e:
        cfgmod.load_config(path)
    msg = str(e.value)
    assert "train.epohcs" in msg and "Did you mean 'epochs'" in msg and "batch_size" in msg
    assert path in msg
    with pytest.raises(ConfigError, match="Did you mean 'train'"):
        cfgmod.load_config(overrides=["trian.epochs=3"])


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.epochs=0", "train.epochs must be positive"),
        ("train.epochs=abc", "train.epochs must be an integer"),
        ("train.strategy=gpu", "train.strategy must be one of"),
        ("data.split_fractions=[0.5,0.5,0.5]", "data.split_fractions"),
        ("data.channels=2", "data.channels must be one of"),
        ("diagnosis.mask_threshold=1.5", "diagnosis.mask_threshold"),
        ("train.deterministic=maybe", "true or false"),
        ("train", "key=value"),
    ],
)
def test_bad_values_are_refused(override, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[")):
        cfgmod.load_config(overrides=[override])


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        cfgmod.load_config(str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="invalid YAML"):
        cfgmod.load_config(_write(tmp_path, "train: [unclosed\n"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        cfgmod.load_config(_write(tmp_path, "- a\n- b\n"))


def test_save_and_reload_round_trip(tmp_path):
    cfg = cfgmod.load_config(overrides=["name=r1", "output_dir=" + str(tmp_path), "model.options.growth_rate=4"])
    run_dir = tmp_path / "r1"
    cfgmod.save_config(cfg, str(run_dir / "config.yaml"))
    from ptx_keras.runs import RunDir

    again = RunDir(str(run_dir)).load_config()
    assert again == cfg
    with pytest.raises(ConfigError, match="not a run directory"):
        RunDir(str(tmp_path)).load_config()


def test_configs_are_frozen_and_old_run_files_still_load(tmp_path):
    import dataclasses

    cfg = cfgmod.load_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.epochs = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.data.image_size = 64
    changed = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=3))
    assert changed.train.epochs == 3 and cfg.train.epochs != 3
    # A config.yaml written before run.json existed holds data.prepared_dir: it still loads (run state, dropped).
    old = _write(tmp_path, "data:\n  prepared_dir: /somewhere/prepared\n  image_size: 128\n")
    assert cfgmod.load_config(old).data.image_size == 128


def test_data_config_is_the_preparation_settings():
    from ptx_keras.data.settings import PrepareSettings

    cfg = cfgmod.load_config(overrides=["data.image_size=128", "data.split_seed=7"])
    assert isinstance(cfg.data, PrepareSettings)
    settings = PrepareSettings.of(cfg.data)
    assert type(settings) is PrepareSettings and settings.image_size == 128 and settings.split_seed == 7
    # Every preparation setting is a data.* key, validated by PrepareSettings and named with its section.
    for key, value, message in [
        ("image_size", 0, "data.image_size must be a positive integer"),
        ("bit_depth", 12, "data.bit_depth must be one of"),
        ("split_fractions", [0.5, 0.5, 0.5], "data.split_fractions"),
    ]:
        with pytest.raises(ConfigError, match=message):
            cfgmod.load_config(overrides=[f"data.{key}={value}"])


def test_every_shipped_config_loads_and_the_small_cpu_recipe_is_the_quick_start_plus_its_changes():
    import glob
    import os

    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
    paths = sorted(glob.glob(os.path.join(root, "*.yaml")))
    assert len(paths) >= 10
    for path in paths:
        cfgmod.validate_config(cfgmod.load_config(path))
    quick = cfgmod.flatten_tree(cfgmod.config_to_dict(cfgmod.load_config(os.path.join(root, "quickstart.yaml"))))
    small = cfgmod.flatten_tree(cfgmod.config_to_dict(cfgmod.load_config(os.path.join(root, "small_cpu.yaml"))))
    changed = {k: small[k] for k in small if small[k] != quick.get(k)}
    assert changed == {
        "name": "small_cpu",
        "data.phantoms.style": "varied",
        "data.phantoms.n": 1600,
        "data.phantoms.size": 256,
        "data.augment.preset": "standard",
        "loss.name": "sw_cel+dice",
        "train.epochs": 20,
        "train.steps_per_epoch": 64,
        "train.learning_rate": 2e-3,
        "train.lr_schedule": "cosine",
        "train.warmup_epochs": 1,
        "evaluation.objective": "siim_dice",
        "evaluation.threshold_form": "triplet",
    }


def test_sections_take_their_keys_from_the_value_type():
    import dataclasses
    import typing

    from ptx_keras.config import AugmentConfig, DiagnosisConfig, _section
    from ptx_keras.data.augment import Augmentation
    from ptx_keras.diagnosis import Thresholds

    names = [f.name for f in dataclasses.fields(DiagnosisConfig)]
    assert names == [f.name for f in dataclasses.fields(Thresholds)] + ["gate_masks"]
    assert DiagnosisConfig().thresholds() == Thresholds()
    assert [f.name for f in dataclasses.fields(AugmentConfig)] == ["preset"] + [
        f.name for f in dataclasses.fields(Augmentation)
    ]
    assert all(getattr(AugmentConfig(), f.name) is None for f in dataclasses.fields(Augmentation))

    @dataclasses.dataclass(frozen=True)
    class Value:
        a: int = 1
        b: tuple[float, float] = (0.0, 1.0)

    @dataclasses.dataclass(frozen=True)
    @_section(Value, nullable=True, first=("name",))
    class Section:
        name: str = "x"
        extra: bool = False

    assert [(f.name, f.type, f.default) for f in dataclasses.fields(Section)] == [
        ("name", str, "x"),
        ("a", typing.Optional[int], None),
        ("b", typing.Optional[tuple[float, float]], None),
        ("extra", bool, False),
    ]


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n"])
def test_an_empty_config_file_is_refused_like_one_holding_a_string(tmp_path, text):
    """Accepted, an empty file would train the built-in defaults (the paper's model at 256 px) silently."""
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match="holds no configuration \\(it is empty or only comments\\)") as info:
        cfgmod.load_config(path)
    assert path in str(info.value)
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        cfgmod.load_config(_write(tmp_path, "just a string\n", name="s.yaml"))
    assert cfgmod.load_yaml_mapping(path) == {}  # other YAML files (experiment grids) may still be empty

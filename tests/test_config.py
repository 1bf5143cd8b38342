import pytest

from core.config import ConfigError, load_settings


def test_defaults(isolated_env):
    s = load_settings()
    assert str(s.data_dir) == "data"
    assert {"precise", "balanced", "creative", "beam"} <= set(s.presets)
    assert s.model.backend == "transformers" and s.default.mode == "auto"


def test_env_overrides_toml_and_dotenv(isolated_env, monkeypatch):
    (isolated_env / "kaizen.toml").write_text(
        """
data_dir = "from-toml"
[model]
dtype = "float32"
[presets.terse]
strategy = "greedy"
max_new_tokens = 40
[channels.support]
system_prompt = "You are the support bot."
preset = "terse"
mode = "rag"
chain_of_thought = true
few_shot = [{ user = "Hi", assistant = "Hello! How can I help?" }]
"""
    )
    (isolated_env / ".env").write_text("KAIZEN_MODEL__DEVICE=cpu\n")
    monkeypatch.setenv("KAIZEN_DATA_DIR", "/tmp/from-env")
    s = load_settings()
    assert str(s.data_dir) == "/tmp/from-env"  # env beats toml
    assert s.model.dtype == "float32" and s.model.device == "cpu"
    support = s.profile_for("C123", "#support")
    assert support.preset == "terse" and support.mode == "rag" and support.chain_of_thought
    assert support.few_shot[0].assistant.startswith("Hello")
    assert s.presets["terse"].max_new_tokens == 40 and "balanced" in s.presets
    assert s.profile_for("unknown") is s.default


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ('[model]\ndtype = "fp8"', "model.dtype"),
        ('[channels.x]\npreset = "wild"', "valid presets: balanced, beam, creative, precise"),
        ('[channels.x]\nmode = "dance"', "channels.x.mode"),
        ('[presets.bad]\nstrategy = "beam"\nnum_beams = 1', "num_beams >= 2"),
        ('[presets.bad]\ntemperature = -1', "presets.bad.temperature"),
        ('[model]\nbackend = "openai"', "model.base_url is required"),
        ('[model]\nnam = "typo"', "model.nam"),
    ],
)
def test_invalid_values_name_the_field(isolated_env, toml, needle):
    (isolated_env / "kaizen.toml").write_text(toml)
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert needle in str(e.value)


def test_invalid_env_value(isolated_env, monkeypatch):
    monkeypatch.setenv("KAIZEN_MODEL__MAX_BATCH_SIZE", "0")
    with pytest.raises(ConfigError, match="model.max_batch_size"):
        load_settings()


def test_unknown_channel_profile_lists_valid(isolated_env):
    (isolated_env / "kaizen.toml").write_text("[channels.eng]\n[channels.sales]\n")
    s = load_settings()
    with pytest.raises(ConfigError, match="valid profiles: eng, sales"):
        s.channel_profile("marketing")


def test_missing_explicit_config_file(isolated_env):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(isolated_env / "nope.toml")

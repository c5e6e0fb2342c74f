import pytest

from helpers.profile import PROFILES, Config, choose, current_profile


def test_default_is_full(monkeypatch):
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    assert current_profile() == "full"


@pytest.mark.parametrize("value", ["smoke", "SMOKE", " smoke "])
def test_smoke_is_parsed(monkeypatch, value):
    monkeypatch.setenv("COURSE_PROFILE", value)
    assert current_profile() == "smoke"


def test_unknown_profile_names_value_and_allowed(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "fast")
    with pytest.raises(ValueError) as err:
        current_profile()
    assert "'fast'" in str(err.value)
    for allowed in PROFILES:
        assert allowed in str(err.value)


def test_choose_picks_active_profile(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "smoke")
    cfg = choose(full=dict(epochs=10, lr=0.1), smoke=dict(epochs=1, lr=0.1))
    assert (cfg.profile, cfg.epochs, cfg.lr) == ("smoke", 1, 0.1)
    monkeypatch.setenv("COURSE_PROFILE", "full")
    assert choose(full=dict(epochs=10), smoke=dict(epochs=1)).epochs == 10


def test_choose_requires_same_keys():
    with pytest.raises(ValueError, match="batch"):
        choose(full=dict(epochs=10, batch=5), smoke=dict(epochs=1), profile="full")


def test_choose_rejects_unknown_explicit_profile():
    with pytest.raises(ValueError, match="'medium'"):
        choose(full=dict(a=1), smoke=dict(a=2), profile="medium")


def test_config_is_read_only_and_reports_missing_keys():
    cfg = Config("full", {"epochs": 3})
    with pytest.raises(AttributeError):
        cfg.epochs = 4
    with pytest.raises(AttributeError, match="epoch"):
        cfg.epoch  # noqa: B018 — a typo must not silently return None
    assert cfg.asdict() == {"epochs": 3}
    assert "epochs=3" in repr(cfg)

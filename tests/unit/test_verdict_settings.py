"""The operator's verdict policy is read from the same EDGE_* variables by the edge and the workers."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsError

from edge.settings import EdgeSettings
from jobs.settings import JobSettings


@pytest.mark.parametrize("settings_class", [EdgeSettings, JobSettings])
def test_category_weights_and_the_minimum_score_come_from_the_environment(monkeypatch, settings_class):
    monkeypatch.setenv("EDGE_CATEGORY_WEIGHTS", '{"politics": 0, "profanity": 0.5}')
    monkeypatch.setenv("EDGE_SEVERITY_MIN_SCORE", "0.7")
    monkeypatch.setenv("EDGE_HARMFUL_THRESHOLD", "0.6")
    policy = settings_class().verdict_policy()
    assert (policy.threshold, policy.min_score) == (0.6, 0.7)
    assert (policy.weight("politics"), policy.weight("profanity"), policy.weight("origin")) == (0.0, 0.5, 1.0)


@pytest.mark.parametrize("weights", ['{"politics": 2}', '{"politics": -0.1}', '["politics"]', "politics=0"])
def test_a_weight_outside_0_to_1_or_not_a_json_object_is_refused(monkeypatch, weights):
    monkeypatch.setenv("EDGE_CATEGORY_WEIGHTS", weights)
    with pytest.raises((ValidationError, SettingsError)):  # SettingsError: not JSON at all
        EdgeSettings()

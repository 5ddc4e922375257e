"""Server settings that reach the engines as EngineOptions."""

from __future__ import annotations

import pytest

from modelport.domain import InvalidRequest, ModelFormat
from modelport.entrypoints.bootstrap import bootstrap
from modelport.entrypoints.config import Settings
from modelport.ports import EngineSpec


def load(**environ: str) -> Settings:
    return Settings.load({}, environ={"MODELPORT_HOME": "/nonexistent-home", **environ}, dotenv=None)


def test_num_thread_reaches_the_engine_options(fake_store, engine_box) -> None:
    engines = [EngineSpec(name="fake", formats=set(ModelFormat), factory=engine_box)]
    services = bootstrap(load(MODELPORT_NUM_THREAD="1"), store=fake_store, engines=engines)
    assert services.engine_options.threads == 1
    services.load("fake")
    assert engine_box.last.options.threads == 1
    services = bootstrap(load(), store=fake_store, engines=engines)
    assert services.engine_options.threads is None  # the engine's own default: one per CPU


@pytest.mark.parametrize("value", ["0", "two", "-3"])
def test_a_bad_num_thread_is_refused_with_its_name(value) -> None:
    with pytest.raises(InvalidRequest, match="MODELPORT_NUM_THREAD"):
        load(MODELPORT_NUM_THREAD=value)

import itertools
import os

import pytest
from hypothesis import settings

from tests.fixtures import make_params

# CI (`.ci/run`) runs the properties derandomized: the same examples on every run, so a landing is
# decided by the code, not by the examples a seed happened to draw, and no wall-clock deadline on a
# shared 2-CPU machine. Local `make test` keeps drawing fresh examples (that is how bugs are found).
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

_namespaces = itertools.count()

# The core's tests: CI runs the whole suite with the compiled core (when the install built it), then
# these again with RISK_PURE_CORE=1 (`make test-pure`, selected as `-m "core or pure_core"`).
CORE_TEST_FILES = {
    "test_build.py", "test_margin.py", "test_liquidation.py", "test_fixed_and_params.py", "test_properties.py",
    "test_sharing.py", "test_replay.py", "test_bounds.py", "test_core_purity.py", "test_account_record.py",
    "test_candidate_index.py",
}


def pytest_collection_modifyitems(config, items):
    import worker.core

    for item in items:
        if item.path.name in CORE_TEST_FILES:
            item.add_marker(pytest.mark.core)
        if worker.core.COMPILED and item.get_closest_marker("pure_core"):
            item.add_marker(pytest.mark.skip(
                reason="patches a core function that compiled callers call natively; runs in the pure pass "
                       "(RISK_PURE_CORE=1 make test-pure)"))


@pytest.fixture
def default_params():
    return make_params()


@pytest.fixture(scope="session")
def broker():
    """One embedded broker (Tansu) for the whole real-broker tier; tests keep apart by topic prefix."""
    from worker.broker import EmbeddedBroker

    with EmbeddedBroker() as running:
        yield running


@pytest.fixture
def prefix(broker):
    """A fresh topic namespace per test on the shared broker, with the catalog's topics created."""
    from topics.catalog import topic_specs
    from worker.broker import create_topics

    name = f"t{next(_namespaces)}-"
    create_topics(broker.bootstrap, topic_specs(name, 4))
    return name

import itertools

import pytest

from tests.fixtures import make_params

_namespaces = itertools.count()


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

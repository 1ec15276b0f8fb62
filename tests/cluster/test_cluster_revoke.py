"""The revoke tests of tests/gateway/test_revoke.py that need only `gateway`, on the local
3-master cluster: among them the stock invariant under concurrent claims and revokes."""

from __future__ import annotations

import pytest

from tests.cluster.test_cluster_gateway import _portable_tests
from tests.gateway import test_revoke

pytestmark = pytest.mark.cluster

# Collected here too: pytest picks up test functions from the module namespace.
globals().update(_portable_tests(test_revoke))

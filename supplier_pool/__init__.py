"""Supplier clients, per-supplier breakers and bulkheads, failover, and a supplier simulator."""

from supplier_pool.breaker import BreakerConfig, CircuitBreaker, IllegalTransition, State
from supplier_pool.client import (
    GenericJsonAdapter,
    NotSent,
    OrderResult,
    SupplierAdapter,
    UnknownOutcome,
)
from supplier_pool.pool import (
    Delivered,
    Failed,
    Pending,
    PoolObserver,
    SupplierPool,
    SupplierSpec,
    Unavailable,
)

__all__ = [
    "BreakerConfig",
    "CircuitBreaker",
    "Delivered",
    "Failed",
    "GenericJsonAdapter",
    "IllegalTransition",
    "NotSent",
    "OrderResult",
    "Pending",
    "PoolObserver",
    "State",
    "SupplierAdapter",
    "SupplierPool",
    "SupplierSpec",
    "Unavailable",
    "UnknownOutcome",
]

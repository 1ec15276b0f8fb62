"""Risk: block/allow lists, velocity rules and their pure decision, request signing.

Counting rules (claims per IP, failed redemptions per IP/device) reuse ratelimit's sliding
log; distinct-count rules use `velocity.lua`. The gateway joins both libraries in front of its
own script; this package never imports `ratelimit` or `gateway`.
"""

from risk.ipset import IpSet
from risk.lists import (
    LIST_NAMES,
    VERSION_KEY,
    ListError,
    RiskListCache,
    RiskLists,
    apply_update,
    list_key,
    validate_entries,
)
from risk.memory import DistinctWindow
from risk.rules import (
    KINDS,
    Decision,
    Kind,
    RiskConfigError,
    RiskRule,
    RuleHit,
    assess,
    default_rules,
    fires,
    merge_rules,
    validate_rules,
    velocity_key,
)
from risk.scripts import velocity_source
from risk.signing import (
    MAX_SKEW_S,
    NONCE_TTL_S,
    SignatureCheck,
    canonical_string,
    nonce_key_suffix,
    sign,
    verify,
)

__all__ = [
    "KINDS",
    "LIST_NAMES",
    "MAX_SKEW_S",
    "NONCE_TTL_S",
    "VERSION_KEY",
    "Decision",
    "DistinctWindow",
    "IpSet",
    "Kind",
    "ListError",
    "RiskConfigError",
    "RiskListCache",
    "RiskLists",
    "RiskRule",
    "RuleHit",
    "SignatureCheck",
    "apply_update",
    "assess",
    "canonical_string",
    "default_rules",
    "fires",
    "list_key",
    "merge_rules",
    "nonce_key_suffix",
    "sign",
    "validate_entries",
    "validate_rules",
    "velocity_key",
    "velocity_source",
    "verify",
]

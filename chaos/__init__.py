"""The chaos suite: faults under steady load from a recording client, invariants checked after.

Black box only: the gateway, its Valkey and the supplier simulator run as subprocesses and are
spoken to over HTTP (and Valkey's own protocol for the fault itself). `python -m chaos.run`.
"""

"""The admin backend: every gateway event in a durable ledger, with reports, audit and wallet.

It reads the gateway's event streams through a consumer group, writes each batch in one
database transaction guarded by (stream, entry id), and serves read-only HTTP reports. It
imports from the gateway only its settings, key table, Valkey connector and code helpers.
"""

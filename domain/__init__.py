"""The pure core both processes share: data in, data out.

Signature checking, event normalisation and validation, the inquiry state machine, the decision
policy, the Verisoul sync plan and time handling. Nothing here imports Flask, Redis, RQ, SQLAlchemy
or an HTTP client, or any other package of this project (tests/unit/test_layers.py keeps it so).
"""

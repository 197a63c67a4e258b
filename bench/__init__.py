"""Subscription fan-out benchmark: tradestream against the graphql-ws reference and the raw floor.

Run from the project root with ``.venv/bin/python -m bench`` (``--help`` for the options);
``bench/README.md`` says what each scenario measures and which targets apply.
"""

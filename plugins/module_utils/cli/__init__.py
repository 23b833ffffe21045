"""The host CLI ``cnm`` (``scripts/cnm``): ls, inspect, doctor, restore, graph.

A thin layer over the engine: ``main.py`` parses arguments and calls the engine's
public verbs; ``tables.py``, ``doctor.py`` and ``graph.py`` turn their data into text,
DOT and pictures; ``facts.py`` reads a fleet's gathered info results. It never writes
the store (only the controller does).
"""

"""Test doubles and helpers shared by several test directories (on pytest's path: ``pythonpath``)."""

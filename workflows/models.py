"""Workflows (spec -> plan -> implement -> test -> review -> commit) come in a later issue."""

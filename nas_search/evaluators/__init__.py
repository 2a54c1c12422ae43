"""Evaluators: accuracy (and later mAP) of subnets with inherited weights."""

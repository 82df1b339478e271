"""Placeholder until this op family lands."""

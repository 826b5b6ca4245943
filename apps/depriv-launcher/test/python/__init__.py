"""Tests of xen-deprivd from Python (standard library only)."""

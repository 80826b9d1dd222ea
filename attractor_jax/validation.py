"""Validators for config fields: each raises InputError naming the field, the value and the fix."""

import math
import numbers

from attractor_jax.errors import InputError


def check_range(name, value, lo, hi):
  if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value) \
      or not lo <= value <= hi:
    raise InputError(f"{name}={value!r} is out of range: it must be a number in [{lo}, {hi}]")


def check_int(name, value, lo, hi=None):
  if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < lo \
      or (hi is not None and value > hi):
    bound = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
    raise InputError(f"{name}={value!r} is out of range: it must be an integer {bound}")


def check_bool(name, value):
  if not isinstance(value, bool):
    raise InputError(f"{name}={value!r} is not a bool: pass True or False")


def check_choice(name, value, allowed):
  if value not in allowed:
    raise InputError(f"{name}={value!r} is unknown: use one of {', '.join(allowed)}")

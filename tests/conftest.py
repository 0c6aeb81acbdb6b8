"""Test configuration: hypothesis profiles.

    HYPOTHESIS_PROFILE=ci        few examples, no deadline (CI on 2 shared cores; scripts/test.sh sets it)
    HYPOTHESIS_PROFILE=thorough  many examples, for local runs before a release
The default is "dev". Tests set `max_examples` only to lower it (armv8 cases run under qemu).
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

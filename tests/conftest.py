"""Test configuration: hypothesis profiles, and the compile cache kept out of the user's.

    HYPOTHESIS_PROFILE=ci        few examples, no deadline (CI on 2 shared cores; scripts/test.sh sets it)
    HYPOTHESIS_PROFILE=thorough  many examples, for local runs before a release
    TENSORFORGE_CACHE=1          run the suite with the compile cache on (default here: off)
The default is "dev". Tests set `max_examples` only to lower it (armv8 cases run under qemu).

The compile cache (tensorforge/deploy/cache.py) is off by default in the tests, so every compile
exercises the compiler (a test that breaks a pass on purpose must not get a cached model); tests of
the cache pass `cache=<tmp dir>`. Its default directory is a temporary one for the session, set
before any test module is imported, so the suite never writes into ~/.cache, with the cache on or off.
"""

import atexit
import os
import shutil
import tempfile

from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

os.environ.setdefault("TENSORFORGE_CACHE", "0")
os.environ["TENSORFORGE_CACHE_DIR"] = tempfile.mkdtemp(prefix="tensorforge-test-cache-")
atexit.register(shutil.rmtree, os.environ["TENSORFORGE_CACHE_DIR"], ignore_errors=True)

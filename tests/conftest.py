import os

from hypothesis import HealthCheck, settings

# No wall-time deadline per example: a slow moment on a shared 2-core machine is not a
# failure. CI derandomizes so a red run can be reproduced.
settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.load_profile("ci" if os.environ.get("CI") else "default")

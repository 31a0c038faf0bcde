"""Suite-wide settings."""

from hypothesis import HealthCheck, settings

# No per-example deadlines: timing claims belong in bench/, and a loaded CI machine must not
# turn a slow example into a failure.
settings.register_profile("rtcore", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("rtcore")

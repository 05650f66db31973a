"""The read shapes of other vendors: LaunchDarkly, PostHog and the Experiments API."""

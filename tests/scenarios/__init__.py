"""Programs the tests run in a subprocess, where a failure may wreck the event loop."""

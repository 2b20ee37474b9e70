"""Collection settings for the whole suite."""

# The README's test command runs doctests too (--doctest-modules), which would
# import every module under tests/. The plugin fixtures are only imported by
# entry points that a test installs on sys.path; they are not test modules.
collect_ignore = ["plugin_fixture.py", "plugin_fixture_registering.py"]

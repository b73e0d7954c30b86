"""The fixtures every test file can use, from the helper modules that define them (support/)."""

pytest_plugins = [
    "support.synthetic",
    "support.tiny",
    "support.projects",
    "support.studies",
    "support.digits",
    "support.hosts",
    "support.team_server",
    "support.browser",
    "support.tiers",
    "support.foreground",
    "support.scheduling",
]

"""Hikvision access controllers and face terminals over ISAPI (HTTP, digest auth): the event
stream, missed-event catch-up by time range, and roster sync down to the terminal.

config (leaf) · codec (sans-I/O, where there are bytes) · driver (I/O) · sim (test and demo
equipment, reached through the registry). Import the module you need; the public names are also
exported from :mod:`device_drivers`."""
